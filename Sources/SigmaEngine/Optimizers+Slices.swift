import Glibc

extension Adam {
    /// The step count, as a checkpoint holds it (`state`'s `step`): the steps taken so far.
    public var stepCount: Int {
        get { steps }
        set { steps = newValue }
    }

    /// The update of one element range of the parameters laid end to end — a collective step's slice, owned by one
    /// worker: its weights `w`, its first and second moments `m`, `v` (zeros before the first step), the gradient a
    /// sum tree over `count` elements divided by `divisor`, `step` the 1-based step number (bias correction); the
    /// updated weights go to `out`, the moments are updated in place. Element by element the same operations as
    /// `step(_:)` after the driver set each gradient to the sum ÷ divisor, so the same bits.
    public func sliceStep(weights w: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int,
                          sumOf tree: SumTree, divisor: Float, step: Int, writingTo out: UnsafeMutablePointer<Float>) {
        precondition(tree.vectors.allSatisfy { $0.count == count * 4 }, "gradient slice of \(tree.vectors.map { $0.count / 4 }) values for \(count)")
        guard count > 0 else { return }
        let c1 = 1 - powf(beta1, Float(step)), c2 = 1 - powf(beta2, Float(step))
        let lr = learningRate, b1 = beta1, b2 = beta2, eps = epsilon, wd = weightDecay, dec = decoupled
        let chunk = FusedSGDPass.chunk
        withUnsafeTemporaryAllocation(of: Float.self, capacity: chunk * (1 + tree.scratchDepth)) { buffer in
            let sum = buffer.baseAddress!
            var lo = 0
            while lo < count {
                let hi = min(lo + chunk, count)
                tree.evaluate(lo..<hi, into: sum, scratch: sum + chunk, stride: chunk)
                for i in lo..<hi {
                    let g = sum[i - lo] / divisor
                    var wi = w[i]
                    if dec { wi -= lr * wd * wi }
                    let gi = dec ? g : g + wd * wi
                    m[i] = b1 * m[i] + (1 - b1) * gi
                    v[i] = b2 * v[i] + (1 - b2) * gi * gi
                    out[i] = wi - lr * (m[i] / c1) / ((v[i] / c2).squareRoot() + eps)
                }
                lo = hi
            }
        }
    }

    /// The first and second moments of `parameters`, each laid end to end (zeros where a parameter has none yet):
    /// `m` then `v`.
    public func momentVectors(_ parameters: [Parameter]) -> [Float] {
        let total = parameters.reduce(0) { $0 + $1.value.count }
        var out = [Float](repeating: 0, count: 2 * total)
        var o = 0
        for p in parameters {
            if let (m, v) = moments[ObjectIdentifier(p)] {
                m.withData { src in for i in 0..<src.count { out[o + i] = src[i] } }
                v.withData { src in for i in 0..<src.count { out[total + o + i] = src[i] } }
            }
            o += p.value.count
        }
        return out
    }

    /// Sets every parameter's moments from `values` (as `momentVectors` lays them out).
    public func setMoments(_ parameters: [Parameter], from values: UnsafeBufferPointer<Float>) {
        let total = parameters.reduce(0) { $0 + $1.value.count }
        precondition(values.count == 2 * total, "\(values.count) moment values for \(total) parameters")
        var o = 0
        for p in parameters {
            let n = p.value.count
            let m = Tensor(shape: p.value.shape) { d in for i in 0..<n { d[i] = values[o + i] } }
            let v = Tensor(shape: p.value.shape) { d in for i in 0..<n { d[i] = values[total + o + i] } }
            moments[ObjectIdentifier(p)] = (m, v)
            o += n
        }
    }
}

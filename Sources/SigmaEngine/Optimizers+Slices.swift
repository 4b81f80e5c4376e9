import Glibc

extension Adam {
    /// The step count, as a checkpoint holds it (`state`'s `step`): the steps taken so far.
    public var stepCount: Int {
        get { steps }
        set { steps = newValue }
    }

    /// The same update as setting each parameter's gradient (end to end) to `sum / divisor` and calling `step` — the
    /// same operations element by element, so the same bits — in one pass over memory split across `threads`
    /// threads: the tree's additions made chunk by chunk inside it, the updated weights written to `out` only (the
    /// parameters keep their old values; the caller points them at `out`), the moments updated in place. (The
    /// coordinator's Adam step had been three passes — the tree's sum, the gradients divided into tensors, the update —
    /// and a copy of the weights into the next PARAMS.)
    public func step(_ parameters: [Parameter], sumOf tree: SumTree, divisor: Float, writingTo out: UnsafeMutableRawBufferPointer,
                     threads: Int = 1) {
        let total = parameters.reduce(0) { $0 + $1.value.count }
        precondition(tree.vectors.allSatisfy { $0.count == total * 4 } && out.count == total * 4,
                     "gradient of \(tree.vectors.map { $0.count / 4 }) values for \(total) parameters")
        steps += 1
        var slices: [FusedAdamPass.Slice] = []
        var offset = 0
        let o = out.baseAddress!.assumingMemoryBound(to: Float.self)
        for p in parameters {
            let key = ObjectIdentifier(p)
            var (m, v) = moments.removeValue(forKey: key) ?? (Tensor(zeros: p.value.shape), Tensor(zeros: p.value.shape))
            // (made unique here, on this thread; the pointers stay valid: `moments` holds the tensors until this returns)
            let pm = m.withMutableData { $0.baseAddress! }, pv = v.withMutableData { $0.baseAddress! }
            moments[key] = (m, v)
            slices.append(.init(w: p.value.withData { $0.baseAddress! }, m: pm, v: pv, out: o + offset, start: offset, count: p.value.count))
            offset += p.value.count
        }
        pass(slices, tree: tree, divisor: divisor, step: steps).run(total: total, threads: threads)
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
        pass([.init(w: w, m: m, v: v, out: out, start: 0, count: count)], tree: tree, divisor: divisor, step: step).run(total: count, threads: 1)
    }

    private func pass(_ slices: [FusedAdamPass.Slice], tree: SumTree, divisor: Float, step: Int) -> FusedAdamPass {
        FusedAdamPass(slices: slices, tree: tree, lr: learningRate, b1: beta1, b2: beta2, eps: epsilon, wd: weightDecay, decoupled: decoupled,
                      c1: 1 - powf(beta1, Float(step)), c2: 1 - powf(beta2, Float(step)), divisor: divisor)
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

/// Adam's update over parameters laid end to end, the gradient a sum tree evaluated chunk by chunk: per element
/// g = sum ÷ divisor, then exactly `Adam.step`'s operations.
struct FusedAdamPass: @unchecked Sendable {
    struct Slice {
        let w: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>
        let start: Int, count: Int
    }
    let slices: [Slice]
    let tree: SumTree
    let lr: Float, b1: Float, b2: Float, eps: Float, wd: Float, decoupled: Bool
    /// The bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ.
    let c1: Float, c2: Float
    let divisor: Float

    func run(total: Int, threads: Int) { splitOverThreads(total: total, threads: threads) { run($0) } }

    func run(_ r: Range<Int>) {
        tree.forEachChunk(r) { chunk, sum in
            for s in slices where s.start < chunk.upperBound && s.start + s.count > chunk.lowerBound {
                for i in max(chunk.lowerBound, s.start)..<min(chunk.upperBound, s.start + s.count) {
                    update(s, i - s.start, g: sum[i - chunk.lowerBound] / divisor)
                }
            }
        }
    }

    /// Element `k` of slice `s` with gradient `g`: `Adam.step`'s operations in its order.
    @inline(__always) private func update(_ s: Slice, _ k: Int, g: Float) {
        var w = s.w[k]
        if decoupled { w -= lr * wd * w }
        let gi = decoupled ? g : g + wd * w
        s.m[k] = b1 * s.m[k] + (1 - b1) * gi
        s.v[k] = b2 * s.v[k] + (1 - b2) * gi * gi
        s.out[k] = w - lr * (s.m[k] / c1) / ((s.v[k] / c2).squareRoot() + eps)
    }
}

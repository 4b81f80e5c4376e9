import Dispatch
import Glibc

/// Updates parameters from their gradients.
public protocol Optimizer: AnyObject {
    var learningRate: Float { get set }
    func step(_ parameters: [Parameter])
}

extension Optimizer {
    public func zeroGrad(_ parameters: [Parameter]) { for p in parameters { p.zeroGrad() } }
}

/// SGD with momentum and L2 weight decay, as PyTorch's `torch.optim.SGD` (dampening 0, not Nesterov):
/// g ← g + λ·w; v ← μ·v + g; w ← w − lr·v.
public final class SGD: Optimizer {
    public var learningRate: Float
    public let momentum: Float
    public let weightDecay: Float
    /// Threads `step` splits its pass over; nil: OpenBLAS's thread count (as the GEMMs before it used).
    public var threads: Int? = nil
    var velocity: [ObjectIdentifier: Tensor] = [:]

    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter]) {
        // The same pass as the fused step below, reading each gradient tensor (÷ 1 is exact), writing nothing else;
        // split across OpenBLAS's thread count like the GEMMs before it (the pass is memory-bound: on the 2-vCPU VM
        // two threads take 0.6 of one thread's time for the MLP bench's 1.9 M parameters).
        let withGrad = parameters.filter { $0.grad != nil }
        let grads = withGrad.map { $0.grad! }   // (held until the pass is done)
        var offset = 0
        let slices = withGrad.indices.map { k in
            // (the weights updated in place: read and written at the same address)
            let w = withGrad[k].value.withMutableData { $0.baseAddress! }
            defer { offset += withGrad[k].value.count }
            return slice(withGrad[k], weights: w, gradient: grads[k].withData { UnsafeRawPointer($0.baseAddress!) }, nil,
                         out: UnsafeMutableRawPointer(w), start: offset)
        }
        withExtendedLifetime(grads) {
            FusedSGDPass(slices: slices, lr: learningRate, mu: momentum, wd: weightDecay, divisor: 1).run(total: offset, threads: threads ?? BLASInfo.threads)
        }
    }

    /// One parameter's part of a pass: its weights, its velocity (made unique here, on this thread), its gradient
    /// operands, where its updated weights go, and where it starts in the whole vector.
    private func slice(_ p: Parameter, weights: UnsafePointer<Float>, gradient a: UnsafeRawPointer, _ b: UnsafeRawPointer?,
                       out: UnsafeMutableRawPointer, start: Int) -> FusedSGDPass.Slice {
        let key = ObjectIdentifier(p)
        let first = velocity[key] == nil
        var v = velocity[key] ?? Tensor(zeros: p.value.shape)
        velocity[key] = nil
        let vp = v.withMutableData { $0.baseAddress! }
        velocity[key] = v
        return FusedSGDPass.Slice(w: weights, v: vp, a: a, b: b, out: out, start: start, count: p.value.count, first: first)
    }

    /// The same update as setting the parameters' gradients (end to end) to `(a + b) / divisor` — element by
    /// element in float32; `a / divisor` when `b` is nil — and calling `step`: the same operations in the same
    /// order, so the same bits. Done in one pass over memory, split across `threads` threads: the gradient is
    /// read where it is (`a`, `b`: little-endian float32 bytes, possibly unaligned), and the updated weights are
    /// written to `out` only (float32, end to end) — the parameters keep their old values, read-only here; the
    /// caller points them at `out` (e.g. `Tensor(borrowing:)` over the PARAMS frame) before the next step. No
    /// gradients are stored on the parameters. (The coordinator's training step: the reduce's last addition, the
    /// optimizer and the next PARAMS payload were four passes over every parameter, and the weights were kept
    /// twice.)
    public func step(_ parameters: [Parameter], sumOf a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer?, divisor: Float,
                     writingTo out: UnsafeMutableRawBufferPointer, threads: Int = 1) {
        let total = parameters.reduce(0) { $0 + $1.value.count }
        precondition(a.count == total * 4 && (b?.count ?? a.count) == a.count && out.count == total * 4,
                     "gradient of \(a.count / 4) values for \(total) parameters")
        var slices: [FusedSGDPass.Slice] = []
        var offset = 0
        for p in parameters {
            slices.append(slice(p, weights: p.value.withData { $0.baseAddress! }, gradient: a.baseAddress! + offset * 4,
                                b.map { $0.baseAddress! + offset * 4 }, out: out.baseAddress! + offset * 4, start: offset))
            offset += p.value.count
        }
        // (The pointers stay valid: the tensors are held by `parameters` and `velocity`, and nothing else touches
        // them until this returns.)
        FusedSGDPass(slices: slices, lr: learningRate, mu: momentum, wd: weightDecay, divisor: divisor).run(total: total, threads: threads)
    }
}

/// The SGD update over an element range of parameters laid end to end — the one implementation behind both
/// `SGD.step`s: g = (a + b) / divisor + λ·w; v = μ·v + g (v = g on the first step or without momentum);
/// out = w − lr·v (`out` may be `w` itself: an update in place).
struct FusedSGDPass: @unchecked Sendable {
    struct Slice {
        let w: UnsafePointer<Float>, v: UnsafeMutablePointer<Float>
        /// The gradient's operands (float32, possibly unaligned), and where the updated weights go.
        let a: UnsafeRawPointer, b: UnsafeRawPointer?, out: UnsafeMutableRawPointer
        let start: Int, count: Int, first: Bool
    }
    let slices: [Slice]
    let lr: Float, mu: Float, wd: Float, divisor: Float

    /// Elements 0..<total (the slices laid end to end), in `threads` contiguous ranges at once — one per thread, at
    /// most one per 64 Ki elements. Each element's update is independent, so the bits do not depend on the split.
    func run(total: Int, threads: Int) {
        let n = max(1, min(threads, total / 65_536))
        if n == 1 { run(0..<total); return }
        DispatchQueue.concurrentPerform(iterations: n) { k in run(total * k / n ..< total * (k + 1) / n) }
    }

    func run(_ r: Range<Int>) {
        // Dividing by a power of two is multiplying by its reciprocal, exactly (the same real number, rounded
        // once): a multiply instead of a divide, which is what bounds this loop (the batch size usually is one).
        let reciprocal = 1 / divisor
        let exact = divisor > 0 && divisor.isNormal && divisor.significandBitPattern == 0 && reciprocal.isNormal
        for s in slices where s.start < r.upperBound && s.start + s.count > r.lowerBound {
            let lo = max(r.lowerBound, s.start) - s.start, hi = min(r.upperBound, s.start + s.count) - s.start
            // Momentum applies from the second step on; the branches are hoisted out of the loop.
            switch (mu == 0 || s.first, exact) {
            case (true, true): pass(s, lo..<hi, momentum: false, scale: reciprocal)
            case (true, false): pass(s, lo..<hi, momentum: false, scale: nil)
            case (false, true): pass(s, lo..<hi, momentum: true, scale: reciprocal)
            case (false, false): pass(s, lo..<hi, momentum: true, scale: nil)
            }
        }
    }

    /// Four lanes at a time (SIMD4: each lane is the scalar float32 operation, so the same bits), then the rest.
    /// `scale`: the divisor's exact reciprocal, multiplied instead of dividing.
    @inline(__always) private func pass(_ s: Slice, _ r: Range<Int>, momentum: Bool, scale: Float?) {
        let w = UnsafeRawPointer(s.w), vd = UnsafeMutableRawPointer(s.v), a = s.a, b = s.b, o = s.out
        let d4 = SIMD4<Float>(repeating: divisor), wd4 = SIMD4<Float>(repeating: wd), mu4 = SIMD4<Float>(repeating: mu)
        let s4 = SIMD4<Float>(repeating: scale ?? 1)
        let lr4 = SIMD4<Float>(repeating: lr)
        var i = r.lowerBound
        while i + 4 <= r.upperBound {
            let k = i * 4
            var sum = a.loadUnaligned(fromByteOffset: k, as: SIMD4<Float>.self)
            if let b { sum = sum + b.loadUnaligned(fromByteOffset: k, as: SIMD4<Float>.self) }
            var wi = w.loadUnaligned(fromByteOffset: k, as: SIMD4<Float>.self)
            let gi = (scale != nil ? sum * s4 : sum / d4) + wd4 * wi
            let vi = momentum ? mu4 * vd.loadUnaligned(fromByteOffset: k, as: SIMD4<Float>.self) + gi : gi
            vd.storeBytes(of: vi, toByteOffset: k, as: SIMD4<Float>.self)
            wi = wi - lr4 * vi
            o.storeBytes(of: wi, toByteOffset: k, as: SIMD4<Float>.self)
            i += 4
        }
        while i < r.upperBound {
            let k = i * 4
            var sum = a.loadUnaligned(fromByteOffset: k, as: Float.self)
            if let b { sum = sum + b.loadUnaligned(fromByteOffset: k, as: Float.self) }
            let gi = (scale.map { sum * $0 } ?? sum / divisor) + wd * s.w[i]
            let vi = momentum ? mu * s.v[i] + gi : gi
            s.v[i] = vi
            o.storeBytes(of: s.w[i] - lr * vi, toByteOffset: k, as: Float.self)
            i += 1
        }
    }
}

/// Adam (and AdamW with `decoupled: true`), as PyTorch: bias-corrected moments; L2 decay added to the gradient
/// (Adam) or applied to the weights directly, w ← w − lr·λ·w (AdamW).
public final class Adam: Optimizer {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    public let decoupled: Bool
    var moments: [ObjectIdentifier: (m: Tensor, v: Tensor)] = [:]
    public internal(set) var steps = 0

    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decoupled: Bool = false) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decoupled = decoupled
    }

    public static func adamW(learningRate: Float = 1e-3, weightDecay: Float = 0.01) -> Adam {
        Adam(learningRate: learningRate, weightDecay: weightDecay, decoupled: true)
    }

    public func step(_ parameters: [Parameter]) {
        steps += 1
        let c1 = 1 - powf(beta1, Float(steps)), c2 = 1 - powf(beta2, Float(steps))
        let lr = learningRate, b1 = beta1, b2 = beta2, eps = epsilon, wd = weightDecay, dec = decoupled
        for p in parameters {
            guard let g = p.grad else { continue }
            let key = ObjectIdentifier(p)
            var (m, v) = moments[key] ?? (Tensor(zeros: g.shape), Tensor(zeros: g.shape))
            moments[key] = nil
            p.value.withMutableData { w in
                g.withData { gd in
                    m.withMutableData { md in
                        v.withMutableData { vd in
                            for i in 0..<w.count {
                                if dec { w[i] -= lr * wd * w[i] }
                                let gi = dec ? gd[i] : gd[i] + wd * w[i]
                                md[i] = b1 * md[i] + (1 - b1) * gi
                                vd[i] = b2 * vd[i] + (1 - b2) * gi * gi
                                w[i] -= lr * (md[i] / c1) / ((vd[i] / c2).squareRoot() + eps)
                            }
                        }
                    }
                }
            }
            moments[key] = (m, v)
        }
    }
}

/// Linear warm-up to the peak rate, then cosine decay to `floor` at `totalSteps`.
public struct WarmupCosine: Sendable {
    public let peak: Float, warmupSteps: Int, totalSteps: Int, floor: Float
    public init(peak: Float, warmupSteps: Int, totalSteps: Int, floor: Float = 0) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.floor = floor
    }

    /// The rate for step `s` (0-based).
    public func rate(at s: Int) -> Float {
        if s < warmupSteps { return peak * Float(s + 1) / Float(warmupSteps) }
        let t = Float(min(s, totalSteps) - warmupSteps) / Float(max(1, totalSteps - warmupSteps))
        return floor + (peak - floor) * 0.5 * (1 + cosf(.pi * t))
    }
}

// MARK: state (checkpoints)

/// Optimizer state as named tensors, so a checkpoint can hold it next to the weights. Names are
/// `<parameter name>.<slot>` (`momentum_buffer`, `exp_avg`, `exp_avg_sq`), plus `step` for Adam.
public protocol StatefulOptimizer: Optimizer {
    func state(_ parameters: [Parameter]) -> [String: Tensor]
    /// Restores what `state` produced; an error names the tensor that is missing or has the wrong shape.
    func load(state: [String: Tensor], _ parameters: [Parameter], file: String) throws
}

func stateTensor(_ state: [String: Tensor], _ name: String, shape: [Int], file: String) throws -> Tensor {
    guard let t = state[name] else { throw FormatError(file: file, problem: "optimizer state '\(name)' missing") }
    guard t.shape == shape else { throw FormatError(file: file, problem: "optimizer state '\(name)' has shape \(t.shape), expected \(shape)") }
    return t
}

extension SGD: StatefulOptimizer {
    public func state(_ parameters: [Parameter]) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for p in parameters { if let v = velocity[ObjectIdentifier(p)] { out[p.name + ".momentum_buffer"] = v } }
        return out
    }

    public func load(state: [String: Tensor], _ parameters: [Parameter], file: String) throws {
        velocity = [:]
        for p in parameters where state[p.name + ".momentum_buffer"] != nil {
            velocity[ObjectIdentifier(p)] = try stateTensor(state, p.name + ".momentum_buffer", shape: p.value.shape, file: file)
        }
    }
}

extension Adam: StatefulOptimizer {
    public func state(_ parameters: [Parameter]) -> [String: Tensor] {
        var out: [String: Tensor] = ["step": Tensor(shape: [1], [Float(steps)])]
        for p in parameters {
            if let (m, v) = moments[ObjectIdentifier(p)] {
                out[p.name + ".exp_avg"] = m
                out[p.name + ".exp_avg_sq"] = v
            }
        }
        return out
    }

    public func load(state: [String: Tensor], _ parameters: [Parameter], file: String) throws {
        let s = try stateTensor(state, "step", shape: [1], file: file)
        let n = s.withData { $0[0] }
        guard n >= 0, n == n.rounded(), n < 1e9 else { throw FormatError(file: file, problem: "optimizer state 'step' is \(n), expected a count") }
        steps = Int(n)
        moments = [:]
        for p in parameters where state[p.name + ".exp_avg"] != nil {
            moments[ObjectIdentifier(p)] = (try stateTensor(state, p.name + ".exp_avg", shape: p.value.shape, file: file),
                                            try stateTensor(state, p.name + ".exp_avg_sq", shape: p.value.shape, file: file))
        }
    }
}

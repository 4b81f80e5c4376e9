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

/// An optimizer that makes a step straight from a sum tree of gradients (the coordinator's step: the reduce's last
/// additions, ÷ divisor, the update and the next PARAMS written in one pass) — the same bits as setting the gradients
/// and calling `step`.
public protocol TreeStepOptimizer: Optimizer {
    func step(_ parameters: [Parameter], sumOf tree: SumTree, divisor: Float, writingTo out: UnsafeMutableRawBufferPointer, threads: Int)
}

/// SGD with momentum and L2 weight decay, as PyTorch's `torch.optim.SGD` (dampening 0, not Nesterov):
/// g ← g + λ·w; v ← μ·v + g; w ← w − lr·v.
public final class SGD: TreeStepOptimizer {
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
    /// operands (none when a tree's sum is read from a chunk buffer), where its updated weights go, and where it starts in the whole vector.
    private func slice(_ p: Parameter, weights: UnsafePointer<Float>, gradient a: UnsafeRawPointer?, _ b: UnsafeRawPointer?,
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
        step(parameters, sumOf: b.map { .add(.vector(a), .vector($0)) } ?? .vector(a), divisor: divisor, writingTo: out, threads: threads)
    }

    /// `step(_:sumOf:_:…)` with the gradient a whole tree of additions (`SumTree`): every addition the tree holds is
    /// made in this one pass, chunk by chunk, in the tree's order — the same bits as adding whole vectors first, without
    /// writing and reading back the intermediate sums. (The coordinator's training step when several partial sums
    /// are left at the step's end: the additions up the tree were a pass each.)
    public func step(_ parameters: [Parameter], sumOf tree: SumTree, divisor: Float, writingTo out: UnsafeMutableRawBufferPointer,
                     threads: Int = 1) {
        let total = parameters.reduce(0) { $0 + $1.value.count }
        precondition(tree.vectors.allSatisfy { $0.count == total * 4 } && out.count == total * 4,
                     "gradient of \(tree.vectors.map { $0.count / 4 }) values for \(total) parameters")
        let direct = tree.operands
        var slices: [FusedSGDPass.Slice] = []
        var offset = 0
        for p in parameters {
            slices.append(slice(p, weights: p.value.withData { $0.baseAddress! },
                                gradient: direct.map { $0.a.baseAddress! + offset * 4 },
                                direct?.b.map { $0.baseAddress! + offset * 4 }, out: out.baseAddress! + offset * 4, start: offset))
            offset += p.value.count
        }
        // (The pointers stay valid: the tensors are held by `parameters` and `velocity`, and nothing else touches
        // them until this returns.)
        FusedSGDPass(slices: slices, tree: direct == nil ? tree : nil, lr: learningRate, mu: momentum, wd: weightDecay, divisor: divisor)
            .run(total: total, threads: threads)
    }
}

extension SGD {
    /// The update of one element range of the parameters laid end to end — a collective step's slice, owned by one
    /// worker: its weights `w`, its velocity `v` (`first`: none yet, so v = g), its gradient a sum tree over
    /// `count` elements; the updated weights go to `out`. Element by element the same operations as
    /// `step(_:sumOf:divisor:writingTo:threads:)` over the whole vector, so the same bits.
    public static func sliceStep(weights w: UnsafePointer<Float>, velocity v: UnsafeMutablePointer<Float>, first: Bool, count: Int,
                                 sumOf tree: SumTree, divisor: Float, learningRate: Float, momentum: Float, weightDecay: Float,
                                 writingTo out: UnsafeMutableRawPointer, threads: Int = 1) {
        precondition(tree.vectors.allSatisfy { $0.count == count * 4 }, "gradient slice of \(tree.vectors.map { $0.count / 4 }) values for \(count)")
        guard count > 0 else { return }
        let direct = tree.operands
        let slice = FusedSGDPass.Slice(w: w, v: v, a: direct.map { UnsafeRawPointer($0.a.baseAddress!) }, b: direct?.b.map { UnsafeRawPointer($0.baseAddress!) },
                                       out: out, start: 0, count: count, first: first)
        FusedSGDPass(slices: [slice], tree: direct == nil ? tree : nil, lr: learningRate, mu: momentum, wd: weightDecay, divisor: divisor)
            .run(total: count, threads: threads)
    }

    /// The velocity of `parameters` laid end to end (zeros where a parameter has none), and whether any has one —
    /// false before the first step.
    public func velocityVector(_ parameters: [Parameter]) -> (values: [Float], present: Bool) {
        var out: [Float] = []
        out.reserveCapacity(parameters.reduce(0) { $0 + $1.value.count })
        var present = false
        for p in parameters {
            if let v = velocity[ObjectIdentifier(p)] {
                present = true
                v.withData { out.append(contentsOf: $0) }
            } else {
                out.append(contentsOf: repeatElement(0, count: p.value.count))
            }
        }
        return (out, present)
    }

    /// Sets every parameter's velocity from `values` (laid end to end, as `velocityVector`).
    public func setVelocity(_ parameters: [Parameter], from values: UnsafeBufferPointer<Float>) {
        var o = 0
        for p in parameters {
            let n = p.value.count, key = ObjectIdentifier(p)
            // (into the tensor there is, in place, where it has the shape: one copy)
            var v = velocity.removeValue(forKey: key).flatMap { $0.shape == p.value.shape ? $0 : nil } ?? Tensor(zeros: p.value.shape)
            v.withMutableData { UnsafeMutableRawBufferPointer($0).copyMemory(from: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: values[o..<o + n]))) }
            velocity[key] = v
            o += n
        }
    }
}

/// A sum of float32 vectors of one length (little-endian bytes, possibly unaligned) in a fixed association: each
/// `add` is one float32 addition per element. Evaluated over any element range, chunk by chunk, it gives the same
/// bits as adding the whole vectors in its order — so a consumer can make the additions inside its own pass.
public indirect enum SumTree: @unchecked Sendable {
    case vector(UnsafeRawBufferPointer)
    case add(SumTree, SumTree)

    /// The vectors it adds, left to right.
    public var vectors: [UnsafeRawBufferPointer] {
        switch self {
        case .vector(let v): [v]
        case .add(let l, let r): l.vectors + r.vectors
        }
    }

    /// Additions it makes per element.
    public var additions: Int { vectors.count - 1 }

    /// One vector, or one addition of two: what a pass reads directly, without a chunk buffer.
    var operands: (a: UnsafeRawBufferPointer, b: UnsafeRawBufferPointer?)? {
        switch self {
        case .vector(let a): (a, nil)
        case .add(.vector(let a), .vector(let b)): (a, b)
        default: nil
        }
    }

    /// Chunk buffers `evaluate` needs besides its output: one per level of right operands that are sums.
    var scratchDepth: Int {
        switch self {
        case .vector: 0
        case .add(let l, .vector): l.scratchDepth
        case .add(let l, let r): max(l.scratchDepth, 1 + r.scratchDepth)
        }
    }

    /// Elements `r` of the sum into `out[0..<r.count]`; `scratch` holds `scratchDepth` buffers of `stride` floats.
    func evaluate(_ r: Range<Int>, into out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, stride: Int) {
        let o = UnsafeMutableRawPointer(out), n = r.count
        func at(_ v: UnsafeRawBufferPointer) -> UnsafeRawPointer { v.baseAddress! + r.lowerBound * 4 }
        switch self {
        case .vector(let v):
            o.copyMemory(from: at(v), byteCount: n * 4)
        case .add(.vector(let a), .vector(let b)):
            Self.add(at(a), at(b), into: o, count: n)
        case .add(let l, .vector(let b)):
            l.evaluate(r, into: out, scratch: scratch, stride: stride)
            Self.add(UnsafeRawPointer(o), at(b), into: o, count: n)
        case .add(let l, let right):
            l.evaluate(r, into: out, scratch: scratch, stride: stride)
            right.evaluate(r, into: scratch, scratch: scratch + stride, stride: stride)
            Self.add(UnsafeRawPointer(o), UnsafeRawPointer(scratch), into: o, count: n)
        }
    }

    /// out[i] = x[i] + y[i], float32 (possibly unaligned; `out` may be `x`): eight lanes at a time, each the scalar
    /// addition, then the rest.
    @inline(__always) static func add(_ x: UnsafeRawPointer, _ y: UnsafeRawPointer, into out: UnsafeMutableRawPointer, count: Int) {
        var k = 0
        while k + 32 <= count * 4 {
            let s = x.loadUnaligned(fromByteOffset: k, as: SIMD8<Float>.self) + y.loadUnaligned(fromByteOffset: k, as: SIMD8<Float>.self)
            out.storeBytes(of: s, toByteOffset: k, as: SIMD8<Float>.self)
            k += 32
        }
        while k < count * 4 {
            out.storeBytes(of: x.loadUnaligned(fromByteOffset: k, as: Float.self) + y.loadUnaligned(fromByteOffset: k, as: Float.self),
                           toByteOffset: k, as: Float.self)
            k += 4
        }
    }
}

/// The SGD update over an element range of parameters laid end to end — the one implementation behind both
/// `SGD.step`s: g = (a + b) / divisor + λ·w; v = μ·v + g (v = g on the first step or without momentum);
/// out = w − lr·v (`out` may be `w` itself: an update in place). With a `tree`, the gradient's sum is made chunk
/// by chunk into a small buffer first and read from there (`a` alone).
struct FusedSGDPass: @unchecked Sendable {
    struct Slice {
        let w: UnsafePointer<Float>, v: UnsafeMutablePointer<Float>
        /// The gradient's operands (float32, possibly unaligned; nil with a tree), and where the updated weights go.
        let a: UnsafeRawPointer?, b: UnsafeRawPointer?, out: UnsafeMutableRawPointer
        let start: Int, count: Int, first: Bool
    }
    let slices: [Slice]
    var tree: SumTree? = nil
    let lr: Float, mu: Float, wd: Float, divisor: Float

    /// Elements 0..<total (the slices laid end to end), in `threads` contiguous ranges at once — one per thread, at
    /// most one per 64 Ki elements. Each element's update is independent, so the bits do not depend on the split.
    ///
    /// With the gradients whole (no tree), thread k takes the k-th of n pieces of every slice instead: after a backward
    /// pass (`SGD.step`), the rows of each weight whose gradient the same thread computed — the engine splits a weight
    /// gradient's product by rows (`BLAS.productSplit`) — so they are read from its own core's caches. Measured
    /// on a 2-vCPU AMD EPYC (`sigma bench mlp`'s step, 1,600 steps alternating the two splits): the pass took 1.15
    /// against 1.17 ms, and 1.61 against 1.73 ms in the minutes when data moving between the two cores costs more.
    func run(total: Int, threads: Int) {
        guard tree == nil else { splitOverThreads(total: total, threads: threads) { run($0) }; return }
        partsOverThreads(total: total, threads: threads) { k, n in
            for s in slices { pass(s, s.start + s.count * k / n ..< s.start + s.count * (k + 1) / n, a: s.a!, b: s.b, shift: 0) }
        }
    }

    /// Elements per chunk of a tree's sum: a few kilobytes per buffer, so they stay in the core's first caches.
    static let chunk = 2048

    func run(_ r: Range<Int>) {
        guard let tree else {
            for s in slices { pass(s, r, a: s.a!, b: s.b, shift: 0) }
            return
        }
        tree.forEachChunk(r) { chunk, sum in
            // (the sum's element i sits at sum[i − lo]: `shift` is lo in slice coordinates)
            for s in slices { pass(s, chunk, a: UnsafeRawPointer(sum), b: nil, shift: chunk.lowerBound - s.start) }
        }
    }

    /// The slices' elements in `r` (whole-vector coordinates), the gradient's element i (slice coordinates) read at
    /// `a`/`b` + (i − shift)·4.
    @inline(__always) private func pass(_ s: Slice, _ r: Range<Int>, a: UnsafeRawPointer, b: UnsafeRawPointer?, shift: Int) {
        guard s.start < r.upperBound && s.start + s.count > r.lowerBound else { return }
        let lo = max(r.lowerBound, s.start) - s.start, hi = min(r.upperBound, s.start + s.count) - s.start
        // Dividing by a power of two is multiplying by its reciprocal, exactly (the same real number, rounded
        // once): a multiply instead of a divide, which is what bounds this loop (the batch size usually is one).
        let reciprocal = 1 / divisor
        let exact = divisor > 0 && divisor.isNormal && divisor.significandBitPattern == 0 && reciprocal.isNormal
        // Momentum applies from the second step on; the branches are hoisted out of the loop.
        let ga = a - shift * 4
        switch (mu == 0 || s.first, exact) {
        case (true, true): pass(s, lo..<hi, ga, b, momentum: false, scale: reciprocal)
        case (true, false): pass(s, lo..<hi, ga, b, momentum: false, scale: nil)
        case (false, true): pass(s, lo..<hi, ga, b, momentum: true, scale: reciprocal)
        case (false, false): pass(s, lo..<hi, ga, b, momentum: true, scale: nil)
        }
    }

    /// Sixteen lanes at a time (SIMD16: each lane is the scalar float32 operation, so the same bits), then the rest.
    /// `scale`: the divisor's exact reciprocal, multiplied instead of dividing. The weight-decay term is left out when
    /// the decay is 0, as PyTorch does (adding 0·w would turn an infinite weight's gradient into NaN). The loop is
    /// specialised on every flag (`b`, momentum, scale, decay), so its body holds no branch: the pass is bound by
    /// memory, and a loop with branches and per-lane checks in it ran ~40 % slower than the same pass in C.
    @inline(__always) private func pass(_ s: Slice, _ r: Range<Int>, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer?, momentum: Bool, scale: Float?) {
        switch (b != nil, wd != 0) {
        case (false, false): pass(s, r, a, b, momentum: momentum, scale: scale, two: false, decay: false)
        case (false, true): pass(s, r, a, b, momentum: momentum, scale: scale, two: false, decay: true)
        case (true, false): pass(s, r, a, b, momentum: momentum, scale: scale, two: true, decay: false)
        case (true, true): pass(s, r, a, b, momentum: momentum, scale: scale, two: true, decay: true)
        }
    }

    @inline(__always) private func pass(_ s: Slice, _ r: Range<Int>, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer?, momentum: Bool, scale: Float?,
                                        two: Bool, decay: Bool) {
        let w = UnsafeRawPointer(s.w), vd = UnsafeMutableRawPointer(s.v), o = s.out, bb = b ?? a
        typealias V = SIMD16<Float>
        let d16 = V(repeating: divisor), wd16 = V(repeating: wd), mu16 = V(repeating: mu)
        let s16 = V(repeating: scale ?? 1), lr16 = V(repeating: lr)
        let lanes = V.scalarCount, width = lanes * 4
        var k = r.lowerBound &* 4
        let vectorEnd = (r.lowerBound &+ (r.count / lanes) &* lanes) &* 4
        while k < vectorEnd {
            var sum = a.loadUnaligned(fromByteOffset: k, as: V.self)
            if two { sum = sum + bb.loadUnaligned(fromByteOffset: k, as: V.self) }
            let wi = w.loadUnaligned(fromByteOffset: k, as: V.self)
            var gi = scale != nil ? sum * s16 : sum / d16
            if decay { gi = gi + wd16 * wi }
            let vi = momentum ? mu16 * vd.loadUnaligned(fromByteOffset: k, as: V.self) + gi : gi
            vd.storeBytes(of: vi, toByteOffset: k, as: V.self)
            o.storeBytes(of: wi - lr16 * vi, toByteOffset: k, as: V.self)
            k &+= width
        }
        var i = vectorEnd / 4
        while i < r.upperBound {
            let k = i * 4
            var sum = a.loadUnaligned(fromByteOffset: k, as: Float.self)
            if two { sum = sum + bb.loadUnaligned(fromByteOffset: k, as: Float.self) }
            var gi = scale.map { sum * $0 } ?? sum / divisor
            if decay { gi = gi + wd * s.w[i] }
            let vi = momentum ? mu * s.v[i] + gi : gi
            s.v[i] = vi
            o.storeBytes(of: s.w[i] - lr * vi, toByteOffset: k, as: Float.self)
            i += 1
        }
    }
}

/// Adam (and AdamW with `decoupled: true`), as PyTorch: bias-corrected moments; L2 decay added to the gradient
/// (Adam) or applied to the weights directly, w ← w − lr·λ·w (AdamW).
public final class Adam: TreeStepOptimizer {
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

extension SumTree {
    /// The sum over `r`, chunk by chunk (`FusedSGDPass.chunk` elements, so the buffers stay in the core's first
    /// caches): `body(chunk, sum)`, the sum's element i at `sum[i − chunk.lowerBound]`.
    func forEachChunk(_ r: Range<Int>, _ body: (Range<Int>, UnsafePointer<Float>) -> Void) {
        let c = FusedSGDPass.chunk
        withUnsafeTemporaryAllocation(of: Float.self, capacity: c * (1 + scratchDepth)) { buffer in
            let sum = buffer.baseAddress!
            var lo = r.lowerBound
            while lo < r.upperBound {
                let hi = min(lo + c, r.upperBound)
                evaluate(lo..<hi, into: sum, scratch: sum + c, stride: c)
                body(lo..<hi, sum)
                lo = hi
            }
        }
    }
}

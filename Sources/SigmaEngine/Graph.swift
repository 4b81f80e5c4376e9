/// Reverse-mode automatic differentiation on a tape. Operations on `Var`s compute their value at once and record
/// themselves; `backward(from:)` walks the tape in reverse applying one derivative rule per primitive
/// (`Graph.derivatives`, the one table of rules).
public final class Graph {
    /// Whether operations are recorded for `backward`. A graph that does not record (inference) keeps nothing:
    /// each `Var` holds its own value, freed when the last `Var` referring to it goes — a forward pass then
    /// holds only the tensors still in use, not every intermediate of every layer.
    public let recording: Bool
    public private(set) var values: [Tensor] = []
    var ops: [Op] = []
    /// Parameters fed into this graph, by var id: backward writes their gradients.
    var parameters: [Int: Parameter] = [:]
    /// Whether a gradient can flow to each var: it is a parameter or computed from one. Inputs and targets
    /// (constants) are not, so backward skips their gradients — e.g. the first layer's dx, a whole GEMM.
    var needsGradient: [Bool] = []

    /// `recording: false` for inference: no tape, no gradients, memory of one layer's intermediates at a time.
    public init(recording: Bool = true) { self.recording = recording }
    /// Ids handed out when not recording (vars are numbered all the same; nothing is kept under them).
    private var unrecorded = 0

    indirect enum Op {
        case leaf
        case binary(Kernels.Binary, Int, Int)
        case matmul(Int, Int, transA: Bool, transB: Bool)
        case unary(Kernels.Unary, Int)
        case sum(Int)
        case mean(Int)
        case scale(Int, Float)
        case reshape(Int)
        case logSoftmax(Int)
        /// Mean negative log-likelihood of `labels` under log-probabilities (N, C).
        case nll(Int, labels: [Int32])
        case bmm(Int, Int, transA: Bool, transB: Bool)
        case permute(Int, [Int])
        case softmax(Int)
        case layerNorm(Int, Int, Int, means: [Float], inverseStd: [Float])
        case gather(Int, ids: [Int32])
        /// x (N, in) · w (out, in)ᵀ + b (out), fused.
        case linear(Int, Int, bias: Int?)
        case conv2d(Int, Int, bias: Int?, stride: Int, padding: Int)
        case pool2d(ConvKernels.Pool, Int, kernel: Int, stride: Int, argmax: [Int32])
        /// Rows (G·size, D) → the mean of each run of `size` rows (G, D).
        case groupMean(Int, size: Int)
        /// Linear layers with activations between them, feature-major (`LinearChain`).
        case linearChain(Int, LinearChain)

        /// The vars this op reads.
        var inputs: [Int] {
            switch self {
            case .leaf: return []
            case .binary(_, let a, let b), .matmul(let a, let b, _, _), .bmm(let a, let b, _, _): return [a, b]
            case .unary(_, let a), .sum(let a), .mean(let a), .scale(let a, _), .reshape(let a), .logSoftmax(let a),
                 .nll(let a, _), .permute(let a, _), .softmax(let a), .gather(let a, _), .pool2d(_, let a, _, _, _),
                 .groupMean(let a, _):
                return [a]
            case .layerNorm(let x, let g, let b, _, _): return [x, g, b]
            case .linear(let x, let w, let b), .conv2d(let x, let w, let b, _, _): return [x, w] + (b.map { [$0] } ?? [])
            case .linearChain(let x, let c): return [x] + c.inputs
            }
        }
    }

    /// A value that needs no gradient (inputs, targets).
    public func constant(_ t: Tensor) -> Var { record(t, .leaf) }

    /// A trainable parameter: its gradient is accumulated into `p.grad` by `backward`.
    public func param(_ p: Parameter) -> Var {
        let v = record(p.value, .leaf)
        if recording {
            parameters[v.id] = p
            needsGradient[v.id] = true
        }
        return v
    }

    func record(_ t: Tensor, _ op: Op) -> Var {
        guard recording else {
            unrecorded += 1
            return Var(id: unrecorded - 1, graph: self, value: t)
        }
        values.append(t)
        ops.append(op)
        needsGradient.append(op.inputs.contains { needsGradient[$0] })
        return Var(id: values.count - 1, graph: self, value: t)
    }

    /// Back-propagates from a scalar `loss`; parameter gradients are added to `Parameter.grad`.
    /// Returns the gradient of every var that depends on a parameter (nil where none flowed, and for constants).
    @discardableResult
    public func backward(from loss: Var) -> [Tensor?] {
        precondition(recording, "backward on a graph made with recording: false (nothing was recorded)")
        precondition(loss.value.count == 1, "backward needs a scalar loss, got shape \(loss.value.shape)")
        var grads = [Tensor?](repeating: nil, count: values.count)
        grads[loss.id] = Tensor(shape: loss.value.shape, repeating: 1)
        // A parameter's first gradient contribution may be computed straight into its gradient buffer — only when
        // nothing else reads that memory meanwhile: no gradient accumulated there from an earlier backward, and
        // the parameter fed into this graph once (fed twice, each var would claim the same buffer).
        var feeds: [ObjectIdentifier: Int] = [:]
        for p in parameters.values { feeds[ObjectIdentifier(p), default: 0] += 1 }
        let direct = parameters.compactMapValues { p in p.grad == nil && feeds[ObjectIdentifier(p)] == 1 ? p.gradientBuffer : nil }
        for id in stride(from: loss.id, through: 0, by: -1) {
            guard let g = grads[id] else { continue }
            let sink: (Int) -> UnsafeMutableBufferPointer<Float>? = { v in grads[v] == nil ? direct[v] : nil }
            for (input, contribution) in derivatives(of: ops[id], output: values[id], gradient: g, sink: sink) where needsGradient[input] {
                if let existing = grads[input] {
                    grads[input] = Kernels.binary(.add, existing, contribution)
                } else {
                    grads[input] = contribution
                }
            }
        }
        for (id, p) in parameters {
            guard let g = grads[id] else { continue }
            var total = p.grad.map { Kernels.binary(.add, $0, g) } ?? g
            if let buffer = p.gradientBuffer, let base = buffer.baseAddress, !total.isStored(at: base) {
                precondition(buffer.count == total.count, "\(p.name): gradient buffer of \(buffer.count) floats for \(total.count)")
                total.withData { _ = buffer.update(fromContentsOf: $0) }
                total = Tensor(borrowing: base, shape: total.shape, owner: Tensor.externalMemory)
            }
            p.grad = total
        }
        return grads
    }

    /// The derivative rules: for an op with output `y` and upstream gradient `g`, the gradient of each input.
    /// `sink(v)`: memory where var v's gradient may be written directly (the linear rule's weight GEMM does).
    func derivatives(of op: Op, output y: Tensor, gradient g: Tensor,
                     sink: (Int) -> UnsafeMutableBufferPointer<Float>? = { _ in nil }) -> [(Int, Tensor)] {
        switch op {
        case .leaf:
            return []
        case .binary(let kind, let a, let b):
            let x = values[a], z = values[b]
            switch kind {
            case .add:
                return [(a, Kernels.sumTo(g, shape: x.shape)), (b, Kernels.sumTo(g, shape: z.shape))]
            case .sub:
                return [(a, Kernels.sumTo(g, shape: x.shape)), (b, Kernels.sumTo(Kernels.unary(.neg, g), shape: z.shape))]
            case .mul:
                return [(a, Kernels.sumTo(Kernels.binary(.mul, g, z), shape: x.shape)),
                        (b, Kernels.sumTo(Kernels.binary(.mul, g, x), shape: z.shape))]
            case .div:
                let ga = Kernels.binary(.div, g, z)
                let gb = Kernels.unary(.neg, Kernels.binary(.div, Kernels.binary(.mul, ga, x), z))
                return [(a, Kernels.sumTo(ga, shape: x.shape)), (b, Kernels.sumTo(gb, shape: z.shape))]
            }
        case .matmul(let a, let b, let ta, let tb):
            return productGradients(a, b, g, ta, tb) { Kernels.matmul($0, $1, transA: $2, transB: $3) }
        case .unary(let kind, let a):
            return [(a, Kernels.unaryBackward(kind, x: values[a], y: y, g: g))]
        case .sum(let a):
            return [(a, Tensor(shape: values[a].shape, repeating: g.item))]
        case .mean(let a):
            return [(a, Tensor(shape: values[a].shape, repeating: g.item / Float(max(1, values[a].count))))]
        case .scale(let a, let s):
            return [(a, Kernels.binary(.mul, g, .scalar(s)))]
        case .reshape(let a):
            return [(a, g.reshaped(values[a].shape))]
        case .logSoftmax(let a):
            // dx = g − softmax(x) · Σ_row g
            let c = y.shape.last ?? 1
            var dx = Tensor(zeros: y.shape)
            y.withData { py in g.withData { pg in dx.withMutableData { pd in
                var base = 0
                while base < py.count {
                    var s: Float = 0
                    for j in 0..<c { s += pg[base + j] }
                    for j in 0..<c { pd[base + j] = pg[base + j] - expf(py[base + j]) * s }
                    base += c
                }
            } } }
            return [(a, dx)]
        case .nll(let a, let labels):
            let logp = values[a]
            let n = logp.shape[0], c = logp.shape[1]
            let scale = -g.item / Float(n)
            var dx = Tensor(zeros: logp.shape)
            dx.withMutableData { pd in for i in 0..<n { pd[i * c + Int(labels[i])] = scale } }
            return [(a, dx)]
        case .bmm(let a, let b, let ta, let tb):
            return productGradients(a, b, g, ta, tb) { Kernels.bmm($0, $1, transA: $2, transB: $3) }
        case .permute(let a, let order):
            var inverse = [Int](repeating: 0, count: order.count)
            for (i, o) in order.enumerated() { inverse[o] = i }
            return [(a, Kernels.permute(g, inverse))]
        case .softmax(let a):
            // dx = y ⊙ (g − Σ_row g ⊙ y)
            let c = y.shape.last ?? 1
            var dx = Tensor(uninitialized: y.shape)
            y.withData { py in g.withData { pg in dx.withMutableData { pd in
                var base = 0
                while base < py.count {
                    var s: Float = 0
                    for j in 0..<c { s += pg[base + j] * py[base + j] }
                    for j in 0..<c { pd[base + j] = py[base + j] * (pg[base + j] - s) }
                    base += c
                }
            } } }
            return [(a, dx)]
        case .layerNorm(let x, let gamma, let beta, let means, let inv):
            let X = values[x], d = X.shape.last ?? 1
            var dx = Tensor(uninitialized: X.shape), dg = Tensor(zeros: [d]), db = Tensor(zeros: [d])
            X.withData { px in g.withData { pg in values[gamma].withData { pgam in
                dx.withMutableData { pdx in dg.withMutableData { pdg in db.withMutableData { pdb in
                    for r in 0..<means.count {
                        let base = r * d, mean = means[r], s = inv[r]
                        var sumG: Float = 0, sumGX: Float = 0
                        for j in 0..<d {
                            let xhat = (px[base + j] - mean) * s
                            let gj = pg[base + j]
                            pdg[j] += gj * xhat
                            pdb[j] += gj
                            let gx = gj * pgam[j]
                            sumG += gx
                            sumGX += gx * xhat
                        }
                        for j in 0..<d {
                            let xhat = (px[base + j] - mean) * s
                            pdx[base + j] = s * (pg[base + j] * pgam[j] - (sumG + xhat * sumGX) / Float(d))
                        }
                    }
                } } }
            } } }
            return [(x, dx), (gamma, dg), (beta, db)]
        case .gather(let table, let ids):
            let T = values[table], d = T.shape[1]
            var dt = Tensor(zeros: T.shape)
            g.withData { pg in dt.withMutableData { pt in
                for (i, id) in ids.enumerated() { for j in 0..<d { pt[Int(id) * d + j] += pg[i * d + j] } }
            } }
            return [(table, dt)]
        case .linear(let x, let w, let b):
            let dw = Kernels.matmul(g, values[x], transA: true, into: sink(w))
            let dx = needsGradient[x] ? [(x, Kernels.matmul(g, values[w]))] : []
            return dx + [(w, dw)] + (b.map { [($0, Kernels.sumTo(g, shape: values[$0].shape))] } ?? [])
        case .conv2d(let x, let w, let b, let stride, let padding):
            let (dx, dw, db) = ConvKernels.conv2dBackward(values[x], values[w], g, stride: stride, padding: padding,
                                                          hasBias: b != nil, inputGradient: needsGradient[x])
            return (dx.map { [(x, $0)] } ?? []) + [(w, dw)] + (b.map { [($0, db!)] } ?? [])
        case .pool2d(let kind, let x, let k, let s, let argmax):
            return [(x, ConvKernels.pool2dBackward(kind, inputShape: values[x].shape, dy: g, argmax: argmax, kernel: k, stride: s))]
        case .linearChain(let x, let c):
            return chainDerivatives(x, c, gradient: g, sink: sink)
        case .groupMean(let x, let size):
            let d = g.shape[1], scale = 1 / Float(size)
            let dx = Tensor(shape: values[x].shape) { o in
                g.withData { pg in for r in 0..<o.count / d { for j in 0..<d { o[r * d + j] = pg[(r / size) * d + j] * scale } } }
            }
            return [(x, dx)]
        }
    }
}

extension Graph {
    /// Gradients of y = op(A)·op(B) (op = optional transpose) for any product `mul(x, y, transX, transY)` — the
    /// one rule shared by matmul and batched matmul: dA = g·op(B)ᵀ (or its transpose), dB = op(A)ᵀ·g (or its
    /// transpose); each only for an operand that needs a gradient.
    func productGradients(_ a: Int, _ b: Int, _ g: Tensor, _ ta: Bool, _ tb: Bool,
                          _ mul: (Tensor, Tensor, Bool, Bool) -> Tensor) -> [(Int, Tensor)] {
        let A = values[a], B = values[b]
        var out: [(Int, Tensor)] = []
        if needsGradient[a] { out.append((a, ta ? mul(B, g, tb, true) : mul(g, B, false, !tb))) }
        if needsGradient[b] { out.append((b, tb ? mul(g, A, true, ta) : mul(A, g, !ta, false))) }
        return out
    }
}

/// A node of a `Graph`: its value is computed when the op is recorded.
public struct Var {
    public let id: Int
    public let graph: Graph
    public let value: Tensor
    public var shape: [Int] { value.shape }

    public static func + (a: Var, b: Var) -> Var { a.graph.record(Kernels.binary(.add, a.value, b.value), .binary(.add, a.id, b.id)) }
    public static func - (a: Var, b: Var) -> Var { a.graph.record(Kernels.binary(.sub, a.value, b.value), .binary(.sub, a.id, b.id)) }
    public static func * (a: Var, b: Var) -> Var { a.graph.record(Kernels.binary(.mul, a.value, b.value), .binary(.mul, a.id, b.id)) }
    public static func / (a: Var, b: Var) -> Var { a.graph.record(Kernels.binary(.div, a.value, b.value), .binary(.div, a.id, b.id)) }

    /// self (M, K) · other (K, N) → (M, N); transposes read the stored matrix transposed.
    public func matmul(_ other: Var, transA: Bool = false, transB: Bool = false) -> Var {
        graph.record(Kernels.matmul(value, other.value, transA: transA, transB: transB),
                     .matmul(id, other.id, transA: transA, transB: transB))
    }

    public func unary(_ op: Kernels.Unary) -> Var { graph.record(Kernels.unary(op, value), .unary(op, id)) }
    public func relu() -> Var { unary(.relu) }
    public func gelu() -> Var { unary(.gelu) }
    public func tanh() -> Var { unary(.tanh) }
    public func exp() -> Var { unary(.exp) }
    public func log() -> Var { unary(.log) }
    public func sum() -> Var { graph.record(Kernels.sum(value), .sum(id)) }
    public func mean() -> Var { graph.record(.scalar(Kernels.sum(value).item / Float(max(1, value.count))), .mean(id)) }
    public func scaled(_ s: Float) -> Var { graph.record(Kernels.binary(.mul, value, .scalar(s)), .scale(id, s)) }
    public func reshaped(_ shape: [Int]) -> Var { graph.record(value.reshaped(shape), .reshape(id)) }
    /// Over the last axis.
    public func logSoftmax() -> Var { graph.record(Kernels.logSoftmax(value), .logSoftmax(id)) }

    /// Mean negative log-likelihood: self is log-probabilities (N, C), `labels` N class indices.
    public func nll(_ labels: [Int32]) -> Var {
        let v = value
        precondition(v.rank == 2 && v.shape[0] == labels.count, "nll: log-probs \(v.shape) vs \(labels.count) labels")
        let c = v.shape[1]
        var s: Double = 0
        v.withData { p in for (i, l) in labels.enumerated() { precondition(l >= 0 && Int(l) < c, "label \(l) outside 0..<\(c)"); s += Double(p[i * c + Int(l)]) } }
        return graph.record(.scalar(Float(-s / Double(max(1, labels.count)))), .nll(id, labels: labels))
    }

    /// self (B, M, K) · other (B, K, N) → (B, M, N).
    public func bmm(_ other: Var, transA: Bool = false, transB: Bool = false) -> Var {
        graph.record(Kernels.bmm(value, other.value, transA: transA, transB: transB), .bmm(id, other.id, transA: transA, transB: transB))
    }

    /// Output axis i is input axis `order[i]`.
    public func permuted(_ order: [Int]) -> Var { graph.record(Kernels.permute(value, order), .permute(id, order)) }

    /// Over the last axis.
    public func softmax() -> Var { graph.record(Kernels.softmax(value), .softmax(id)) }

    /// Layer norm over the last axis with γ, β of that width.
    public func layerNorm(_ gamma: Var, _ beta: Var, epsilon: Float = 1e-5) -> Var {
        let (y, means, inv) = Kernels.layerNorm(value, gamma.value, beta.value, epsilon: epsilon)
        return graph.record(y, .layerNorm(id, gamma.id, beta.id, means: means, inverseStd: inv))
    }

    /// Rows of this table (V, D) at `ids` → (ids.count, D).
    public func gather(_ ids: [Int32]) -> Var { graph.record(Kernels.gather(value, ids), .gather(id, ids: ids)) }

    /// self (N, in) · w (out, in)ᵀ + b (out) → (N, out), one GEMM with the bias as its initial value.
    /// On a graph that does not record (inference), row by row stable: each row's outputs are the same bits whatever
    /// other rows share its batch (`Kernels.linear(rowBlock:)`), so served requests equal batch jobs.
    public func linear(_ w: Var, _ b: Var?) -> Var {
        graph.record(graph.recording ? Kernels.linear(value, w.value, b?.value) : Kernels.linearRowStable(value, w.value, b?.value),
                     .linear(id, w.id, bias: b?.id))
    }

    /// x (N, C, H, W) ⊛ w (O, C, kh, kw) + b (O) → (N, O, Ho, Wo).
    public func conv2d(_ w: Var, _ b: Var?, stride: Int = 1, padding: Int = 0) -> Var {
        graph.record(ConvKernels.conv2d(value, w.value, b?.value, stride: stride, padding: padding),
                     .conv2d(id, w.id, bias: b?.id, stride: stride, padding: padding))
    }

    /// k×k pooling with the given stride (default k), no padding.
    public func pool2d(_ kind: ConvKernels.Pool, kernel k: Int, stride s: Int? = nil) -> Var {
        let (y, argmax) = ConvKernels.pool2d(kind, value, kernel: k, stride: s ?? k)
        return graph.record(y, .pool2d(kind, id, kernel: k, stride: s ?? k, argmax: argmax))
    }

    /// Rows (G·size, D) → (G, D): each run of `size` rows averaged (summed in row order, then divided).
    public func groupMean(_ size: Int) -> Var {
        precondition(value.rank == 2 && size >= 1 && value.shape[0] % size == 0, "groupMean: \(value.shape) in runs of \(size)")
        let g = value.shape[0] / size, d = value.shape[1]
        let y = Tensor(shape: [g, d]) { o in
            value.withData { p in
                for i in 0..<g {
                    for j in 0..<d {
                        var s: Float = 0
                        for r in 0..<size { s += p[(i * size + r) * d + j] }
                        o[i * d + j] = s / Float(size)
                    }
                }
            }
        }
        return graph.record(y, .groupMean(id, size: size))
    }

    /// Cross-entropy of logits (N, C) against class labels, averaged over N (PyTorch's default).
    public func crossEntropy(_ labels: [Int32]) -> Var { logSoftmax().nll(labels) }

    /// Mean squared error against `target` (same shape).
    public func mse(_ target: Var) -> Var {
        let d = self - target
        return (d * d).mean()
    }
}

/// A trainable tensor and its accumulated gradient.
public final class Parameter {
    public let name: String
    public var value: Tensor
    public var grad: Tensor?
    /// When set, `backward` leaves this parameter's gradient in this memory (e.g. inside an outgoing message) and
    /// `grad` reads it there: the linear rule's weight GEMM writes it in place, any other gradient is copied in at
    /// the end. Whoever sets it keeps the memory alive while `grad` is in use, then clears both.
    public var gradientBuffer: UnsafeMutableBufferPointer<Float>?
    public init(_ name: String, _ value: Tensor) {
        self.name = name
        self.value = value
    }
    public func zeroGrad() { grad = nil }
}

import Glibc

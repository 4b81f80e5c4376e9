/// A run of linear layers with elementwise activations between them — an MLP, or an MLP head — recorded as one op
/// and computed **feature-major**: each hidden layer's activations are stored transposed, (features, N), so every
/// large product of the training step is split over the engine's threads by the features of a layer (rows of W, of
/// its gradient, of the activations), never by the batch's rows. A thread then keeps the same features from one
/// product to the next: its rows of W — updated by the same thread in the optimizer's per-parameter split — and of
/// the activations and their gradients stay in its own core's caches. Stored sample-major, the forward products
/// were split by the batch's rows and every thread read all of every W, half of it just written by the other core.
/// docs/architecture.md, "Threads in the engine"; docs/performance.md, "Feature-major training steps".
///
/// The values are the same as the layer-by-layer ops' up to rounding (the products' K blocking adds the bias at a
/// different point); every number is the same whatever the engine's thread count (the products are cut where
/// `BLASTiling` says parts keep the whole product's bits, and each elementwise result is computed alone).
final class LinearChain {
    /// Per layer: the weight's var (out, in) and the bias's (out), if any.
    let weights: [Int], biases: [Int?]
    /// The activation after each layer but the last.
    let activations: [Kernels.Unary]
    /// Per hidden layer: pre-activation z and activation h, both (out, N).
    let hidden: [(z: Tensor, h: Tensor)]

    init(weights: [Int], biases: [Int?], activations: [Kernels.Unary], hidden: [(z: Tensor, h: Tensor)]) {
        self.weights = weights
        self.biases = biases
        self.activations = activations
        self.hidden = hidden
    }

    var inputs: [Int] { weights + biases.compactMap { $0 } }
}

extension Var {
    /// x (N, in) through `layers` — each x · Wᵀ + b — with `activations[i]` after layer i (one fewer than layers):
    /// (N, out of the last layer). On a graph that records, one feature-major op (`LinearChain`); otherwise (inference)
    /// the layer-by-layer ops, whose rows are stable (`linear`).
    public func linearChain(_ layers: [(weight: Var, bias: Var?)], activations: [Kernels.Unary]) -> Var {
        precondition(!layers.isEmpty && activations.count == layers.count - 1, "linearChain: \(layers.count) layers, \(activations.count) activations")
        guard graph.recording, layers.count >= 2, value.rank == 2 else {
            var y = linear(layers[0].weight, layers[0].bias)
            for (l, a) in zip(layers.dropFirst(), activations) { y = y.unary(a).linear(l.weight, l.bias) }
            return y
        }
        var input = value, featureMajor = false
        var hidden: [(z: Tensor, h: Tensor)] = []
        for (l, a) in zip(layers.dropLast(), activations) {
            // z = W · inputᵀ (out, N), then + b along each row
            var z = Kernels.matmul(l.weight.value, input, transB: !featureMajor)
            let h = Kernels.biasThenActivation(&z, l.bias?.value, a)
            hidden.append((z, h))
            input = h
            featureMajor = true
        }
        // The last layer back to (N, out): hᵀ · Wᵀ + b.
        let last = layers[layers.count - 1]
        var y = Kernels.matmul(input, last.weight.value, transA: true, transB: true)
        if let b = last.bias { y = Kernels.binary(.add, y, b.value) }
        let chain = LinearChain(weights: layers.map(\.weight.id), biases: layers.map { $0.bias?.id }, activations: activations, hidden: hidden)
        return graph.record(y, .linearChain(id, chain))
    }
}

extension Graph {
    /// The chain's derivative rule: from g (N, out) back through every layer, feature-major; a weight's gradient is
    /// written into `sink(w)` where given (an outgoing message).
    func chainDerivatives(_ x: Int, _ c: LinearChain, gradient g: Tensor, sink: (Int) -> UnsafeMutableBufferPointer<Float>?) -> [(Int, Tensor)] {
        var out: [(Int, Tensor)] = []
        let last = c.weights.count - 1
        let hLast = c.hidden[last - 1].h
        // Last layer: dW = gᵀ · h (out, in), db = Σ_rows g, gh = Wᵀ · gᵀ (in, N).
        out.append((c.weights[last], Kernels.matmul(g, hLast, transA: true, transB: true, into: sink(c.weights[last]))))
        if let b = c.biases[last] { out.append((b, Kernels.sumTo(g, shape: values[b].shape))) }
        var gh = Kernels.matmul(values[c.weights[last]], g, transA: true, transB: true)
        for l in stride(from: last - 1, through: 0, by: -1) {
            let (z, h) = c.hidden[l]
            let gz = Kernels.unaryBackward(c.activations[l], x: z, y: h, g: gh)
            let w = c.weights[l]
            // dW = gz · inputᵀ: the input is x (N, in) for the first layer, else the hidden layer before (in, N).
            out.append((w, l == 0 ? Kernels.matmul(gz, values[x], into: sink(w))
                                  : Kernels.matmul(gz, c.hidden[l - 1].h, transB: true, into: sink(w))))
            if let b = c.biases[l] { out.append((b, Kernels.sumAlongRows(gz))) }
            if l > 0 {
                gh = Kernels.matmul(values[w], gz, transA: true)
            } else if needsGradient[x] {
                out.append((x, Kernels.matmul(gz, values[w], transA: true)))
            }
        }
        return out
    }
}

extension Kernels {
    /// z (R, C) += b (R) along each row (z[r, j] + b[r]; no bias: z as it is), then op(z) → (R, C): one pass per row,
    /// rows split over the engine's threads (each element's result is computed alone: the same bits on any count).
    static func biasThenActivation(_ z: inout Tensor, _ b: Tensor?, _ op: Unary) -> Tensor {
        let rows = z.shape[0], cols = z.shape[1]
        if let b { precondition(b.count == rows, "bias of \(b.count) values for \(rows) rows") }
        if rows == 0 || cols == 0 { return Tensor(zeros: z.shape) }
        var h = Tensor(uninitialized: z.shape)
        let bias = b?.scalars ?? []
        bias.withUnsafeBufferPointer { pb in z.withMutableData { pz in h.withMutableData { ph in
            let (src, dst, bv) = (Unchecked(pz), Unchecked(ph), Unchecked(pb))
            splitOverThreads(total: rows, threads: BLASInfo.threads, minimumPart: max(1, 65_536 / max(1, cols))) { r in
                for i in r {
                    let zr = UnsafeMutableBufferPointer(rebasing: src.v[i * cols ..< (i + 1) * cols])
                    let hr = UnsafeMutableBufferPointer(rebasing: dst.v[i * cols ..< (i + 1) * cols])
                    if !bv.v.isEmpty { let v = bv.v[i]; for j in 0..<cols { zr[j] += v } }
                    unary(op, UnsafeBufferPointer(zr), into: hr)
                }
            }
        } } }
        return h
    }

    /// t (R, C) → (R): each row's sum, eight lanes of partial sums then added in a fixed order (the same bits
    /// whichever thread sums the row); rows split over the engine's threads.
    static func sumAlongRows(_ t: Tensor) -> Tensor {
        let rows = t.shape[0], cols = t.shape[1]
        if rows == 0 || cols == 0 { return Tensor(zeros: [rows]) }
        var out = Tensor(uninitialized: [rows])
        t.withData { pt in out.withMutableData { po in
            let (src, dst) = (Unchecked(pt), Unchecked(po))
            splitOverThreads(total: rows, threads: BLASInfo.threads, minimumPart: max(1, 65_536 / max(1, cols))) { r in
                for i in r {
                    let row = UnsafeRawPointer(src.v.baseAddress! + i * cols)
                    var lanes = SIMD8<Float>(repeating: 0), j = 0
                    while j + 8 <= cols {
                        lanes += row.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                        j += 8
                    }
                    var s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
                    while j < cols { s += row.load(fromByteOffset: j * 4, as: Float.self); j += 1 }
                    dst.v[i] = s
                }
            }
        } }
        return out
    }
}

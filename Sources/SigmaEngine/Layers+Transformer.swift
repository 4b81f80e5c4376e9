import Glibc

/// Layer normalisation over the last axis (PyTorch `nn.LayerNorm`: weight 1, bias 0 at init).
public final class LayerNorm: Layer {
    public let weight: Parameter, bias: Parameter
    public let epsilon: Float
    public init(_ width: Int, epsilon: Float = 1e-5, name: String = "norm") {
        weight = Parameter(name + ".weight", Tensor(shape: [width], repeating: 1))
        bias = Parameter(name + ".bias", Tensor(zeros: [width]))
        self.epsilon = epsilon
    }
    public func callAsFunction(_ x: Var) -> Var { x.layerNorm(x.graph.param(weight), x.graph.param(bias), epsilon: epsilon) }
    public var parameters: [Parameter] { [weight, bias] }
}

/// A lookup table of vectors (PyTorch `nn.Embedding`: N(0, 1) at init).
public final class Embedding {
    public let weight: Parameter
    public init(_ count: Int, _ width: Int, name: String = "embedding", rng: inout SeededRandom) {
        weight = Parameter(name + ".weight", .normal([count, width], std: 1, rng: &rng))
    }

    /// A table with given (e.g. loaded) weights.
    public init(weight: Tensor, name: String = "embedding") {
        self.weight = Parameter(name + ".weight", weight)
    }
    /// ids → (ids.count, width), recorded on `graph`.
    public func callAsFunction(_ ids: [Int32], graph: Graph) -> Var { graph.param(weight).gather(ids) }
    public var parameters: [Parameter] { [weight] }
}

/// softmax(q kᵀ / √d + mask) v for q, k, v (B, T, d) and an additive mask broadcastable to (B, T, T).
/// On a graph that does not record (inference), one fused kernel with the same bits and no (B, T, T) intermediates.
public func scaledDotProductAttention(_ q: Var, _ k: Var, _ v: Var, mask: Var? = nil) -> Var {
    let d = q.shape[2]
    let (b, t) = (q.shape[0], q.shape[1])
    if !q.graph.recording && k.shape == q.shape && v.shape == q.shape && (mask == nil || mask!.shape == [b, 1, t] || mask!.shape == [b, t, t]) {
        return q.graph.constant(Kernels.attention(q.value, k.value, v.value, mask: mask?.value, scale: 1 / Float(d).squareRoot()))
    }
    var scores = q.bmm(k, transB: true).scaled(1 / Float(d).squareRoot())
    if let m = mask { scores = scores + m }
    return scores.softmax().bmm(v)
}

/// Multi-head self-attention with separate query, key and value projections (BERT's layout).
public final class MultiHeadSelfAttention {
    public let query: Linear, key: Linear, value: Linear, output: Linear
    public let heads: Int, width: Int

    public init(width: Int, heads: Int, name: String = "attention", rng: inout SeededRandom) {
        precondition(width % heads == 0, "width \(width) is not divisible by \(heads) heads")
        self.width = width
        self.heads = heads
        query = Linear(width, width, name: name + ".query", rng: &rng)
        key = Linear(width, width, name: name + ".key", rng: &rng)
        value = Linear(width, width, name: name + ".value", rng: &rng)
        output = Linear(width, width, name: name + ".output", rng: &rng)
    }

    /// x (B·T, width) for `batch` sequences of length T; `keyPadding[b][t]` true where position t of sequence b is
    /// padding (not attended to). Returns (B·T, width).
    public func callAsFunction(_ x: Var, batch: Int, keyPadding: [[Bool]]? = nil) -> Var {
        let t = x.shape[0] / batch, dh = width / heads
        func split(_ y: Var) -> Var {   // (B·T, width) → (B·H, T, dh)
            y.reshaped([batch, t, heads, dh]).permuted([0, 2, 1, 3]).reshaped([batch * heads, t, dh])
        }
        var mask: Var? = nil
        if let pad = keyPadding { precondition(pad.count == batch && pad.allSatisfy { $0.count == t }, "key padding mask must be \(batch) × \(t)") }
        // Inference over sequences padded at their ends: each sequence's attention over its own length only, so its
        // bits do not depend on how long the other sequences of its batch are.
        if !x.graph.recording, let pad = keyPadding {
            let lengths = pad.map { p in p.firstIndex(of: true) ?? t }
            if zip(pad, lengths).allSatisfy({ p, n in p[n...].allSatisfy { $0 } }) {
                let q = split(query(x)), k = split(key(x)), v = split(value(x))
                let a = x.graph.constant(Kernels.attention(q.value, k.value, v.value, lengths: lengths.flatMap { Array(repeating: $0, count: heads) },
                                                           scale: 1 / Float(dh).squareRoot()))
                return output(a.reshaped([batch, heads, t, dh]).permuted([0, 2, 1, 3]).reshaped([batch * t, width]))
            }
        }
        if let pad = keyPadding {
            var m = [Float](repeating: 0, count: batch * heads * t)
            for b in 0..<batch { for h in 0..<heads { for j in 0..<t where pad[b][j] { m[(b * heads + h) * t + j] = -1e30 } } }
            mask = x.graph.constant(Tensor(shape: [batch * heads, 1, t], m))
        }
        let a = scaledDotProductAttention(split(query(x)), split(key(x)), split(value(x)), mask: mask)
        return output(a.reshaped([batch, heads, t, dh]).permuted([0, 2, 1, 3]).reshaped([batch * t, width]))
    }

    /// Inference over packed sequences: x (Σ lengths, width) holds sequence after sequence, no padding; each
    /// sequence attends over itself. The same bits as the padded call with a key-padding mask, for its real rows
    /// (row-stable products; each sequence's attention over its own length), without computing padded rows.
    public func callAsFunction(_ x: Var, lengths: [Int]) -> Var {
        precondition(!x.graph.recording, "packed sequences are for inference (a graph that does not record)")
        let dh = width / heads
        let a = Kernels.attention(packed: query(x).value, key(x).value, value(x).value, lengths: lengths, heads: heads, scale: 1 / Float(dh).squareRoot())
        return output(x.graph.constant(a))
    }

    public var parameters: [Parameter] { query.parameters + key.parameters + value.parameters + output.parameters }
}

/// A transformer encoder layer as PyTorch's `nn.TransformerEncoderLayer` (no dropout): post-norm (BERT's
/// arrangement, `norm_first=False`) h = LN₁(x + Attention(x)); y = LN₂(h + W₂ act(W₁ h)), or pre-norm
/// (`norm_first=True`) h = x + Attention(LN₁(x)); y = h + W₂ act(W₁ LN₂(h)); act GELU (BERT) or ReLU.
public final class TransformerEncoderLayer {
    public let attention: MultiHeadSelfAttention
    public let norm1: LayerNorm, norm2: LayerNorm
    public let linear1: Linear, linear2: Linear
    public let normFirst: Bool
    public let activation: Kernels.Unary

    public init(width: Int, heads: Int, hidden: Int, epsilon: Float = 1e-5, normFirst: Bool = false, activation: Kernels.Unary = .gelu,
                name: String = "", rng: inout SeededRandom) {
        let p = name.isEmpty ? "" : name + "."
        attention = MultiHeadSelfAttention(width: width, heads: heads, name: p + "self_attn", rng: &rng)
        linear1 = Linear(width, hidden, name: p + "linear1", rng: &rng)
        linear2 = Linear(hidden, width, name: p + "linear2", rng: &rng)
        norm1 = LayerNorm(width, epsilon: epsilon, name: p + "norm1")
        norm2 = LayerNorm(width, epsilon: epsilon, name: p + "norm2")
        self.normFirst = normFirst
        self.activation = activation
    }

    func block(_ x: Var, _ attend: (Var) -> Var) -> Var {
        func feedForward(_ h: Var) -> Var { linear2(linear1(h).unary(activation)) }
        if normFirst {
            let h = x + attend(norm1(x))
            return h + feedForward(norm2(h))
        }
        let h = norm1(x + attend(x))
        return norm2(h + feedForward(h))
    }

    /// x (B·T, width) → (B·T, width).
    public func callAsFunction(_ x: Var, batch: Int, keyPadding: [[Bool]]? = nil) -> Var {
        block(x) { attention($0, batch: batch, keyPadding: keyPadding) }
    }

    /// Inference over packed sequences (x: Σ lengths rows, no padding; see `MultiHeadSelfAttention(_:lengths:)`).
    public func callAsFunction(_ x: Var, lengths: [Int]) -> Var {
        block(x) { attention($0, lengths: lengths) }
    }

    public var parameters: [Parameter] {
        attention.parameters + linear1.parameters + linear2.parameters + norm1.parameters + norm2.parameters
    }
}

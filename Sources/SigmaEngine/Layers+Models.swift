/// Dropout with reproducible masks: element j of row r is zeroed with probability `p` (the rest scaled by
/// 1/(1−p)), drawn from `rowSeeds[r]` alone — so a row's mask does not depend on which process, lane or batch
/// computes it. Without row seeds (inference, evaluation) it passes its input through, as PyTorch's `eval()`.
public final class Dropout: Layer {
    public let p: Float
    /// One seed per row of the next batch (set before a training forward pass, cleared after).
    public var rowSeeds: [UInt64]? = nil
    public init(_ p: Float) { self.p = p }

    public func callAsFunction(_ x: Var) -> Var {
        guard let seeds = rowSeeds, p > 0, x.shape[0] > 0 else { return x }
        precondition(seeds.count == x.shape[0], "dropout: \(seeds.count) row seeds for \(x.shape[0]) rows")
        let width = x.value.count / x.shape[0], keep = 1 / (1 - p)
        let mask = Tensor(shape: x.shape) { m in
            for r in seeds.indices {
                var rng = SeededRandom(seed: seeds[r])
                for j in 0..<width { m[r * width + j] = rng.unit() < p ? 0 : keep }
            }
        }
        return x * x.graph.constant(mask)
    }

    public var parameters: [Parameter] { [] }

    /// The dropout layers of `model` (of a `Sequential`, in order).
    public static func all(in model: Layer) -> [Dropout] {
        if let d = model as? Dropout { return [d] }
        if let s = model as? Sequential { return s.layers.flatMap { all(in: $0) } }
        return []
    }
}

/// Rows of flat features (N, F) as (N, shape…): a network's input, e.g. images (N, C·H·W) → (N, C, H, W).
public final class Reshape: Layer {
    public let shape: [Int]
    public init(_ shape: [Int]) { self.shape = shape }
    public func callAsFunction(_ x: Var) -> Var { x.reshaped([x.shape[0]] + shape) }
    public var parameters: [Parameter] { [] }
}

/// A transformer encoder over token ids, with a linear head on the pooled states: token embedding + learned position
/// embedding → N encoder layers (post- or pre-norm; pre-norm ends with a final layer norm) → mean over positions
/// (or the first position's state) → linear. Rows of its input are T token ids (as floats, checked when the data is
/// read). Its state dict is that of PyTorch's
///
///     embed = nn.Embedding(vocab, width); position = nn.Embedding(length, width)
///     encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, heads, hidden, dropout=0, activation,
///                                     batch_first=True, norm_first), layers, norm=LayerNorm(width) if norm_first)
///     head = nn.Linear(width, outputs)
///
/// (`encoder.layers.i.self_attn.in_proj_weight` holds the query, key and value projections stacked).
public final class TransformerClassifier: Layer {
    public let embed: Embedding, position: Embedding
    public let layers: [TransformerEncoderLayer]
    public let finalNorm: LayerNorm?
    public let head: Linear
    public let meanPooling: Bool

    public init(vocab: Int, length: Int, width: Int, heads: Int, layers count: Int, hidden: Int, outputs: Int,
                normFirst: Bool = false, activation: Kernels.Unary = .gelu, meanPooling: Bool = true, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        embed = Embedding(vocab, width, name: "embed", rng: &rng)
        position = Embedding(length, width, name: "position", rng: &rng)
        layers = (0..<count).map { i in
            TransformerEncoderLayer(width: width, heads: heads, hidden: hidden, normFirst: normFirst, activation: activation,
                                    name: "encoder.layers.\(i)", rng: &rng)
        }
        finalNorm = normFirst ? LayerNorm(width, name: "encoder.norm") : nil
        head = Linear(width, outputs, name: "head", rng: &rng)
        self.meanPooling = meanPooling
    }

    /// x (N, T) token ids → (N, outputs).
    public func callAsFunction(_ x: Var) -> Var {
        let (n, t) = (x.shape[0], x.shape[1])
        let ids = x.value.withData { p in p.map { Int32($0) } }
        let positions = (0..<n).flatMap { _ in (0..<Int32(t)).map { $0 } }
        var h = embed(ids, graph: x.graph) + position(positions, graph: x.graph)
        for l in layers { h = l(h, batch: n) }
        if let norm = finalNorm { h = norm(h) }
        let pooled = meanPooling ? h.groupMean(t) : h.gather((0..<Int32(n)).map { $0 * Int32(t) })
        return head(pooled)
    }

    public var parameters: [Parameter] {
        embed.parameters + position.parameters + layers.flatMap(\.parameters) + (finalNorm?.parameters ?? []) + head.parameters
    }

    /// PyTorch's tensors, each made of these parameters stacked along their first axis.
    var stateTensors: [(name: String, parts: [Parameter])] {
        var out: [(String, [Parameter])] = []
        for p in parameters where !p.name.contains(".self_attn.") { out.append((p.name, [p])) }
        for (i, l) in layers.enumerated() {
            let a = l.attention, prefix = "encoder.layers.\(i).self_attn."
            out.append((prefix + "in_proj_weight", [a.query.weight, a.key.weight, a.value.weight]))
            out.append((prefix + "in_proj_bias", [a.query.bias!, a.key.bias!, a.value.bias!]))
            out.append((prefix + "out_proj.weight", [a.output.weight]))
            out.append((prefix + "out_proj.bias", [a.output.bias!]))
        }
        return out
    }

    public var stateDict: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: stateTensors.map { name, parts in
            guard parts.count > 1 else { return (name, parts[0].value) }
            let shape = [parts.reduce(0) { $0 + $1.value.shape[0] }] + parts[0].value.shape.dropFirst()
            return (name, Tensor(shape: shape) { o in
                var at = 0
                for p in parts { p.value.withData { (o.baseAddress! + at).update(from: $0.baseAddress!, count: $0.count); at += $0.count } }
            })
        })
    }

    public func load(_ tensors: [String: Tensor], file: String) throws {
        for (name, parts) in stateTensors {
            guard let t = tensors[name] else {
                throw FormatError(file: file, problem: "tensor '\(name)' missing (file has \(tensors.count) tensors\(tensors.count <= 12 ? ": " + tensors.keys.sorted().joined(separator: ", ") : ""))")
            }
            let expected = [parts.reduce(0) { $0 + $1.value.shape[0] }] + parts[0].value.shape.dropFirst()
            guard t.shape == expected else { throw FormatError(file: file, problem: "tensor '\(name)' has shape \(t.shape), the model expects \(expected)") }
            var at = 0
            t.withData { src in
                for p in parts {
                    let n = p.value.count
                    p.value = Tensor(shape: p.value.shape, Array(src[at..<at + n]))
                    at += n
                }
            }
        }
    }
}

/// A BERT-family encoder with a linear classification head on the mean of its last hidden states (sentence-
/// transformers' pooling), for fine-tuning. Rows of its input are `[length, id₀, id₁, …]` (token ids padded with 0
/// to the row's width). `frozen`: the encoder's weights stay as loaded and only the head trains — the encoder then
/// runs as inference (packed, no tape), so a step costs a forward pass. Its state dict is the encoder's Hugging Face
/// names under `bert.` and the head as `classifier.weight`, `classifier.bias`.
public final class BertClassifier: Layer {
    public let encoder: BertEncoder
    public let head: Linear
    public let frozen: Bool

    public init(modelDirectory dir: String, classes: Int, frozen: Bool, seed: UInt64) throws {
        encoder = try BertEncoder(modelDirectory: dir)
        var rng = SeededRandom(seed: seed)
        head = Linear(encoder.config.hidden, classes, name: "classifier", rng: &rng)
        self.frozen = frozen
    }

    /// Token ids → the rows this model reads: `[length, ids…]` each, padded with 0 to the longest.
    public static func rows(_ ids: [[Int32]]) -> Tensor {
        let width = (ids.map(\.count).max() ?? 0) + 1
        return Tensor(shape: [ids.count, width]) { x in
            for (r, seq) in ids.enumerated() {
                x[r * width] = Float(seq.count)
                for (j, id) in seq.enumerated() { x[r * width + 1 + j] = Float(id) }
            }
        }
    }

    /// Class logits (texts.count, classes) of `texts`: each text's the same bits in any batch (the encoder packs
    /// sequences, the head is row-stable) — what `infer` computes for the same lines.
    public func logits(_ texts: [String]) -> Tensor {
        self(Graph(recording: false).constant(Self.rows(encoder.tokenize(texts)))).value
    }

    /// Rows `[length, ids…]` → each row's token ids.
    public static func sequences(_ x: Tensor) -> [[Int32]] {
        let (n, w) = (x.shape[0], x.count / max(1, x.shape[0]))
        return x.withData { p in
            (0..<n).map { r in
                let len = min(w - 1, max(0, Int(p[r * w])))
                return (0..<len).map { Int32(p[r * w + 1 + $0]) }
            }
        }
    }

    public func callAsFunction(_ x: Var) -> Var {
        let seqs = Self.sequences(x.value)
        if frozen || !x.graph.recording { return head(x.graph.constant(encoder.pooled(seqs, normalized: false))) }
        return head(trainingPooled(seqs, graph: x.graph))
    }

    /// The masked mean of the last hidden states, recorded: sequences padded to the longest, padding keys masked,
    /// padded rows left out of the mean (a constant averaging matrix).
    func trainingPooled(_ seqs: [[Int32]], graph g: Graph) -> Var {
        let b = seqs.count, t = max(1, seqs.map(\.count).max() ?? 1)
        let ids = seqs.flatMap { $0 + [Int32](repeating: 0, count: t - $0.count) }
        let positions = (0..<b).flatMap { _ in (0..<Int32(t)).map { $0 } }
        var h = encoder.word(ids, graph: g) + encoder.position(positions, graph: g) + encoder.tokenType([Int32](repeating: 0, count: b * t), graph: g)
        h = encoder.embeddingNorm(h)
        let padding = seqs.map { s in (0..<t).map { $0 >= s.count } }
        for l in encoder.layers { h = l(h, batch: b, keyPadding: padding) }
        let average = Tensor(shape: [b, b * t]) { m in
            for (i, s) in seqs.enumerated() where !s.isEmpty { for j in 0..<s.count { m[i * b * t + i * t + j] = 1 / Float(s.count) } }
        }
        return g.constant(average).matmul(h)
    }

    public var parameters: [Parameter] { frozen ? head.parameters : encoder.namedParameters.map(\.1) + head.parameters }

    public var stateDict: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: encoder.namedParameters.map { ("bert." + $0.0, $0.1.value) } + head.parameters.map { ($0.name, $0.value) })
    }

    /// The head from `classifier.*`; the encoder too when the file has it (a fine-tuned model), else as loaded.
    public func load(_ tensors: [String: Tensor], file: String) throws {
        let encoderNamed = encoder.namedParameters
        let hasEncoder = tensors["bert." + encoderNamed[0].0] != nil
        for (name, p) in (hasEncoder ? encoderNamed.map { ("bert." + $0.0, $0.1) } : []) + head.parameters.map({ ($0.name, $0) }) {
            guard let t = tensors[name] else { throw FormatError(file: file, problem: "tensor '\(name)' missing") }
            guard t.shape == p.value.shape else { throw FormatError(file: file, problem: "tensor '\(name)' has shape \(t.shape), the model expects \(p.value.shape)") }
            p.value = t
        }
    }
}

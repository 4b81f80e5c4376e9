import Foundation

/// A BERT-family sentence encoder loaded from a Hugging Face model folder (`config.json`, `model.safetensors`,
/// `vocab.txt`, optionally `sentence_bert_config.json`): WordPiece → embeddings → post-norm encoder layers →
/// attention-masked mean pooling → L2 normalisation (the all-MiniLM-L6-v2 recipe).
public final class BertEncoder {
    public struct Config: Sendable, Equatable {
        public var hidden: Int, layers: Int, heads: Int, intermediate: Int, maxPositions: Int, typeVocab: Int, vocab: Int
        public var epsilon: Float

        /// Parameters the encoder allocates for this config (saturating at `Int.max`): embedding tables, and per layer
        /// four attention projections, two feed-forward ones and two layer norms.
        public var parameterCount: Int {
            func mul(_ a: Int, _ b: Int) -> Int { let (r, o) = a.multipliedReportingOverflow(by: b); return o ? .max : r }
            func add(_ xs: Int...) -> Int { xs.reduce(0) { let (r, o) = $0.addingReportingOverflow($1); return o ? .max : r } }
            let embeddings = mul(add(vocab, maxPositions, typeVocab, 2), hidden)
            let layer = add(mul(4, add(mul(hidden, hidden), hidden)), mul(2, mul(hidden, intermediate)), intermediate, hidden, mul(4, hidden))
            return add(embeddings, mul(layers, layer))
        }
    }

    public let config: Config
    public let tokenizer: WordPieceTokenizer
    /// Longest token sequence fed to the model ([CLS] and [SEP] included).
    public let maxLength: Int
    let word: Embedding, position: Embedding, tokenType: Embedding
    let embeddingNorm: LayerNorm
    let layers: [TransformerEncoderLayer]

    /// Reads and checks `config.json` of a model folder (nothing else is read or allocated).
    public static func config(modelDirectory dir: String) throws -> Config {
        let configPath = dir + "/config.json"
        guard let cdata = FileManager.default.contents(atPath: configPath),
              let c = try? JSONSerialization.jsonObject(with: cdata) as? [String: Any] else {
            throw FormatError(file: configPath, problem: "missing or not a JSON object")
        }
        // (each size a whole number within what any BERT has — 2^24 — so that no table's size overflows; the
        // spec's limits then bound the model's parameters and width)
        func int(_ k: String) throws -> Int {
            guard let n = c[k] as? NSNumber, String(cString: n.objCType) != "c", let v = Int(exactly: n.doubleValue), v > 0, v <= 1 << 24 else {
                throw FormatError(file: configPath, problem: "'\(k)' missing or not a whole number between 1 and 2^24")
            }
            return v
        }
        if let act = c["hidden_act"] as? String, act != "gelu" {
            throw FormatError(file: configPath, problem: "hidden_act is not supported (gelu)")
        }
        let config = Config(hidden: try int("hidden_size"), layers: try int("num_hidden_layers"), heads: try int("num_attention_heads"),
                            intermediate: try int("intermediate_size"), maxPositions: try int("max_position_embeddings"),
                            typeVocab: try int("type_vocab_size"), vocab: try int("vocab_size"),
                            epsilon: (c["layer_norm_eps"] as? NSNumber)?.floatValue ?? 1e-12)
        guard config.hidden % config.heads == 0 else {
            throw FormatError(file: configPath, problem: "hidden_size \(config.hidden) is not divisible by num_attention_heads \(config.heads)")
        }
        guard config.maxPositions >= 2 else {
            throw FormatError(file: configPath, problem: "max_position_embeddings is \(config.maxPositions); a text takes at least 2 positions ([CLS] and [SEP])")
        }
        return config
    }

    public init(modelDirectory dir: String) throws {
        config = try BertEncoder.config(modelDirectory: dir)
        maxLength = Self.maxLength(modelDirectory: dir, config: config)
        tokenizer = try WordPieceTokenizer(vocabPath: dir + "/vocab.txt")
        // (a token's id is its line: a repeated or blank line makes ids past the count of distinct tokens)
        let largest = Int(tokenizer.vocab.values.max() ?? -1)
        guard largest < config.vocab else {
            throw FormatError(file: dir + "/vocab.txt", problem: "token ids (line numbers) reach \(largest); config vocab_size is \(config.vocab)")
        }

        var rng = SeededRandom(seed: 0)
        // Zero tables: every weight is replaced from model.safetensors below.
        word = Embedding(weight: Tensor(zeros: [config.vocab, config.hidden]), name: "word")
        position = Embedding(weight: Tensor(zeros: [config.maxPositions, config.hidden]), name: "position")
        tokenType = Embedding(weight: Tensor(zeros: [config.typeVocab, config.hidden]), name: "type")
        embeddingNorm = LayerNorm(config.hidden, epsilon: config.epsilon, name: "embnorm")
        let cfg = config
        var built: [TransformerEncoderLayer] = []
        for i in 0..<cfg.layers {
            built.append(TransformerEncoderLayer(width: cfg.hidden, heads: cfg.heads, hidden: cfg.intermediate, epsilon: cfg.epsilon,
                                                 name: "L\(i)", rng: &rng))
        }
        layers = built

        let weightsPath = dir + "/model.safetensors"
        let w = try SafeTensors.read(path: weightsPath)
        let prefix = w["embeddings.word_embeddings.weight"] == nil && w["bert.embeddings.word_embeddings.weight"] != nil ? "bert." : ""
        for (name, p) in namedParameters {
            guard let t = w[prefix + name] else { throw FormatError(file: weightsPath, problem: "tensor '\(prefix + name)' missing") }
            guard t.shape == p.value.shape else {
                throw FormatError(file: weightsPath, problem: "tensor '\(prefix + name)' has shape \(t.shape), config.json implies \(p.value.shape)")
            }
            p.value = t
        }
    }

    /// The longest token sequence the model takes: sentence_bert_config.json's max_seq_length, within the position table.
    public static func maxLength(modelDirectory dir: String, config: Config) -> Int {
        if let s = FileManager.default.contents(atPath: dir + "/sentence_bert_config.json"),
           let j = try? JSONSerialization.jsonObject(with: s) as? [String: Any], let m = (j["max_seq_length"] as? NSNumber)?.intValue, m > 0 {
            return min(max(m, 2), config.maxPositions)
        }
        return config.maxPositions
    }

    /// Every parameter under its Hugging Face `BertModel` state-dict name (what model.safetensors holds).
    public var namedParameters: [(String, Parameter)] {
        var out: [(String, Parameter)] = [("embeddings.word_embeddings.weight", word.weight), ("embeddings.position_embeddings.weight", position.weight),
                                          ("embeddings.token_type_embeddings.weight", tokenType.weight),
                                          ("embeddings.LayerNorm.weight", embeddingNorm.weight), ("embeddings.LayerNorm.bias", embeddingNorm.bias)]
        for (i, l) in layers.enumerated() {
            let hf = "encoder.layer.\(i)."
            let pairs: [(Linear, String)] = [(l.attention.query, "attention.self.query"), (l.attention.key, "attention.self.key"),
                                             (l.attention.value, "attention.self.value"), (l.attention.output, "attention.output.dense"),
                                             (l.linear1, "intermediate.dense"), (l.linear2, "output.dense")]
            for (lin, name) in pairs { out += [(hf + name + ".weight", lin.weight), (hf + name + ".bias", lin.bias!)] }
            for (norm, name) in [(l.norm1, "attention.output.LayerNorm"), (l.norm2, "output.LayerNorm")] {
                out += [(hf + name + ".weight", norm.weight), (hf + name + ".bias", norm.bias)]
            }
        }
        return out
    }

    /// Token ids of each text, truncated to `maxLength`.
    public func tokenize(_ texts: [String]) -> [[Int32]] { texts.map { tokenizer.encode($0, maxLength: maxLength) } }

    /// L2-normalised mean-pooled embeddings (texts.count, hidden), in input order. Texts are batched by length;
    /// batches run on `threads` OS threads at once, each with single-threaded BLAS (many small GEMMs parallelise
    /// better across batches than inside OpenBLAS). Results do not depend on `threads`.
    public func embed(_ texts: [String], batchSize: Int = 32, threads: Int = BLASInfo.threads) -> Tensor {
        let ids = tokenize(texts)
        let chunks = Self.batches(lengths: ids.map(\.count), batchSize: batchSize)
        let results = ResultSlots(count: chunks.count)
        let next = NextIndex()
        let work: @Sendable () -> Void = { [self] in
            while let c = next.take(below: chunks.count) {
                results.set(c, embedBatch(chunks[c].map { ids[$0] }))
            }
        }
        let n = max(1, min(threads, chunks.count))
        let savedThreads = BLASInfo.threads
        if n > 1 { BLASInfo.setThreads(1) }
        let helpers = (1..<max(1, n)).map { _ in Thread.detachedJoinable(work) }
        work()
        for h in helpers { h.join() }
        if n > 1 { BLASInfo.setThreads(savedThreads) }
        var out = Tensor(zeros: [texts.count, config.hidden])
        out.withMutableData { po in
            for (c, chunk) in chunks.enumerated() {
                results.get(c).withData { pv in
                    for (k, row) in chunk.enumerated() {
                        (po.baseAddress! + row * config.hidden).update(from: pv.baseAddress! + k * config.hidden, count: config.hidden)
                    }
                }
            }
        }
        return out
    }

    /// The batches `embed` runs, as indices into its input: sorted by token count (so a batch pads little), then
    /// `batchSize` at a time.
    public static func batches(lengths: [Int], batchSize: Int) -> [[Int]] {
        let order = lengths.indices.sorted { lengths[$0] < lengths[$1] }
        let size = max(1, batchSize)
        return stride(from: 0, to: order.count, by: size).map { Array(order[$0..<min($0 + size, order.count)]) }
    }

    /// Floating-point operations of the matrix products in `embed` over sequences of these token counts (2 per
    /// multiply-add): per padded token and layer the four projections and the two feed-forward products, and per
    /// batch and layer attention's two batched products (t² · hidden multiply-adds each per sequence). Time can not
    /// go below this over the machine's GEMM rate; the other kernels (GELU, layer norm, softmax) come on top.
    public func matmulFLOPs(lengths: [Int], batchSize: Int) -> Double {
        let h = Double(config.hidden), f = Double(config.intermediate), layers = Double(config.layers)
        var total = 0.0
        for batch in Self.batches(lengths: lengths, batchSize: batchSize) {
            let t = Double(batch.map { lengths[$0] }.max() ?? 0), sequences = Double(batch.count)
            let projections: Double = sequences * t * (4 * h * h + 2 * h * f)
            let attention: Double = 2 * sequences * t * t * h
            total += layers * 2 * (projections + attention)
        }
        return total
    }

    /// One batch → (batch, hidden) pooled, normalised vectors. The sequences are packed, not padded: each token row
    /// goes through the row-stable products once, and each sequence attends over itself — so a text's vector is the
    /// same bits in any batch (docs/architecture.md, "Row-stable inference").
    func embedBatch(_ batch: [[Int32]]) -> Tensor { pooled(batch, normalized: true) }

    /// Each sequence's last hidden states averaged over its tokens (and L2-normalised when `normalized`), packed.
    public func pooled(_ batch: [[Int32]], normalized: Bool) -> Tensor {
        let b = batch.count, h = config.hidden
        let flat = batch.flatMap { $0 }, positions = batch.flatMap { $0.indices.map(Int32.init) }
        let g = Graph(recording: false)
        var x = word(flat, graph: g) + position(positions, graph: g) + tokenType([Int32](repeating: 0, count: flat.count), graph: g)
        x = embeddingNorm(x)
        let lengths = batch.map(\.count)
        for l in layers { x = l(x, lengths: lengths) }
        let states = x.value
        var pooled = Tensor(zeros: [b, h])
        states.withData { ps in pooled.withMutableData { pp in
            var offset = 0
            for i in 0..<b {
                let n = batch[i].count
                defer { offset += n }
                for j in 0..<n { for k in 0..<h { pp[i * h + k] += ps[(offset + j) * h + k] } }
                var norm: Float = 0
                for k in 0..<h { pp[i * h + k] /= Float(n); norm += pp[i * h + k] * pp[i * h + k] }
                guard normalized else { continue }
                let s = 1 / max(norm.squareRoot(), 1e-12)
                for k in 0..<h { pp[i * h + k] *= s }
            }
        } }
        return pooled
    }
}

extension BertEncoder: @unchecked Sendable {}   // immutable after init; batches only read the weights

/// Results written by worker threads, one slot each.
final class ResultSlots: @unchecked Sendable {
    private var slots: [Tensor?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ t: Tensor) { lock.lock(); slots[i] = t; lock.unlock() }
    func get(_ i: Int) -> Tensor { lock.lock(); defer { lock.unlock() }; return slots[i]! }
}

/// Hands out 0, 1, 2, … to worker threads.
final class NextIndex: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

/// A joinable OS thread for compute (never a Swift task: compute must not occupy the cooperative pool).
final class JoinableThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    init(_ body: @escaping @Sendable () -> Void) {
        let t = Thread { [done] in
            body()
            done.signal()
        }
        t.stackSize = 8 << 20
        t.start()
    }
    func join() { done.wait() }
}

extension Thread {
    static func detachedJoinable(_ body: @escaping @Sendable () -> Void) -> JoinableThread { JoinableThread(body) }
}

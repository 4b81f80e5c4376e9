import Foundation
import SigmaModel

/// `kind: serve` — a deployment: a model kept loaded on workers and answering requests (`sigma deploy`;
/// docs/serving.md). Not a job: submitting one is refused, naming `sigma deploy`.
public struct ServeSpec: JobKindSpec {
    /// What answers: a sentence-embedding model folder, or a trained model (an MLP, CNN or transformer on rows of
    /// floats, or a fine-tuned encoder classifier on texts).
    public enum Model: Codable, Sendable, Equatable {
        case embed(folder: String)
        case mlp(ModelSpec)

        /// "embed", or the trained model's kind: "mlp", "cnn" or "transformer".
        public var kind: String {
            switch self {
            case .embed: "embed"
            case .mlp(let m): m.kind
            }
        }
    }

    /// The model's name in every API (`/v1/embeddings`'s `model`, `/v2/models/NAME`, `/predict/NAME`).
    public var name: String
    public var model: Model
    /// Workers that keep the model loaded; 0: every worker.
    public var replicas: Int
    /// Rows (texts) per batch at most, and the longest a request waits for a fuller batch while every replica is busy.
    public var maxBatch: Int
    public var maxWaitMs: Double
    /// Most tokens (texts × longest text) in one batch of an embedding model.
    public var maxTokens: Int
    /// Requests queued at most; more are answered 429 (retry later).
    public var queueLimit: Int
    /// A request not answered within this is answered 504 (dropped before batching if still queued).
    public var timeoutMs: Int

    public init(name: String, model: Model, replicas: Int = 1, maxBatch: Int = 32, maxWaitMs: Double = 5, maxTokens: Int = 16384,
                queueLimit: Int = 1024, timeoutMs: Int = 30000) {
        self.name = name
        self.model = model
        self.replicas = replicas
        self.maxBatch = maxBatch
        self.maxWaitMs = maxWaitMs
        self.maxTokens = maxTokens
        self.queueLimit = queueLimit
        self.timeoutMs = timeoutMs
    }

    public func validate(limits: SpecLimits = .standard) throws {
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), name.first != "." else {
            throw SpecError(field: "name", problem: "must be 1…64 letters, digits, '-', '_' or '.' (it is part of URLs), got '\(name.prefix(80))'")
        }
        switch model {
        case .embed(let folder):
            guard !folder.isEmpty else { throw SpecError(field: "model.embed", problem: "empty path") }
        case .mlp(let m):
            try m.validate("model.", limits: limits)
            guard m.weights != nil else { throw SpecError(field: "model.weights", problem: "missing; a served model needs trained weights (safetensors)") }
        }
        guard replicas >= 0, replicas <= 1024 else { throw SpecError(field: "replicas", problem: "must be a count from 1 to 1024, or all; got \(replicas)") }
        guard maxBatch >= 1, maxBatch <= 4096 else { throw SpecError(field: "batching.max_batch", problem: "must be between 1 and 4096, got \(maxBatch)") }
        guard maxWaitMs >= 0, maxWaitMs <= 10_000 else { throw SpecError(field: "batching.max_wait_ms", problem: "must be between 0 and 10000, got \(maxWaitMs)") }
        guard maxTokens >= 1, maxTokens <= 1 << 24 else { throw SpecError(field: "batching.max_tokens", problem: "must be between 1 and 16777216, got \(maxTokens)") }
        guard queueLimit >= 1, queueLimit <= 1_000_000 else { throw SpecError(field: "queue_limit", problem: "must be between 1 and 1000000, got \(queueLimit)") }
        guard timeoutMs >= 1, timeoutMs <= 3_600_000 else { throw SpecError(field: "timeout_ms", problem: "must be between 1 and 3600000, got \(timeoutMs)") }
    }
}

extension ServeSpec {
    static func parse(_ f: inout Fields, base: String?) throws -> ServeSpec {
        let name = try f.string("name")
        var m = try f.mapping("model", expected: "{embed: MODEL-FOLDER}, or {mlp: [64, 128, 10], activation: relu, weights: FILE.safetensors} (or a cnn or transformer)")
        let model: Model
        if let folder = try m.optionalString("embed") {
            try m.rejectUnknown()
            model = .embed(folder: resolvePath(folder, base))
        } else {
            model = .mlp(try ModelSpec.parse(mapping: &m, base: base))
        }
        var spec = ServeSpec(name: name, model: model)
        if let r = f.take("replicas") {
            guard r.scalar != nil, let s = r.string else { throw SpecError(field: "replicas", problem: "expected a count or all") }
            if s == "all" {
                spec.replicas = 0
            } else if let n = Int(s), n >= 1 {
                spec.replicas = n
            } else {
                throw SpecError(field: "replicas", problem: "expected a count from 1 or all, got '\(s.prefix(40))'")
            }
        }
        if f.has("batching") {
            var b = try f.mapping("batching", expected: "{max_batch: 32, max_wait_ms: 5, max_tokens: 16384}")
            spec.maxBatch = try b.optionalInt("max_batch") ?? spec.maxBatch
            spec.maxWaitMs = try b.optionalDouble("max_wait_ms") ?? spec.maxWaitMs
            spec.maxTokens = try b.optionalInt("max_tokens") ?? spec.maxTokens
            try b.rejectUnknown()
        }
        spec.queueLimit = try f.optionalInt("queue_limit") ?? spec.queueLimit
        spec.timeoutMs = try f.optionalInt("timeout_ms") ?? spec.timeoutMs
        try f.rejectUnknown()
        return spec
    }
}

import Foundation
import SigmaModel

/// `kind: embed` — sentence embeddings of a text file, one line per sentence, with a BERT-family encoder.
public struct EmbedJob: JobKindSpec {
    public var name: String
    /// Hugging Face model folder (config.json, model.safetensors, vocab.txt).
    public var model: String
    /// UTF-8 text file, one sentence per line.
    public var input: String
    /// Lines per batch; shards are whole batches.
    public var batchSize: Int
    public var output: String?
    /// Where workers get the text file and the model folder's files (nil: shared).
    public var inputTransport: InputTransport?

    public init(name: String = "embed", model: String, input: String, batchSize: Int = 32, output: String? = nil) {
        self.name = name
        self.model = model
        self.input = input
        self.batchSize = batchSize
        self.output = output
    }

    /// (The model folder's sizes are checked against `limits` when its config.json is read.)
    public func validate(limits: SpecLimits = .standard) throws {
        guard !model.isEmpty else { throw SpecError(field: "model", problem: "empty path") }
        guard !input.isEmpty else { throw SpecError(field: "input", problem: "empty path") }
        guard batchSize >= 1, batchSize <= 4096 else { throw SpecError(field: "batch_size", problem: "must be between 1 and 4096, got \(batchSize)") }
    }
}

extension EmbedJob {
    static func parse(_ f: inout Fields, base: String?) throws -> EmbedJob {
        var spec = EmbedJob(name: try f.optionalString("name") ?? "embed", model: resolvePath(try f.string("model"), base),
                            input: resolvePath(try f.string("input"), base), batchSize: try f.optionalInt("batch_size") ?? 32,
                            output: try f.optionalString("output"))
        spec.inputTransport = try InputTransport.parse(f.optionalString("input_transport"))
        try f.rejectUnknown()
        return spec
    }
}

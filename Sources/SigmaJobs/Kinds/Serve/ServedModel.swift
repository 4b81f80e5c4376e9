import Foundation
import SigmaEngine
import SigmaModel
import SigmaProtocol

/// A deployment's model as a worker keeps it loaded: outputs for a batch of inputs, each row's outputs the same
/// bits whatever else is in its batch (the batch jobs' too: `infer` logits, `embed` vectors).
public final class ServedModel: @unchecked Sendable {   // (read-only once built; one serving thread calls it)
    enum Engine {
        case model(Layer, inputs: Int, tokens: Int?)
        case embed(BertEncoder)
        case classify(BertClassifier)
    }

    let engine: Engine
    /// Floats per output row (logits, or the embedding's dimension).
    public let width: Int
    /// Most texts per forward pass (an embedding model's batches; `batching.max_batch`).
    let maxBatch: Int
    /// The classes' names, class i the i-th, when the weights' metadata holds them (`sigma.labels`, written by a train
    /// job whose data named its classes); empty otherwise.
    public let labels: [String]

    /// Loads the model `spec` names (its paths real paths by now), checked against `limits` first.
    public init(_ spec: ServeSpec, limits: SpecLimits = .standard) throws {
        maxBatch = spec.maxBatch
        var weights: String? = nil
        switch spec.model {
        case .mlp(let m) where m.encoder != nil:
            try Self.checkEncoder(m.encoder!.folder, field: "model.encoder", limits: limits)
            guard let classifier = try MLModels.build(m, seed: 0) as? BertClassifier else { throw JobError("model.encoder: not a text classifier") }
            engine = .classify(classifier)
            width = m.outputs
            weights = m.weights
        case .mlp(let m):
            engine = .model(try MLModels.build(m, seed: 0), inputs: m.inputs, tokens: m.tokens)
            width = m.outputs
            weights = m.weights
        case .embed(let folder):
            width = try Self.checkEncoder(folder, field: "model.embed", limits: limits).hidden
            engine = .embed(try BertEncoder(modelDirectory: folder))
        }
        let classes = width
        labels = weights.flatMap { ServedModel.labels(weightsAt: $0, classes: classes) } ?? []
    }

    /// `sigma.labels` of the weights' metadata: a JSON array of at most `classes` names (nil when absent or not that).
    static func labels(weightsAt path: String, classes: Int) -> [String]? {
        guard let text = (try? SafeTensors.metadata(path: path))?["sigma.labels"],
              let names = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String],
              !names.isEmpty, names.count <= classes else { return nil }
        return names
    }

    /// The config of the encoder in `folder`, refused (naming `field`) when it exceeds this worker's limits.
    @discardableResult
    static func checkEncoder(_ folder: String, field: String, limits: SpecLimits) throws -> BertEncoder.Config {
        let c = try BertEncoder.config(modelDirectory: folder)
        guard c.layers <= limits.layers, c.hidden <= limits.width, c.intermediate <= limits.width, c.parameterCount <= limits.parameters else {
            throw JobError("\(field): \(c.layers) layers, width \(max(c.hidden, c.intermediate)), \(c.parameterCount) parameters exceed this worker's limits")
        }
        return c
    }

    /// What this model takes, for errors: "rows of 64 features" or "texts".
    public var takes: String {
        switch engine {
        case .model(_, let inputs, let tokens): tokens.map { "rows of \(inputs) token ids below \($0)" } ?? "rows of \(inputs) features"
        case .embed, .classify: "texts"
        }
    }

    /// Outputs for every row (text) of `input`, `width` floats each, in order.
    public func run(_ input: ServeInput) throws -> [Float] {
        switch (engine, input) {
        case (.model(let model, let inputs, let tokens), .rows(let w, let values)):
            guard w == inputs else { throw JobError("this model takes rows of \(inputs) features, got \(w)") }
            guard !values.isEmpty else { return [] }
            if let vocab = tokens, let bad = values.firstIndex(where: { !($0 >= 0 && $0 < Float(vocab) && $0 == $0.rounded()) }) {
                throw JobError("row \(bad / w + 1), position \(bad % w): token ids must be integers in 0..<\(vocab), got \(values[bad])")
            }
            let x = Tensor(shape: [values.count / w, w], values)
            return model(Graph(recording: false).constant(x)).value.withData { Array($0) }
        case (.embed(let encoder), .texts(let texts)):
            guard !texts.isEmpty else { return [] }
            return encoder.embed(texts, batchSize: maxBatch, threads: 1).withData { Array($0) }
        case (.classify(let classifier), .texts(let texts)):
            guard !texts.isEmpty else { return [] }
            return classifier.logits(texts).withData { Array($0) }
        default:
            throw JobError("this model takes \(takes), got \(input.summary)")
        }
    }

    /// Tokens of each text (a text model's batches are bounded by them); nil for a model of rows.
    public func tokenCounts(_ texts: [String]) -> [Int]? {
        switch engine {
        case .embed(let encoder): encoder.tokenize(texts).map(\.count)
        case .classify(let classifier): classifier.encoder.tokenize(texts).map(\.count)
        case .model: nil
        }
    }
}

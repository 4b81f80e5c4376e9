import SigmaModel
import Foundation
import Yams

/// A model the engine builds from a spec: an MLP (`mlp: [widths]`), a CNN (`cnn: {input, layers}`) or a transformer
/// encoder classifier (`transformer: {...}`). Weights come from a safetensors file with PyTorch state-dict names
/// (`0.weight`, `0.bias`, `2.weight`, …, optionally under `prefix`), or a seeded initialisation.
public struct ModelSpec: Codable, Sendable, Equatable {
    /// Layer widths, input first (an MLP; empty for the other kinds).
    public var mlp: [Int]
    /// Activation between hidden layers: relu, gelu or tanh.
    public var activation: String
    /// Safetensors file to start from (required for infer/eval).
    public var weights: String?
    /// Prefix of the tensor names in `weights`, e.g. "net." for a state dict saved from a wrapping module.
    public var prefix: String
    public var cnn: CNNSpec?
    public var transformer: TransformerSpec?
    /// A BERT-family encoder folder fine-tuned with a classification head (`BertClassifier`).
    public var encoder: EncoderSpec?

    public struct EncoderSpec: Codable, Sendable, Equatable {
        /// The model folder (config.json, vocab.txt, model.safetensors).
        public var folder: String
        public var classes: Int
        /// Only the head trains.
        public var freeze: Bool
        public init(folder: String, classes: Int, freeze: Bool) { (self.folder, self.classes, self.freeze) = (folder, classes, freeze) }
    }

    public init(mlp: [Int], activation: String = "relu", weights: String? = nil, prefix: String = "") {
        self.mlp = mlp
        self.activation = activation
        self.weights = weights
        self.prefix = prefix
    }

    public init(cnn: CNNSpec, weights: String? = nil) {
        self.init(mlp: [], weights: weights)
        self.cnn = cnn
    }

    public init(transformer: TransformerSpec, weights: String? = nil) {
        self.init(mlp: [], weights: weights)
        self.transformer = transformer
    }

    /// mlp, cnn, transformer or encoder.
    public var kind: String { cnn != nil ? "cnn" : transformer != nil ? "transformer" : encoder != nil ? "encoder" : "mlp" }

    /// Values per input row.
    public var inputs: Int {
        if let c = cnn { return c.input.reduce(1) { $0 * max(0, $1) } }
        if let t = transformer { return t.length }
        return mlp.first ?? 0
    }

    /// Values per output row (classes).
    public var outputs: Int {
        if let c = cnn { return (try? c.shapes(""))?.last?.reduce(1, *) ?? 0 }
        if let t = transformer { return t.outputs }
        if let e = encoder { return e.classes }
        return mlp.last ?? 0
    }

    /// The spec field that says how wide input rows are, for errors ("model.mlp[0] is 784").
    public var inputField: String { cnn != nil ? "model.cnn.input (\(cnn!.input))" : transformer != nil ? "model.transformer.length" : "model.mlp[0]" }

    /// Input values are token ids below this (a transformer's vocab), checked when data is read.
    public var tokens: Int? { transformer?.vocab }

    /// What the model is, for messages: "[784, 128, 10]", "cnn [1, 28, 28] → 10", "transformer 2×64 → 2".
    public var summary: String {
        if let c = cnn { return "cnn \(c.input) → \(outputs)" }
        if let t = transformer { return "transformer \(t.layers)×\(t.width) → \(t.outputs)" }
        if let e = encoder { return "encoder \(e.folder) → \(e.classes)\(e.freeze ? " (frozen)" : "")" }
        return "\(mlp)"
    }
}

/// Rows of features with (optionally) an integer class label: a CSV whose last column is the label, or an
/// `.npy` matrix of features with an `.npy` vector of labels.
public struct LabeledDataSpec: Codable, Sendable, Equatable {
    public var csv: String?
    public var x: String?
    public var y: String?
    /// Features are multiplied by this.
    public var scale: Double
    /// An `.npz` (np.savez or np.savez_compressed) holding the features and labels as arrays named `features` and
    /// `labels` (default "x" and "y").
    public var npz: String?
    /// A safetensors file holding the features and labels as tensors (named as for an npz).
    public var safetensors: String?
    public var features: String?
    public var labels: String?
    /// Labelled text lines, `label<TAB>text` (a model: {encoder: …} job's data): integer labels, or names numbered
    /// in sorted order.
    public var text: String?
    /// Generated data (tests, demos), a pure function of (seed, i) as map-reduce's inputs; row i is of class
    /// i mod classes. `blobs`: `rows` rows in `classes` Gaussian blobs of `spread` around seeded centres in
    /// [−1, 1]^features. `sequences`: rows of `features` token ids below `vocab` — noise tokens from classes..<vocab,
    /// class k's token k at 3 random positions and each other class token at 0 to 2 (a transformer's task).
    public var generate: GeneratedBlobs?
    /// A CSV whose first line names its columns.
    public var header: Bool?
    /// A CSV's label column: its name (with a header) or its index from 0; nil: the last column.
    public var labelColumn: String?

    public init(csv: String? = nil, x: String? = nil, y: String? = nil, scale: Double = 1, header: Bool? = nil, labelColumn: String? = nil) {
        self.csv = csv
        self.x = x
        self.y = y
        self.scale = scale
        self.header = header
        self.labelColumn = labelColumn
    }

    /// Files this data is read from.
    public var paths: [String] { [csv, x, y, npz, safetensors, text].compactMap { $0 } }

    /// The file of named arrays (an npz or a safetensors file), if the data is one.
    var arrays: String? { npz ?? safetensors }

    public struct GeneratedBlobs: Codable, Sendable, Equatable {
        public var rows: Int, features: Int, classes: Int, seed: UInt64, spread: Double
        /// nil: blobs; "sequences".
        public var generator: String?
        public var vocab: Int?
        public init(rows: Int, features: Int, classes: Int, seed: UInt64 = 1, spread: Double = 0.3) {
            (self.rows, self.features, self.classes, self.seed, self.spread) = (rows, features, classes, seed, spread)
        }
        public var isSequences: Bool { generator == "sequences" }
    }

    func validate(_ path: String, needsLabels: Bool) throws {
        guard [csv, x, npz, safetensors, text].compactMap({ $0 }).count + (generate == nil ? 0 : 1) <= 1 else {
            throw SpecError(field: path + (generate != nil ? "generate" : text != nil ? "text" : safetensors != nil ? "safetensors" : npz != nil ? "npz" : "x"),
                            problem: "give one of csv, x/y, npz, safetensors, text or generate")
        }
        if text != nil {
            if header != nil || labelColumn != nil || features != nil || labels != nil {
                throw SpecError(field: path + "text", problem: "a text file's lines are label<TAB>text; header, label_column, features and labels do not apply")
            }
            return
        }
        if let g = generate {
            guard g.rows >= 1, g.rows <= 10_000_000 else { throw SpecError(field: path + "rows", problem: "must be between 1 and 10000000, got \(g.rows)") }
            guard g.features >= 1, g.features <= 4096 else { throw SpecError(field: path + (g.isSequences ? "length" : "features"), problem: "must be between 1 and 4096, got \(g.features)") }
            guard g.classes >= 2, g.classes <= 1000 else { throw SpecError(field: path + "classes", problem: "must be between 2 and 1000, got \(g.classes)") }
            guard g.spread.isFinite, g.spread >= 0 else { throw SpecError(field: path + "spread", problem: "must be finite and ≥ 0, got \(g.spread)") }
            if g.isSequences {
                let v = g.vocab ?? 0
                guard v >= g.classes + 1, v <= 1 << 20 else {
                    throw SpecError(field: path + "vocab", problem: "must be between classes + 1 (\(g.classes + 1)) and 1048576, got \(v)")
                }
                guard g.features >= 3 * g.classes else {
                    throw SpecError(field: path + "length", problem: "must be at least 3 × classes (\(3 * g.classes)) to hold the class tokens, got \(g.features)")
                }
            }
            return
        }
        if arrays == nil && (features != nil || labels != nil) {
            throw SpecError(field: path + (features != nil ? "features" : "labels"), problem: "names an array of an npz or a tensor of a safetensors file; applies to those only")
        }
        if arrays != nil {
            if header != nil || labelColumn != nil { throw SpecError(field: path + (header != nil ? "header" : "label_column"), problem: "applies to a csv only") }
            return
        }
        switch (csv, x) {
        case (nil, nil): throw SpecError(field: path + "csv", problem: "missing; expected {csv: FILE}, {x: FEATURES.npy, y: LABELS.npy} or {npz: DATA.npz}")
        case (.some, .some): throw SpecError(field: path + "x", problem: "give either csv or x/y, not both")
        case (.some, nil) where y != nil: throw SpecError(field: path + "y", problem: "a csv carries its labels in a column (label_column, default the last); drop y")
        case (nil, _) where header != nil || labelColumn != nil:
            throw SpecError(field: path + (header != nil ? "header" : "label_column"), problem: "applies to a csv only")
        case (nil, .some) where needsLabels && y == nil: throw SpecError(field: path + "y", problem: "missing; this job kind needs labels")
        default: break
        }
        for p in paths where p.isEmpty { throw SpecError(field: path + "csv", problem: "empty path") }
        guard scale.isFinite else { throw SpecError(field: path + "scale", problem: "must be finite, got \(scale)") }
        if let c = labelColumn, Int(c) == nil {
            guard header == true else { throw SpecError(field: path + "label_column", problem: "'\(c.prefix(40))' is a column name: add header: true, or give the column's index from 0") }
            guard !c.isEmpty, c.count <= 256 else { throw SpecError(field: path + "label_column", problem: "a column name of 1…256 characters, or an index from 0") }
        }
        if let c = labelColumn, let i = Int(c), i < 0 { throw SpecError(field: path + "label_column", problem: "an index from 0, got \(i)") }
    }
}

public struct OptimizerSpec: Codable, Sendable, Equatable {
    /// sgd, adam or adamw.
    public var kind: String
    public var lr: Double
    public var momentum: Double
    public var weightDecay: Double
    /// Linear warm-up steps, then `schedule`.
    public var warmupSteps: Int
    /// constant or cosine (decay to 0 at the last step).
    public var schedule: String

    public init(kind: String, lr: Double, momentum: Double = 0, weightDecay: Double = 0, warmupSteps: Int = 0, schedule: String = "constant") {
        self.kind = kind
        self.lr = lr
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.warmupSteps = warmupSteps
        self.schedule = schedule
    }

    func validate() throws {
        guard ["sgd", "adam", "adamw"].contains(kind) else {
            throw SpecError(field: "optimizer", problem: "unknown optimizer '\(kind)'; expected sgd, adam or adamw")
        }
        let p = "optimizer.\(kind)."
        guard lr > 0, lr.isFinite else { throw SpecError(field: p + "lr", problem: "must be > 0, got \(lr)") }
        guard momentum >= 0, momentum < 1 else { throw SpecError(field: p + "momentum", problem: "must be in [0, 1), got \(momentum)") }
        guard weightDecay >= 0, weightDecay.isFinite else { throw SpecError(field: p + "weight_decay", problem: "must be ≥ 0, got \(weightDecay)") }
        guard warmupSteps >= 0 else { throw SpecError(field: p + "warmup_steps", problem: "must be ≥ 0, got \(warmupSteps)") }
        guard ["constant", "cosine"].contains(schedule) else {
            throw SpecError(field: p + "schedule", problem: "'\(schedule)' is not one of constant, cosine")
        }
    }
}

/// How workers send gradient partial sums: float32 (exact; the default), or bfloat16 / float16 — half the bytes,
/// lossy (about 3 and 3.3 significant decimal digits), and no longer bitwise reproducible across worker counts
/// because the rounding happens at whichever tree nodes each worker's range covers.
public enum GradientTransport: String, Codable, Sendable, CaseIterable {
    case f32, bf16, fp16

    static func parse(_ value: String?) throws -> GradientTransport {
        guard let v = value else { return .f32 }
        guard let t = GradientTransport(rawValue: v) else {
            throw SpecError(field: "gradient_transport", problem: "expected f32 (exact, the default), bf16 or fp16 (lossy), got '\(v)'")
        }
        return t
    }
}

extension InputTransport {
    static func parse(_ value: String?) throws -> InputTransport? {
        guard let v = value else { return nil }
        guard let t = InputTransport(rawValue: v) else {
            throw SpecError(field: "input_transport", problem: "expected shared (workers read the paths; the default) or coordinator (workers fetch the files from the coordinator), got '\(v)'")
        }
        return t
    }
}

// MARK: parsing

extension ModelSpec {
    static func parse(_ f: inout Fields, base: String?) throws -> ModelSpec {
        var m = try f.mapping("model", expected: "{mlp: [64, 128, 10], activation: relu, weights: FILE.safetensors}")
        return try parse(mapping: &m, base: base)
    }

    /// From the fields of a `model:` mapping (all read; others refused).
    static func parse(mapping m: inout Fields, base: String?) throws -> ModelSpec {
        let weights = try m.optionalString("weights").map { resolvePath($0, base) }
        let given = ["mlp", "cnn", "transformer", "encoder"].filter { m.has($0) }
        guard given.count <= 1 else { throw SpecError(field: "model." + given[1], problem: "give one of mlp, cnn, transformer or encoder, not both \(given[0]) and \(given[1])") }
        if let folder = try m.optionalString("encoder") {
            guard let classes = try m.optionalInt("classes") else { throw SpecError(field: "model.classes", problem: "missing; the head's classes, e.g. 2") }
            var spec = ModelSpec(mlp: [], weights: weights)
            spec.encoder = EncoderSpec(folder: resolvePath(folder, base), classes: classes, freeze: try m.optionalBool("freeze") ?? false)
            try m.rejectUnknown()
            return spec
        }
        if let node = m.take("cnn") {
            var spec = ModelSpec(cnn: try CNNSpec.parse(node, path: "model.cnn."), weights: weights)
            spec.prefix = try m.optionalString("prefix") ?? ""
            try m.rejectUnknown()
            return spec
        }
        if let node = m.take("transformer") {
            var spec = ModelSpec(transformer: try TransformerSpec.parse(node, path: "model.transformer."), weights: weights)
            spec.prefix = try m.optionalString("prefix") ?? ""
            try m.rejectUnknown()
            return spec
        }
        guard let sizesNode = m.take("mlp"), let seq = sizesNode.sequence else {
            throw SpecError(field: "model.mlp", problem: "missing; expected a list of layer widths such as [64, 128, 10], or a cnn or transformer")
        }
        let sizes = try seq.enumerated().map { i, n -> Int in
            guard let s = n.string, let v = Int(s) else {
                throw SpecError(field: "model.mlp[\(i)]", problem: "expected an integer width, got '\(n.string ?? "?")'")
            }
            return v
        }
        let spec = ModelSpec(mlp: sizes, activation: try m.optionalString("activation") ?? "relu", weights: weights,
                             prefix: try m.optionalString("prefix") ?? "")
        try m.rejectUnknown()
        return spec
    }
}

extension LabeledDataSpec {
    static func parse(_ f: inout Fields, base: String?) throws -> LabeledDataSpec {
        var d = try f.mapping("data", expected: "{csv: FILE}, {x: FEATURES.npy, y: LABELS.npy} or {npz: DATA.npz}")
        var spec = LabeledDataSpec(csv: try d.optionalString("csv").map { resolvePath($0, base) },
                                   x: try d.optionalString("x").map { resolvePath($0, base) },
                                   y: try d.optionalString("y").map { resolvePath($0, base) },
                                   scale: try d.optionalDouble("scale") ?? 1, header: try d.optionalBool("header"),
                                   labelColumn: try d.optionalString("label_column"))
        spec.npz = try d.optionalString("npz").map { resolvePath($0, base) }
        spec.safetensors = try d.optionalString("safetensors").map { resolvePath($0, base) }
        spec.text = try d.optionalString("text").map { resolvePath($0, base) }
        if let kind = try d.optionalString("generate") {
            guard kind == "blobs" || kind == "sequences" else {
                throw SpecError(field: "data.generate", problem: "unknown generator '\(kind.prefix(40))'; expected blobs or sequences")
            }
            let width = kind == "sequences" ? try d.optionalInt("length") : try d.optionalInt("features")
            var g = GeneratedBlobs(rows: try d.optionalInt("rows") ?? 0, features: width ?? 0,
                                   classes: try d.optionalInt("classes") ?? 0, seed: try d.optionalUInt("seed") ?? 1,
                                   spread: kind == "sequences" ? 0 : try d.optionalDouble("spread") ?? 0.3)
            if kind == "sequences" { (g.generator, g.vocab) = (kind, try d.optionalInt("vocab") ?? 0) }
            spec.generate = g
        }
        spec.features = try d.optionalString("features")
        spec.labels = try d.optionalString("labels")
        try d.rejectUnknown()
        return spec
    }
}

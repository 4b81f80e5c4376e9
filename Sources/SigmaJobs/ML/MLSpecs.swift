import SigmaModel
import Foundation
import Yams

/// A model the engine builds from a spec: an MLP today. Weights come from a safetensors file with PyTorch
/// state-dict names (`0.weight`, `0.bias`, `2.weight`, …, optionally under `prefix`), or a seeded initialisation.
public struct ModelSpec: Codable, Sendable, Equatable {
    /// Layer widths, input first.
    public var mlp: [Int]
    /// Activation between hidden layers: relu, gelu or tanh.
    public var activation: String
    /// Safetensors file to start from (required for infer/eval).
    public var weights: String?
    /// Prefix of the tensor names in `weights`, e.g. "net." for a state dict saved from a wrapping module.
    public var prefix: String

    public init(mlp: [Int], activation: String = "relu", weights: String? = nil, prefix: String = "") {
        self.mlp = mlp
        self.activation = activation
        self.weights = weights
        self.prefix = prefix
    }

    public var inputs: Int { mlp.first ?? 0 }
    public var outputs: Int { mlp.last ?? 0 }
}

/// Rows of features with (optionally) an integer class label: a CSV whose last column is the label, or an
/// `.npy` matrix of features with an `.npy` vector of labels.
public struct LabeledDataSpec: Codable, Sendable, Equatable {
    public var csv: String?
    public var x: String?
    public var y: String?
    /// Features are multiplied by this.
    public var scale: Double

    public init(csv: String? = nil, x: String? = nil, y: String? = nil, scale: Double = 1) {
        self.csv = csv
        self.x = x
        self.y = y
        self.scale = scale
    }

    /// Files this data is read from.
    public var paths: [String] { [csv, x, y].compactMap { $0 } }

    func validate(_ path: String, needsLabels: Bool) throws {
        switch (csv, x) {
        case (nil, nil): throw SpecError(field: path + "csv", problem: "missing; expected {csv: FILE} or {x: FEATURES.npy, y: LABELS.npy}")
        case (.some, .some): throw SpecError(field: path + "x", problem: "give either csv or x/y, not both")
        case (.some, nil) where y != nil: throw SpecError(field: path + "y", problem: "a csv carries its labels in the last column; drop y")
        case (nil, .some) where needsLabels && y == nil: throw SpecError(field: path + "y", problem: "missing; this job kind needs labels")
        default: break
        }
        for p in paths where p.isEmpty { throw SpecError(field: path + "csv", problem: "empty path") }
        guard scale.isFinite else { throw SpecError(field: path + "scale", problem: "must be finite, got \(scale)") }
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

/// `kind: train` — synchronous data-parallel training with a bitwise-reproducible gradient reduction.
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

public struct TrainJob: JobKindSpec {
    public var name: String
    public var model: ModelSpec
    public var data: LabeledDataSpec
    public var optimizer: OptimizerSpec
    /// Training length: `steps`, or whole `epochs` over the training split (exactly one is set).
    public var steps: Int?
    public var epochs: Int?
    /// Rows per step (the global batch).
    public var batchSize: Int
    /// Rows per micro-batch: the unit of the gradient tree (see docs/architecture.md, "Reproducible reduction").
    public var microBatch: Int
    /// Fraction of rows held out for evaluation (after a seeded shuffle).
    public var holdout: Double
    /// Evaluate on the held-out rows every this many steps (0: only at the end).
    public var evalEvery: Int
    /// Write a checkpoint every this many steps into `checkpointDir` (0: never).
    public var checkpointEvery: Int
    public var checkpointDir: String?
    /// Checkpoint to continue from.
    public var resume: String?
    public var seed: UInt64
    /// Where `sigma train --local` / `sigma submit -o` write the results by default.
    public var output: String?
    /// How workers send gradients: f32 (exact, the default), bf16 or fp16 (half the bytes, lossy).
    public var gradientTransport: GradientTransport
    /// Where workers get the data files (nil: shared).
    public var inputTransport: InputTransport?

    public init(name: String = "train", model: ModelSpec, data: LabeledDataSpec, optimizer: OptimizerSpec, steps: Int? = nil,
                epochs: Int? = nil, batchSize: Int = 32, microBatch: Int = 16, holdout: Double = 0.2, evalEvery: Int = 0,
                checkpointEvery: Int = 0, checkpointDir: String? = nil, resume: String? = nil, seed: UInt64 = 0, output: String? = nil,
                gradientTransport: GradientTransport = .f32) {
        self.gradientTransport = gradientTransport
        self.name = name
        self.model = model
        self.data = data
        self.optimizer = optimizer
        self.steps = steps
        self.epochs = epochs
        self.batchSize = batchSize
        self.microBatch = microBatch
        self.holdout = holdout
        self.evalEvery = evalEvery
        self.checkpointEvery = checkpointEvery
        self.checkpointDir = checkpointDir
        self.resume = resume
        self.seed = seed
        self.output = output
    }

    public func validate(limits: SpecLimits = .standard) throws {
        try model.validate("model.", limits: limits)
        try data.validate("data.", needsLabels: true)
        try optimizer.validate()
        switch (steps, epochs) {
        case (nil, nil): throw SpecError(field: "steps", problem: "missing; give steps: N or epochs: N")
        case (.some, .some): throw SpecError(field: "epochs", problem: "give steps or epochs, not both")
        default: break
        }
        if let s = steps, s < 1 || s > 100_000_000 { throw SpecError(field: "steps", problem: "must be between 1 and 100000000, got \(s)") }
        if let e = epochs, e < 1 || e > 1_000_000 { throw SpecError(field: "epochs", problem: "must be between 1 and 1000000, got \(e)") }
        guard batchSize >= 1, batchSize <= 1 << 20 else { throw SpecError(field: "batch_size", problem: "must be between 1 and 1048576, got \(batchSize)") }
        guard microBatch >= 1, microBatch <= batchSize else {
            throw SpecError(field: "micro_batch", problem: "must be between 1 and batch_size (\(batchSize)), got \(microBatch)")
        }
        guard (batchSize + microBatch - 1) / microBatch <= 4096 else {
            throw SpecError(field: "micro_batch", problem: "batch_size / micro_batch must be at most 4096 micro-batches per step")
        }
        guard holdout >= 0, holdout < 1 else { throw SpecError(field: "holdout", problem: "must be in [0, 1), got \(holdout)") }
        guard evalEvery >= 0 else { throw SpecError(field: "eval_every", problem: "must be ≥ 0, got \(evalEvery)") }
        guard checkpointEvery >= 0 else { throw SpecError(field: "checkpoint_every", problem: "must be ≥ 0, got \(checkpointEvery)") }
        if checkpointEvery > 0 && (checkpointDir ?? "").isEmpty {
            throw SpecError(field: "checkpoint_dir", problem: "missing; checkpoint_every needs a directory")
        }
        if let r = resume, r.isEmpty { throw SpecError(field: "resume", problem: "empty path") }
        // (weights, gradient, optimizer state — momentum, or Adam's two moments — and the reduce's partial sums)
        try limits.checkMemory("model.mlp", bytes: model.memoryEstimate(batch: batchSize, states: optimizer.kind == "sgd" ? 1 : 2),
                               what: "training \(model.mlp) (\(model.parameterCount) parameters) with batch_size \(batchSize)")
    }
}

/// `kind: infer` (predictions: logits in input order) and `kind: eval` (accuracy, loss, confusion matrix).
public struct PredictJob: JobKindSpec {
    public var name: String
    public var model: ModelSpec
    public var data: LabeledDataSpec
    /// Rows per batch; shards are whole batches, so results do not depend on how the job was split.
    public var batchSize: Int
    public var output: String?
    /// Where workers get the data and weights files (nil: shared).
    public var inputTransport: InputTransport?

    public init(name: String, model: ModelSpec, data: LabeledDataSpec, batchSize: Int = 256, output: String? = nil) {
        self.name = name
        self.model = model
        self.data = data
        self.batchSize = batchSize
        self.output = output
    }

    public func validate(eval: Bool, limits: SpecLimits = .standard) throws {
        try model.validate("model.", limits: limits)
        guard model.weights != nil else { throw SpecError(field: "model.weights", problem: "missing; infer and eval need trained weights (safetensors)") }
        try data.validate("data.", needsLabels: eval)
        guard batchSize >= 1, batchSize <= 1 << 20 else { throw SpecError(field: "batch_size", problem: "must be between 1 and 1048576, got \(batchSize)") }
        try limits.checkMemory("model.mlp", bytes: model.memoryEstimate(batch: batchSize, states: 0),
                               what: "\(model.mlp) (\(model.parameterCount) parameters) with batch_size \(batchSize)")
    }
}

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

// MARK: parsing


extension ModelSpec {
    static func parse(_ f: inout Fields, base: String?) throws -> ModelSpec {
        var m = try f.mapping("model", expected: "{mlp: [64, 128, 10], activation: relu, weights: FILE.safetensors}")
        guard let sizesNode = m.take("mlp"), let seq = sizesNode.sequence else {
            throw SpecError(field: "model.mlp", problem: "missing; expected a list of layer widths such as [64, 128, 10]")
        }
        let sizes = try seq.enumerated().map { i, n -> Int in
            guard let s = n.string, let v = Int(s) else {
                throw SpecError(field: "model.mlp[\(i)]", problem: "expected an integer width, got '\(n.string ?? "?")'")
            }
            return v
        }
        let spec = ModelSpec(mlp: sizes, activation: try m.optionalString("activation") ?? "relu",
                             weights: try m.optionalString("weights").map { resolvePath($0, base) },
                             prefix: try m.optionalString("prefix") ?? "")
        try m.rejectUnknown()
        return spec
    }
}

extension LabeledDataSpec {
    static func parse(_ f: inout Fields, base: String?) throws -> LabeledDataSpec {
        var d = try f.mapping("data", expected: "{csv: FILE} or {x: FEATURES.npy, y: LABELS.npy}")
        let spec = LabeledDataSpec(csv: try d.optionalString("csv").map { resolvePath($0, base) },
                                   x: try d.optionalString("x").map { resolvePath($0, base) },
                                   y: try d.optionalString("y").map { resolvePath($0, base) },
                                   scale: try d.optionalDouble("scale") ?? 1)
        try d.rejectUnknown()
        return spec
    }
}

extension TrainJob {
    static func parse(_ f: inout Fields, base: String?) throws -> TrainJob {
        let name = try f.optionalString("name") ?? "train"
        let model = try ModelSpec.parse(&f, base: base)
        let data = try LabeledDataSpec.parse(&f, base: base)
        guard let o = f.take("optimizer")?.mapping, o.count == 1, let okind = o.first?.key.string, let params = o.first?.value.mapping else {
            throw SpecError(field: "optimizer", problem: "expected one of {sgd: {lr, momentum, weight_decay}}, {adam: {lr, weight_decay}}, {adamw: {lr, weight_decay}}")
        }
        var of = Fields(params, path: "optimizer.\(okind).")
        let opt = OptimizerSpec(kind: okind, lr: try of.optionalDouble("lr") ?? 0.01, momentum: try of.optionalDouble("momentum") ?? 0,
                                weightDecay: try of.optionalDouble("weight_decay") ?? 0, warmupSteps: try of.optionalInt("warmup_steps") ?? 0,
                                schedule: try of.optionalString("schedule") ?? "constant")
        if okind != "sgd", of.take("momentum") != nil { throw SpecError(field: "optimizer.\(okind).momentum", problem: "only sgd takes momentum") }
        try of.rejectUnknown()
        let batch = try f.optionalInt("batch_size") ?? 32
        var spec = TrainJob(name: name, model: model, data: data, optimizer: opt, steps: try f.optionalInt("steps"),
                            epochs: try f.optionalInt("epochs"), batchSize: batch,
                            microBatch: try f.optionalInt("micro_batch") ?? min(16, batch), holdout: try f.optionalDouble("holdout") ?? 0.2,
                            evalEvery: try f.optionalInt("eval_every") ?? 0, checkpointEvery: try f.optionalInt("checkpoint_every") ?? 0,
                            checkpointDir: try f.optionalString("checkpoint_dir").map { resolvePath($0, base) },
                            resume: try f.optionalString("resume").map { resolvePath($0, base) },
                            seed: try f.optionalUInt("seed") ?? 0, output: try f.optionalString("output").map { resolvePath($0, base) },
                            gradientTransport: try GradientTransport.parse(f.optionalString("gradient_transport")))
        spec.inputTransport = try InputTransport.parse(f.optionalString("input_transport"))
        try f.rejectUnknown()
        return spec
    }
}

extension PredictJob {
    static func parse(_ f: inout Fields, base: String?, eval: Bool) throws -> PredictJob {
        var spec = PredictJob(name: try f.optionalString("name") ?? (eval ? "eval" : "infer"), model: try ModelSpec.parse(&f, base: base),
                              data: try LabeledDataSpec.parse(&f, base: base), batchSize: try f.optionalInt("batch_size") ?? 256,
                              output: try f.optionalString("output").map { resolvePath($0, base) })
        spec.inputTransport = try InputTransport.parse(f.optionalString("input_transport"))
        try f.rejectUnknown()
        return spec
    }
}

extension EmbedJob {
    static func parse(_ f: inout Fields, base: String?) throws -> EmbedJob {
        var spec = EmbedJob(name: try f.optionalString("name") ?? "embed", model: resolvePath(try f.string("model"), base),
                            input: resolvePath(try f.string("input"), base), batchSize: try f.optionalInt("batch_size") ?? 32,
                            output: try f.optionalString("output").map { resolvePath($0, base) })
        spec.inputTransport = try InputTransport.parse(f.optionalString("input_transport"))
        try f.rejectUnknown()
        return spec
    }
}

// MARK: wire form (JSON inside the binary spec; validated again on arrival)

enum MLSpecCoding {
    static func encode<T: Encodable>(_ v: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        e.keyEncodingStrategy = .convertToSnakeCase
        return Array((try? e.encode(v)) ?? Data())
    }

    static func decode<T: Decodable>(_ t: T.Type, _ bytes: [UInt8], field: String) throws -> T {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        do { return try d.decode(t, from: Data(bytes)) } catch {
            throw ByteReadError(field: field, problem: "malformed \(T.self): \(error)")
        }
    }
}

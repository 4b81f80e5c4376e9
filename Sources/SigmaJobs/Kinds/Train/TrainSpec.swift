import Foundation
import SigmaModel

/// `kind: train` — synchronous data-parallel training with a bitwise-reproducible gradient reduction.
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
    /// Write a checkpoint at the first step ending at least this many seconds after the last one (nil or 0: never);
    /// with `checkpointEvery`, either one writes. Which steps it picks depends on time; the results do not.
    public var checkpointEverySeconds: Double?
    public var checkpointDir: String?
    /// Checkpoints are on (`checkpoint_every` or `checkpoint_every_seconds`, into `checkpoint_dir`).
    public var checkpoints: Bool { (checkpointEvery > 0 || (checkpointEverySeconds ?? 0) > 0) && checkpointDir != nil }
    /// Checkpoint to continue from.
    public var resume: String?
    public var seed: UInt64
    /// Where `sigma train --local` / `sigma submit -o` write the results by default.
    public var output: String?
    /// How workers send gradients: f32 (exact, the default), bf16 or fp16 (half the bytes, lossy).
    public var gradientTransport: GradientTransport
    /// Where workers get the data files (nil: shared).
    public var inputTransport: InputTransport?
    /// The loss: nil or "cross_entropy" (classes), "mse" (regression: one value per row, the label column a float
    /// target).
    public var loss: String?
    public var isRegression: Bool { loss == "mse" }
    /// A map-reduce's `model_gradient`: one step over the rows in input order (no shuffle, nothing held out) whose
    /// result is the reduced gradient itself, not an optimizer step.
    public var gradientOnly: Bool?

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
        if let l = loss {
            guard ["cross_entropy", "mse"].contains(l) else { throw SpecError(field: "loss", problem: "'\(l.prefix(40))' is not one of cross_entropy, mse") }
            if l == "mse", model.outputs != 1 {
                throw SpecError(field: "loss", problem: "mse regresses one value per row: the model needs 1 output, it has \(model.outputs)")
            }
        }
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
        if let t = checkpointEverySeconds {
            guard t.isFinite, t >= 0, t <= 1e7 else { throw SpecError(field: "checkpoint_every_seconds", problem: "must be between 0 and 10000000, got \(t)") }
            if t > 0 && (checkpointDir ?? "").isEmpty {
                throw SpecError(field: "checkpoint_dir", problem: "missing; checkpoint_every_seconds needs a directory")
            }
        }
        if let r = resume, r.isEmpty { throw SpecError(field: "resume", problem: "empty path") }
        // (weights, gradient, optimizer state — momentum, or Adam's two moments — and the reduce's partial sums)
        try limits.checkMemory("model." + model.kind, bytes: model.memoryEstimate(batch: batchSize, states: optimizer.kind == "sgd" ? 1 : 2),
                               what: "training \(model.summary) (\(model.parameterCount) parameters) with batch_size \(batchSize)")
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
                            seed: try f.optionalUInt("seed") ?? 0, output: try f.optionalString("output"),
                            gradientTransport: try GradientTransport.parse(f.optionalString("gradient_transport")))
        spec.checkpointEverySeconds = try f.optionalDouble("checkpoint_every_seconds")
        spec.inputTransport = try InputTransport.parse(f.optionalString("input_transport"))
        spec.loss = try f.optionalString("loss")
        try f.rejectUnknown()
        return spec
    }
}

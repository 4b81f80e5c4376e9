import Foundation
import SigmaEngine
import SigmaModel

public final class TrainDriver: ReducingDriver, CollectiveRounds, @unchecked Sendable {
    public var planSummary: String? {
        "\(plan.totalSteps) steps of \(spec.batchSize) rows (\(parameterCount) parameters), from step \(step)"
    }
    public let spec: TrainJob
    public let data: LabeledData
    public let plan: TrainPlan
    let model: Layer
    let optimizer: StatefulOptimizer & TreeStepOptimizer
    public private(set) var step: Int
    public private(set) var history: [[String: Any]] = []
    var parts: [TreeNode: ArrivedPartial] = [:]
    /// The step's shards whose partial sums are in.
    var accepted = Set<Int>()
    /// Time the latest shard's partial sums took to combine up the tree, ns (the last one's is on the critical path).
    var lastArrivalNanos: UInt64 = 0
    var ranges: [(start: UInt64, count: UInt64)] = []
    var paramsFrame: Frame
    var lastLoss = Double.nan
    /// When the last checkpoint was written (or the job prepared): `checkpoint_every_seconds` counts from here.
    var lastCheckpointAt = DispatchTime.now().uptimeNanoseconds
    var lastEval: HeldOut? = nil
    public let parameterCount: Int
    /// Collective rounds: the segment, its size (0: this coordinator reduces), the step whose state the model and
    /// optimizer hold and what history and loss were then, the weights and optimizer state a segment starts from (the
    /// SGD velocity or Adam's moments, laid end to end; every member gets the weights and all of the state in one frame,
    /// or — when that is over the payload limit — the weights and its own slice of the state) until its first round is
    /// in, and the slices a snapshot round gathers.
    /// (from a random start: a restarted coordinator's segments are not its predecessor's, whose late messages a
    /// worker drops by segment)
    var segment = UInt32.random(in: 0...UInt32.max)
    public private(set) var segmentSize = 0
    var snapshot = (step: 0, history: 0, loss: Double.nan, at: DispatchTime.now().uptimeNanoseconds)
    var segmentParams: Frame? = nil
    var segmentState: [Float] = []
    var segmentWhole: Frame? = nil
    var snapshotRound = false
    var gathered: SnapshotBuffers? = nil
    /// Steps and seconds between snapshots (a lost worker costs at most that much work, run again); the seconds
    /// stretch where a snapshot would cost more than 5 % of them (`SnapshotCadence`).
    public static let snapshotSteps = 64
    public static let snapshotSeconds = 5.0
    var cadence = SnapshotCadence(seconds: snapshotSeconds)

    public var kind: String { "train" }
    public var sharesPerWorker: Bool { true }
    public var resumesFromShards: Bool { false }
    public var unit: String { "micro-batches" }
    public var round: UInt32 { UInt32(step) }
    public var params: Frame? { segmentSize > 0 ? segmentParams : paramsFrame }

    public var collectiveCapable: Bool { spec.gradientOnly != true && spec.gradientTransport == .f32 && (optimizer is SGD || optimizer is Adam) }
    public func segmentStartBytes(members size: Int) -> Int {
        let largest = (0..<max(1, size)).map { Collective.slice($0, of: max(1, size), parameters: parameterCount).count }.max() ?? 0
        return (parameterCount + spec.collectiveStateVectors * largest) * 4
    }

    /// At a segment's start: the weights, then member `rank`'s slice of each state vector (k × its slice's length; of
    /// 1: all of the state, built once for every member); the weights alone before the optimizer has any state (SGD's
    /// first step).
    public func params(member rank: Int, of size: Int) -> Frame? {
        guard segmentSize > 0, let weights = segmentParams, !segmentState.isEmpty else { return params }
        if size == 1, let whole = segmentWhole { return whole }
        let n = parameterCount, slice = Collective.slice(rank, of: size, parameters: n)
        let k = segmentState.count / n
        let frame = Frame(shareable: (n + k * slice.count) * 4) { dst in
            weights.withUnsafeBytes { dst.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n * 4) }
            segmentState.withUnsafeBytes { state in
                for j in 0..<k where !slice.isEmpty {
                    dst.baseAddress!.advanced(by: (n + j * slice.count) * 4)
                        .copyMemory(from: state.baseAddress!.advanced(by: (j * n + slice.lowerBound) * 4), byteCount: slice.count * 4)
                }
            }
        }
        if size == 1 { segmentWhole = frame }
        return frame
    }

    public var atSnapshot: Bool { segmentSize == 0 || step == snapshot.step }
    public var snapshotDue: Bool { snapshotRound }

    public func beginSegment(size: Int) -> UInt32 {
        precondition(atSnapshot, "a collective segment starts from the driver's own state")
        segment &+= 1
        segmentSize = size
        cadence.restart()
        snapshot = (step, history.count, lastLoss, DispatchTime.now().uptimeNanoseconds)
        segmentParams = nil
        segmentState = []
        segmentWhole = nil
        // The optimizer's state the members start from: SGD's velocity (none before the first step), Adam's moments
        // (zeros before the first step; its step count must be the step's, as members count from it).
        let state: [Float]
        if size > 0, let sgd = optimizer as? SGD {
            let (velocity, present) = sgd.velocityVector(model.parameters)
            state = present ? velocity : []
        } else if size > 0, let adam = optimizer as? Adam, adam.stepCount == step {
            state = adam.momentVectors(model.parameters)
        } else {
            segmentSize = 0
            return segment
        }
        segmentParams = paramsFrame
        segmentState = state
        return segment
    }

    public func rollback() -> Int {
        let lost = step - snapshot.step
        cadence.restart()
        step = snapshot.step
        history.removeSubrange(snapshot.history...)
        lastLoss = snapshot.loss
        parts = [:]
        accepted = []
        gathered = nil
        return lost
    }

    /// Whether the round about to run must end in a snapshot: the steps that evaluate or write a checkpoint, the
    /// last, and one at least every `snapshotSteps` steps or `snapshotSeconds` (longer where snapshots are costly).
    func needsSnapshot(now: UInt64) -> Bool {
        let next = step + 1
        if next == plan.totalSteps || next - snapshot.step >= Self.snapshotSteps { return true }
        if plan.microBatches(step: next) < segmentSize { return true }   // (the next step cannot give every member one)
        if spec.evalEvery > 0 && next % spec.evalEvery == 0 && !plan.holdout.isEmpty { return true }
        if Double(now &- snapshot.at) >= cadence.interval { return true }
        guard spec.checkpoints, spec.checkpointDir != nil else { return false }
        if spec.checkpointEvery > 0 && next % spec.checkpointEvery == 0 { return true }
        return spec.checkpointEverySeconds.map { $0 > 0 && Double(now &- lastCheckpointAt) >= $0 * 1e9 } ?? false
    }

    public init(spec: TrainJob, data: LabeledData) throws {
        self.spec = spec
        self.data = data
        plan = TrainPlan(spec, rows: data.rows)
        guard !plan.train.isEmpty else { throw JobError("data: no training rows left after holding out \(spec.holdout)") }
        // (steps are counted in 32 bits on the wire and in status: a job past that is refused, not cut short)
        guard plan.totalSteps <= Int(UInt32.max) else {
            throw JobError("epochs: \(spec.epochs ?? 1) epochs of \(plan.stepsPerEpoch) steps are \(plan.totalSteps) steps; at most \(UInt32.max) (fewer epochs or a larger batch_size)")
        }
        model = try MLModels.build(spec.model, seed: spec.seed &+ 1)
        optimizer = spec.makeOptimizer()
        step = 0
        parameterCount = MLModels.parameterCount(model)
        paramsFrame = TrainDriver.frame(model)
        if let path = spec.resume { try resume(from: path) }
    }

    /// The flat float32 parameter vector, written straight into the PARAMS frame.
    static func frame(_ model: Layer) -> Frame {
        let params = model.parameters
        return Frame(shareable: params.reduce(0) { $0 + $1.value.count } * 4) { dst in
            var o = 0
            for p in params {
                p.value.withData { src in
                    dst.baseAddress!.advanced(by: o).copyMemory(from: src.baseAddress!, byteCount: src.count * 4)
                    o += src.count * 4
                }
            }
        }
    }

    public var finished: Bool { step >= plan.totalSteps }

    public var roundItems: Int { plan.microBatches(step: step) }

    public func plan(shares: [Double]) -> [ShardPlan] {
        parts = [:]
        accepted = []
        var counts = proportionalSplit(roundItems, weights: shares.isEmpty ? [1] : shares)
        if segmentSize > 0 {
            // Every member of a collective step owns a slice, so every one gets micro-batches (the core makes segments
            // no larger than a step's micro-batches).
            precondition(counts.count == segmentSize && roundItems >= segmentSize, "a collective step of \(segmentSize) ranks planned with \(counts.count) shares")
            for k in counts.indices where counts[k] == 0 { counts[counts.indices.max { counts[$0] < counts[$1] }!] -= 1; counts[k] = 1 }
            let now = DispatchTime.now().uptimeNanoseconds
            snapshotRound = needsSnapshot(now: now)
            cadence.roundBegins(at: now, snapshot: snapshotRound)
            gathered = snapshotRound ? SnapshotBuffers(parameters: parameterCount, stateVectors: spec.collectiveStateVectors) : nil
        } else {
            snapshotRound = false
        }
        var out: [ShardPlan] = []
        var start = 0
        for (k, c) in counts.enumerated() where c > 0 {
            out.append(ShardPlan(start: UInt64(start), count: UInt64(c), share: k))
            start += c
        }
        ranges = out.map { ($0.start, $0.count) }
        return out
    }

    public func accept(shard index: Int, payload: Frame) throws {
        let r = Int(ranges[index].start)..<Int(ranges[index].start + ranges[index].count)
        if segmentSize > 0 {
            // (a collective step: statistics, and at a snapshot this rank's slices; shard k is rank k)
            let slice = Collective.slice(index, of: segmentSize, parameters: parameterCount)
            let stats = try CollectiveResult.decode(payload, range: r, total: plan.microBatches(step: step), expected: snapshotRound ? slice : nil,
                                                    stateVectors: spec.collectiveStateVectors) {
                gathered?.fill(slice, weights: $0, state: $1)
            }
            for (n, s) in stats { parts[n] = s }
            accepted.insert(index)
            return
        }
        // (float32 values stay in the payload until the step's reduce reads them: no copy)
        let decoded = try GradientTree.decode(payload, range: r, total: plan.microBatches(step: step), parameters: parameterCount,
                                              transport: spec.gradientTransport)
        let total = plan.microBatches(step: step)
        let t0 = DispatchTime.now().uptimeNanoseconds
        accepted.insert(index)
        // The step's last shard: its way up the tree is left to the optimizer's one pass (`reduceRound`), which makes
        // those additions chunk by chunk instead of a pass over the whole gradient each.
        let last = accepted.count == ranges.count
        for (n, s) in decoded {
            parts[n] = s
            if !last { GradientTree.combine(&parts, from: n, total: total) }
        }
        lastArrivalNanos = DispatchTime.now().uptimeNanoseconds &- t0
    }

    /// The learning rate for `step` (warm-up, then constant or cosine).
    func learningRate(at s: Int) -> Float { spec.learningRate(at: s, totalSteps: plan.totalSteps) }

    /// A collective step's end: its statistics; at a snapshot, the gathered weights and optimizer state become the
    /// model's and the optimizer's.
    func applyCollective(_ reduced: ReducedGradient) throws {
        var next: Frame? = nil
        if snapshotRound, let g = gathered {
            let frame = g.takeWeights()
            try MLModels.assign(model.parameters, from: frame)
            if let sgd = optimizer as? SGD {
                sgd.setVelocity(model.parameters, from: UnsafeBufferPointer(g.state))
            } else if let adam = optimizer as? Adam {
                adam.setMoments(model.parameters, from: UnsafeBufferPointer(g.state))
                adam.stepCount = step + 1
            }
            next = frame
            gathered = nil
        }
        record((reduced.loss, reduced.correct, reduced.rows), lr: learningRate(at: step), params: next)
        segmentParams = nil   // (the members hold the weights now)
        segmentState = []
        segmentWhole = nil
        if next != nil { snapshot = (step, history.count, lastLoss, DispatchTime.now().uptimeNanoseconds) }
    }

    /// Applies one step's reduced gradient (the tree's root divided by the step's rows).
    public func apply(_ reduced: ReducedGradient) throws {
        let rows = Float(reduced.rows)
        let lr = learningRate(at: step)
        optimizer.learningRate = lr
        let root: (loss: Double, correct: UInt64, rows: UInt64) = (reduced.loss, reduced.correct, reduced.rows)
        // One pass on up to 8 cores (the workers are waiting for these parameters): the reduce's additions left,
        // / rows, the optimizer's update, and the next PARAMS payload written as it goes.
        let frame = Frame(shareable: parameterCount * 4) { out in
            reduced.withSumTree { optimizer.step(model.parameters, sumOf: $0, divisor: rows, writingTo: out, threads: ElementChunks.threads) }
        }
        // The weights now live in the PARAMS payload only (read-only tensors over it, as on the workers): the pass
        // wrote them once, and the next one reads them there.
        try MLModels.assign(model.parameters, from: frame)
        record(root, lr: lr, params: frame)
    }

    /// The step's history entry (loss, learning rate, rows, accuracy; the held-out figures where it evaluates), and
    /// the next step begins; `params`: the weights the model now holds (nil: the same as before).
    func record(_ root: (loss: Double, correct: UInt64, rows: UInt64), lr: Float, params next: Frame?) {
        lastLoss = root.loss / Double(root.rows)
        var entry: [String: Any] = ["step": step + 1, "loss": lastLoss, "lr": Double(lr), "rows": Int(root.rows)]
        if !spec.isRegression { entry["accuracy"] = Double(root.correct) / Double(root.rows) }
        step += 1
        if (spec.evalEvery > 0 && step % spec.evalEvery == 0) || step == plan.totalSteps, !plan.holdout.isEmpty {
            let e = evaluate()
            lastEval = e
            entry.merge(e.fields) { $1 }
        }
        history.append(entry)
        if let next { paramsFrame = next }
    }

    public func reduceRound() throws -> RoundEnd {
        let reduced: ReducedGradient
        do { reduced = try GradientTree.reduce(parts, total: plan.microBatches(step: step)) } catch {
            throw JobError("step \(step + 1): \(error)")
        }
        if spec.gradientOnly == true { return try gradientResult(reduced) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let state = segmentSize == 0 || snapshotRound   // (the model holds this step's end)
        if segmentSize > 0 { try applyCollective(reduced) } else { try apply(reduced) }
        let optimizer = DispatchTime.now().uptimeNanoseconds &- t0
        parts = [:]   // (releases the payloads: shared-memory segments go back to their senders)
        accepted = []
        var end = RoundEnd()
        end.optimizerNanos = optimizer
        end.arrivalNanos = lastArrivalNanos
        if let e = lastEval, spec.evalEvery > 0, step % spec.evalEvery == 0 {
            end.log.append(String(format: "step %d/%d: loss %.4f, ", step, plan.totalSteps, lastLoss) + e.summary)
        }
        if spec.checkpoints, let dir = spec.checkpointDir {
            let now = DispatchTime.now().uptimeNanoseconds
            let bySteps = spec.checkpointEvery > 0 && step % spec.checkpointEvery == 0
            let bySeconds = spec.checkpointEverySeconds.map { $0 > 0 && Double(now &- lastCheckpointAt) >= $0 * 1e9 } ?? false
            if (bySteps || bySeconds || step == plan.totalSteps) && state {
                end.files.append(OutputFile(path: Checkpoints.path(dir, step: step), bytes: try checkpoint()))
                lastCheckpointAt = now
            }
        }
        if finished {
            end.finished = true
            end.results = try results()
        }
        return end
    }

    public var progress: RoundProgress {
        RoundProgress(step: step, steps: plan.totalSteps, loss: lastLoss, accuracy: lastEval?.accuracy ?? .nan, evalLoss: lastEval?.loss ?? .nan,
                      stepsPerEpoch: plan.stepsPerEpoch)
    }

    /// What the model scores on the held-out rows (fixed batches of 512, the same everywhere): mean cross-entropy and
    /// accuracy, or a regression's mean squared error, mean absolute error and R².
    public func evaluate() -> HeldOut {
        var lossSum = 0.0, absSum = 0.0, correct = 0
        // (R²'s denominator: the targets' squared deviations from their mean, all in Float64 in row order)
        let mean = spec.isRegression ? data.targetBatch(plan.holdout).scalars.reduce(0.0) { $0 + Double($1) } / Double(plan.holdout.count) : 0
        var deviations = 0.0
        for s in stride(from: 0, to: plan.holdout.count, by: 512) {
            let idx = plan.holdout[s..<min(s + 512, plan.holdout.count)]
            let (x, y) = data.batch(idx)
            let logits = model(Graph(recording: false).constant(x)).value
            if spec.isRegression {
                for (p, t) in zip(logits.scalars, data.targetBatch(idx).scalars) {
                    let e = Double(p) - Double(t), d = Double(t) - mean
                    lossSum += e * e
                    absSum += abs(e)
                    deviations += d * d
                }
                continue
            }
            lossSum += PredictDriver.rowLosses(logits, y).reduce(0, +)
            correct += Metrics.correct(logits: logits, labels: y)
        }
        let n = Double(plan.holdout.count)
        guard spec.isRegression else { return HeldOut(loss: lossSum / n, accuracy: Double(correct) / n) }
        return HeldOut(loss: lossSum / n, meanAbsoluteError: absSum / n, r2: deviations > 0 ? 1 - lossSum / deviations : .nan)
    }

    public var stateDict: [String: Tensor] { model.stateDict }

    /// Weights, optimizer state (`optim.*`), step and history: everything `resume` needs. The data order is a
    /// pure function of (seed, step), so (seed, step) is the RNG state.
    public func checkpoint() throws -> Data {
        var tensors = model.stateDict
        for (k, v) in optimizer.state(model.parameters) { tensors["optim." + k] = v }
        let meta = ["sigma.kind": "checkpoint", "sigma.job": spec.name, "sigma.step": "\(step)", "sigma.seed": "\(spec.seed)",
                    "sigma.optimizer": spec.optimizer.kind,
                    "sigma.history": String(decoding: try JSONSerialization.data(withJSONObject: history, options: [.sortedKeys]), as: UTF8.self)]
        return try SafeTensors.encode(tensors, metadata: meta)
    }

    /// Throws when the checkpoint folder already holds a step file this job would write (from another job, or an
    /// earlier run of this one): checkpoints are never replaced (docs/jobs.md, "Data roots and limits").
    public func checkCheckpointFolder() throws {
        guard spec.checkpoints, let dir = spec.checkpointDir else { return }
        // (by seconds, any later step may be written)
        let bySeconds = (spec.checkpointEverySeconds ?? 0) > 0
        let taken = Checkpoints.steps(in: dir).filter {
            $0 > step && $0 <= plan.totalSteps && (bySeconds || $0 % spec.checkpointEvery == 0 || $0 == plan.totalSteps)
        }.sorted()
        if let first = taken.first {
            throw JobError("checkpoint_dir: '\(dir)' already holds step-\(first).safetensors\(taken.count > 1 ? " (and \(taken.count - 1) more)" : ""), "
                           + "which this job would write; checkpoints are never replaced — choose a new checkpoint_dir, or move those files away")
        }
    }

    func resume(from path: String) throws {
        func fail(_ p: String) -> JobError { JobError("resume: \(path): \(p)") }
        guard let d = FileManager.default.contents(atPath: path) else { throw fail("cannot read the checkpoint") }
        let (tensors, meta): ([String: Tensor], [String: String])
        do { (tensors, meta) = try SafeTensors.readWithMetadata(d, file: path) } catch { throw JobError("resume: \(error)") }
        guard meta["sigma.kind"] == "checkpoint", let s = meta["sigma.step"].flatMap(Int.init) else {
            throw fail("not a Sigma checkpoint (metadata sigma.kind/sigma.step missing)")
        }
        guard meta["sigma.seed"] == "\(spec.seed)" else { throw fail("written with seed \(meta["sigma.seed"] ?? "?"), the spec says \(spec.seed)") }
        guard meta["sigma.optimizer"] == spec.optimizer.kind else {
            throw fail("written by optimizer \(meta["sigma.optimizer"] ?? "?"), the spec says \(spec.optimizer.kind)")
        }
        guard s >= 0, s <= plan.totalSteps else { throw fail("step \(s) is beyond the job's \(plan.totalSteps) steps") }
        do {
            try model.load(tensors, file: path)
            var opt: [String: Tensor] = [:]
            for (k, v) in tensors where k.hasPrefix("optim.") { opt[String(k.dropFirst(6))] = v }
            try optimizer.load(state: opt, model.parameters, file: path)
        } catch let e as FormatError { throw JobError("resume: \(e)") }
        if let h = meta["sigma.history"], let arr = try? JSONSerialization.jsonObject(with: Data(h.utf8)) as? [[String: Any]] { history = arr }
        step = s
        paramsFrame = TrainDriver.frame(model)
    }

    /// model_gradient's end: the tree's root — Σ over the rows of each row's cross-entropy gradient, float32, as a
    /// train step reduces it before dividing by its rows — under the model's state-dict names, and the loss sum.
    func gradientResult(_ reduced: ReducedGradient) throws -> RoundEnd {
        let root = reduced.materialized()
        let params = model.parameters, saved = params.map(\.value)
        var offset = 0
        for p in params {
            let n = p.value.count
            p.value = Tensor(shape: p.value.shape, Array(root.values[offset..<offset + n]))
            offset += n
        }
        let gradient = model.stateDict
        for (p, v) in zip(params, saved) { p.value = v }
        step = 1
        parts = [:]
        var end = RoundEnd()
        end.finished = true
        let metrics: [String: Any] = ["loss_sum": root.loss, "rows": Int(root.rows), "micro_batches": plan.microBatches(step: 0),
                                      "parameters": parameterCount]
        end.results = ResultBundle.encode([
            ("gradient.safetensors", try SafeTensors.encode(gradient, metadata: ["sigma.job": spec.name, "sigma.kind": "model_gradient"])),
            ("metrics.json", jsonData(metrics)),
        ])
        return end
    }

    func results() throws -> [UInt8] {
        var metrics: [String: Any] = ["steps": step, "loss": lastLoss, "parameters": parameterCount,
                                      "rows": ["train": plan.train.count, "holdout": plan.holdout.count]]
        if let e = lastEval { metrics.merge(e.fields) { $1 } }
        var meta = ["sigma.job": spec.name, "sigma.step": "\(step)"]
        if let names = data.labelNames {
            // Class i's name, for whoever reads the model (docs/jobs.md): in metrics.json, and in the weights' metadata.
            metrics["labels"] = names
            meta["sigma.labels"] = String(decoding: try JSONSerialization.data(withJSONObject: names), as: UTF8.self)
        }
        return ResultBundle.encode([
            ("model.safetensors", try SafeTensors.encode(model.stateDict, metadata: meta)),
            ("history.json", jsonData(history)),
            ("metrics.json", jsonData(metrics)),
        ])
    }
}

/// What a train job measures on its held-out rows: a classifier's mean cross-entropy and accuracy, or a regressor's
/// mean squared error (`loss`), mean absolute error and R² (1 − squared error ÷ the targets' squared deviations from
/// their mean: 1 is perfect, 0 no better than predicting the mean; NaN when the held-out targets are all equal).
public struct HeldOut: Sendable {
    public var loss: Double
    public var accuracy: Double = .nan
    public var meanAbsoluteError: Double = .nan
    public var r2: Double = .nan

    /// As history.json and metrics.json name them: eval_loss, and eval_accuracy or eval_rmse, eval_mae, eval_r2 —
    /// the ones measured.
    var fields: [String: Double] {
        var f = ["eval_loss": loss]
        if !accuracy.isNaN { f["eval_accuracy"] = accuracy }
        if !meanAbsoluteError.isNaN { f["eval_rmse"] = loss.squareRoot(); f["eval_mae"] = meanAbsoluteError }
        if r2.isFinite { f["eval_r2"] = r2 }
        return f
    }

    /// For the job's log: "held-out accuracy 0.9712", or "held-out mse 0.0213, mae 0.1102, R² 0.981".
    var summary: String {
        if !accuracy.isNaN { return String(format: "held-out accuracy %.4f", accuracy) }
        if meanAbsoluteError.isNaN { return String(format: "held-out loss %.4f", loss) }
        return String(format: "held-out mse %.4g, mae %.4g", loss, meanAbsoluteError) + (r2.isFinite ? String(format: ", R² %.4f", r2) : "")
    }
}

/// A train job's checkpoint files: `step-N.safetensors` in its `checkpoint_dir`.
enum Checkpoints {
    static func path(_ dir: String, step: Int) -> String { dir + "/step-\(step).safetensors" }

    /// The steps whose checkpoints `dir` holds (none when it cannot be read).
    static func steps(in dir: String) -> [Int] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).compactMap { n in
            guard n.hasPrefix("step-"), n.hasSuffix(".safetensors") else { return nil }
            return Int(n.dropFirst(5).dropLast(12))
        }
    }
}

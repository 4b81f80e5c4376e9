import Foundation
import SigmaModel

/// Data-parallel training: one round per optimizer step; workers return gradient partial sums over micro-batch
/// ranges, reduced by the fixed tree (bitwise the same for any split); results: weights, history, metrics.
public enum TrainKind: JobKind {
    public static let name = "train"

    public static func parse(_ fields: inout Fields, base: String?) throws -> TrainJob {
        try TrainJob.parse(&fields, base: base)
    }

    public static func validate(_ spec: TrainJob, limits: SpecLimits) throws {
        try spec.validate(limits: limits)
    }

    public static func mapPaths(_ spec: TrainJob, _ rewrite: (SpecPath) throws -> String) rethrows -> TrainJob {
        var s = spec
        s.data = try spec.data.mapPaths(rewrite)
        s.model = try spec.model.mapPaths(rewrite)
        s.resume = try spec.resume.map { try rewrite(SpecPath(field: "resume", path: $0, workers: false, model: true)) }
        return s
    }

    /// Data shaped for the model, labels in range, a checkpoint that matches, and a checkpoint folder under a root
    /// that holds no step file this job would write.
    public static func prepare(_ spec: TrainJob, context: KindContext) throws -> any RoundDriver {
        var s = spec
        if let r = s.resume { try context.limits.checkMemory("resume", bytes: saturating(fileSize(r), 2), what: "reading '\(r)'") }
        let data = try LabeledData.load(s.data, for: s.model, needLabels: true, limits: context.limits, regression: s.isRegression)
        if let dir = s.checkpointDir { s.checkpointDir = try context.roots.outputFolder(dir, field: "checkpoint_dir") }
        let driver = try TrainDriver(spec: s, data: data)
        try driver.checkCheckpointFolder()
        return driver
    }

    public static func worker(_ spec: TrainJob, context: KindContext) throws -> any ShardWorker {
        try TrainWorker(spec: spec, data: LabeledData.load(spec.data, for: spec.model,
                                                          needLabels: true, limits: context.limits, regression: spec.isRegression))
    }

    /// After a coordinator restart: from the latest checkpoint its folder holds (the same final bits as a run that
    /// was never interrupted), else from the start.
    public static func restarted(_ spec: TrainJob) -> TrainJob {
        guard spec.checkpoints, let dir = spec.checkpointDir else { return spec }
        guard let last = Checkpoints.steps(in: dir).max() else { return spec }
        var s = spec
        s.resume = Checkpoints.path(dir, step: last)
        return s
    }

    /// On a coordinator with a journal, a job that asks for no checkpoints gets them in a new folder, every
    /// `defaults.checkpointSeconds` of training: a restart loses at most about that much work, and the writes cost
    /// next to nothing (a checkpoint every few steps would cost a short job a third of its time).
    public static func journaled(_ spec: TrainJob, _ defaults: JournalDefaults) -> TrainJob {
        guard !spec.checkpoints, spec.checkpointDir == nil else { return spec }
        var s = spec
        s.checkpointEverySeconds = defaults.checkpointSeconds
        s.checkpointDir = defaults.newFolder()
        return s
    }

    public static func report(_ result: [UInt8], spec: TrainJob) throws -> JobReport {
        try ResultBundle.report(result)
    }
}

extension JobSpec {
    public static func train(_ s: TrainJob) -> JobSpec { TrainKind.spec(s) }
}

extension TrainWorker: ShardWorker {
    public func run(round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        guard let p = params else { throw JobError("training shard without parameters") }
        guard Int(round) < plan.totalSteps else { throw JobError("step \(round) is beyond the job's \(plan.totalSteps) steps") }
        try checkedRange(start, count)
        return try encodedPartials(step: Int(round), version: round, params: p, range: Int(start)..<Int(start + count))
    }
}

extension ModelSpec {
    /// The weights file and an encoder's folder, through `rewrite` (data roots, a worker's cache).
    func mapPaths(_ rewrite: (SpecPath) throws -> String) rethrows -> ModelSpec {
        var m = self
        m.weights = try weights.map { try rewrite(SpecPath(field: "model.weights", path: $0, model: true)) }
        if let e = encoder {
            m.encoder?.folder = try rewrite(SpecPath(field: "model.encoder", path: e.folder,
                                                     folder: (["config.json", "vocab.txt", "model.safetensors"], ["sentence_bert_config.json"]), model: true))
        }
        return m
    }
}

extension LabeledDataSpec {
    func mapPaths(_ rewrite: (SpecPath) throws -> String) rethrows -> LabeledDataSpec {
        var d = self
        d.csv = try csv.map { try rewrite(SpecPath(field: "data.csv", path: $0)) }
        d.x = try x.map { try rewrite(SpecPath(field: "data.x", path: $0)) }
        d.y = try y.map { try rewrite(SpecPath(field: "data.y", path: $0)) }
        d.npz = try npz.map { try rewrite(SpecPath(field: "data.npz", path: $0)) }
        d.safetensors = try safetensors.map { try rewrite(SpecPath(field: "data.safetensors", path: $0)) }
        d.text = try text.map { try rewrite(SpecPath(field: "data.text", path: $0)) }
        return d
    }
}

extension ResultBundle {
    /// An ML job's result files, and what its metrics.json says (its scalar values as lines).
    static func report(_ result: [UInt8]) throws -> JobReport {
        let files = try result.withUnsafeBytes { try decode($0) }
        var report = JobReport(files: files)
        if let m = files.first(where: { $0.name == "metrics.json" }), let obj = try? JSONSerialization.jsonObject(with: m.data) as? [String: Any] {
            report.json = obj
            for k in obj.keys.sorted() where !(obj[k] is [Any]) && !(obj[k] is [String: Any]) { report.lines.append("\(k): \(obj[k]!)") }
        }
        return report
    }
}

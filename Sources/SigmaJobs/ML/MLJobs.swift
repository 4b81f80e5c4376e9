import Foundation
import SigmaEngine
import SigmaModel

/// Entry points shared by the coordinator's shell, the worker and `--local` runs.
public enum MLJobs {
    /// Everything checked at submit time: the spec within `limits`, its files under `roots` (the driver reads their
    /// real paths), data shaped for the model, labels in range, weights and checkpoint matching the model, the
    /// checkpoint folder under a root and holding no step file this job would write. Returns the job's
    /// coordinator-side driver.
    public static func prepare(_ spec: JobSpec, roots: DataRoots, limits: SpecLimits = .standard) throws -> any RoundDriver {
        do { try spec.validate(limits: limits) } catch let e as SpecError { throw JobError("\(e)") }
        let checked = try roots.check(spec)
        switch checked {
        case .mapReduce:
            throw JobError("map-reduce jobs have no round driver")
        case .train(var s):
            let data = try LabeledData.load(s.data, features: s.model.inputs, classes: s.model.outputs, needLabels: true, limits: limits)
            if let dir = s.checkpointDir { s.checkpointDir = try roots.outputFolder(dir, field: "checkpoint_dir") }
            let driver = try TrainDriver(spec: s, data: data)
            try driver.checkCheckpointFolder()
            return driver
        case .infer(let s), .eval(let s):
            let isEval: Bool
            if case .eval = spec { isEval = true } else { isEval = false }
            let data = try LabeledData.load(s.data, features: s.model.inputs, classes: s.model.outputs, needLabels: isEval, limits: limits)
            _ = try MLModels.build(s.model, seed: 0)   // weights present, named and shaped as the model says
            return PredictDriver(spec: s, eval: isEval, data: data)
        case .embed(let s):
            let w = try EmbedWorker(spec: s, limits: limits)
            return EmbedDriver(spec: s, lines: w.lines.count, dimension: w.dimension)
        }
    }

    /// A pass over a whole job in this process, through the same shard code and the same reduction as the cluster.
    /// A round's micro-batches (train) or batches (infer, eval, embed) run on `threads` lanes, BLAS single-threaded
    /// in each, as on a worker: OpenBLAS's multi-threaded products are not always the same bits as its
    /// single-threaded ones, so BLAS runs on one thread wherever a job's numbers are computed. `progress` is called
    /// after each round.
    /// `roots` and `limits` apply as on a cluster (`sigma train --local` passes the current folder and the spec's).
    public static func runLocal(_ spec: JobSpec, roots: DataRoots, limits: SpecLimits = .standard, slots: Int = 1, threads: Int = 1,
                                progress: (any RoundDriver, RoundEnd) -> Void = { _, _ in }) throws -> [(name: String, data: Data)] {
        let driver = try prepare(spec, roots: roots, limits: limits)
        let spec = try roots.check(spec)
        let savedBLAS = BLASInfo.threads, savedLanes = ComputeLanes.shared.total
        BLASInfo.setThreads(1)
        ComputeLanes.shared.configure(total: threads)
        ComputeLanes.shared.hold()   // (this thread's own lane)
        defer {
            ComputeLanes.shared.release(1)
            ComputeLanes.shared.configure(total: savedLanes)
            BLASInfo.setThreads(savedBLAS)
        }
        let runner = ShardRunner(limits: limits)
        while true {
            let ranges = driver.plan(shares: Array(repeating: 1, count: slots))
            for (i, r) in ranges.enumerated() {
                let payload = try runner.run(spec, job: 0, round: driver.round, params: driver.params, start: r.start, count: r.count)
                try driver.accept(shard: i, payload: payload)
            }
            let end = try driver.completeRound()
            for f in end.files { try OutputFiles.write(f, replacing: false) }
            progress(driver, end)
            if end.finished { return try end.results.withUnsafeBytes { try ResultBundle.decode($0) } }
        }
    }
}

/// Runs ML shards on one thread, keeping per-job state (data, model, encoder) between shards.
public final class ShardRunner {
    enum State {
        case train(TrainWorker)
        case predict(PredictWorker)
        case embed(EmbedWorker)
    }
    /// Keyed by job id *and* spec: a restarted coordinator numbers its jobs from 1 again, and its job 1 must not
    /// run on the model and data of the old one.
    var states: [(job: JobID, spec: JobSpec, state: State)] = []
    let capacity: Int
    /// What a spec may ask of this process: checked before any of its data is read.
    let limits: SpecLimits

    public init(capacity: Int = 4, limits: SpecLimits = .standard) {
        self.capacity = capacity
        self.limits = limits
    }

    /// Drops the state (model, data, buffers) of jobs that have ended.
    public func forget(_ jobs: Set<JobID>) {
        states.removeAll { jobs.contains($0.job) }
    }

    func state(_ job: JobID, _ spec: JobSpec) throws -> State {
        if let s = states.first(where: { $0.job == job && $0.spec == spec }) { return s.state }
        states.removeAll { $0.job == job }
        do { try spec.validate(limits: limits) } catch { throw JobError("refused by this worker's limits: \(error)") }
        let s: State
        switch spec {
        case .train(let t):
            s = .train(try TrainWorker(spec: t, data: LabeledData.load(t.data, features: t.model.inputs, classes: t.model.outputs, needLabels: true,
                                                                       limits: limits)))
        case .infer(let p), .eval(let p):
            let isEval: Bool
            if case .eval = spec { isEval = true } else { isEval = false }
            s = .predict(try PredictWorker(spec: p, data: LabeledData.load(p.data, features: p.model.inputs, classes: p.model.outputs, needLabels: isEval,
                                                                           limits: limits)))
        case .embed(let e):
            s = .embed(try EmbedWorker(spec: e, limits: limits))
        case .mapReduce:
            throw JobError("map-reduce shards do not run here")
        }
        states.append((job, spec, s))
        if states.count > capacity { states.removeFirst() }
        return s
    }

    /// One shard's payload: gradient partial sums (train), logits (infer/eval) or embeddings (embed).
    public func run(_ spec: JobSpec, job: JobID, round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        guard count <= UInt64(Int32.max), start <= UInt64(Int32.max) else { throw JobError("shard range \(start)+\(count) too large") }
        switch try state(job, spec) {
        case .train(let w):
            guard let p = params else { throw JobError("training shard without parameters") }
            guard Int(round) < w.plan.totalSteps else { throw JobError("step \(round) is beyond the job's \(w.plan.totalSteps) steps") }
            return try w.encodedPartials(step: Int(round), version: round, params: p, range: Int(start)..<Int(start + count))
        case .predict(let w):
            return floatFrame(try w.logits(start: Int(start), count: Int(count)))
        case .embed(let w):
            return floatFrame(try w.embeddings(start: Int(start), count: Int(count)))
        }
    }

    func floatFrame(_ v: [Float]) -> Frame {
        Frame(count: v.count * 4) { dst in v.withUnsafeBytes { dst.copyMemory(from: $0) } }
    }
}

public enum OutputFiles {
    /// Writes through a temporary file and a rename, so a crash never leaves half a checkpoint. With `replacing`
    /// false (checkpoints) an existing file is never replaced: the temporary file is linked into place, which fails
    /// when the name is taken.
    public static func write(_ f: OutputFile, replacing: Bool = true) throws {
        let tmp = f.path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: f.bytes) else {
            throw JobError("cannot write '\(f.path)'")
        }
        defer { if !replacing { unlink(tmp) } }
        if !replacing {
            guard link(tmp, f.path) == 0 else {
                let e = errno
                throw JobError(e == EEXIST ? "'\(f.path)' already exists; a job never replaces a checkpoint it did not write"
                                           : "cannot write '\(f.path)': \(String(cString: strerror(e)))")
            }
            return
        }
        guard rename(tmp, f.path) == 0 else {
            unlink(tmp)
            throw JobError("cannot move '\(tmp)' to '\(f.path)': \(String(cString: strerror(errno)))")
        }
    }

    /// Writes result files into `directory` (created if needed); returns their paths.
    public static func writeResults(_ files: [(name: String, data: Data)], directory: String) throws -> [String] {
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw JobError("cannot create '\(directory)': \(error.localizedDescription)")
        }
        return try files.map { f in
            let p = directory + "/" + f.name
            try write(OutputFile(path: p, bytes: f.data))
            return p
        }
    }
}

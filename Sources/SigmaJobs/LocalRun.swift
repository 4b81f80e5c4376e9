import Foundation
import SigmaEngine
import SigmaModel
import SigmaProtocol

extension JobKinds {
    /// The coordinator's side of `spec`, as `sigma submit` asks of a cluster: the spec within `limits`, its files
    /// under `roots` (the driver reads their real paths), and whatever its kind checks before it runs (data shaped
    /// for the model, weights and checkpoint matching it, …). Returns the job's coordinator-side driver.
    public func prepare(_ spec: JobSpec, roots: DataRoots, limits: SpecLimits = .standard) throws -> any RoundDriver {
        try prepare(open(spec), roots: roots, limits: limits)
    }

    /// The same, for a spec already decoded.
    public func prepare(_ spec: OpenSpec, roots: DataRoots, limits: SpecLimits = .standard) throws -> any RoundDriver {
        do { try spec.validate(limits: limits) } catch let e as SpecError { throw JobError("\(e)") }
        return try spec.rooted(roots).prepare(context: KindContext(roots: roots, limits: limits))
    }

    /// A pass over a whole job in this process, through the same shard code and the same reduction as the cluster.
    /// A round's shards (train: micro-batches; infer, eval, embed: batches) run on `threads` lanes, BLAS
    /// single-threaded in each, as on a worker: OpenBLAS's multi-threaded products are not always the same bits as
    /// its single-threaded ones, so BLAS runs on one thread wherever a job's numbers are computed. `progress` is
    /// called after each round. `roots` and `limits` apply as on a cluster (`sigma submit --local` passes the
    /// current folder and the spec's). Returns the job's result payload.
    public func runLocal(_ spec: JobSpec, roots: DataRoots, limits: SpecLimits = .standard, slots: Int = 1, threads: Int = 1,
                         progress: (any RoundDriver, RoundEnd) -> Void = { _, _ in }) throws -> [UInt8] {
        let opened = try open(spec)
        let driver = try prepare(opened, roots: roots, limits: limits)
        let spec = try opened.rooted(roots)
        let savedBLAS = BLASInfo.threads, savedLanes = ComputeLanes.shared.total
        BLASInfo.setThreads(1)
        ComputeLanes.shared.configure(total: threads)
        ComputeLanes.shared.hold()   // (this thread's own lane)
        defer {
            ComputeLanes.shared.release(1)
            ComputeLanes.shared.configure(total: savedLanes)
            BLASInfo.setThreads(savedBLAS)
        }
        let runner = ShardRunner(kinds: self, roots: roots, limits: limits)
        while true {
            let ranges = driver.plan(shares: Array(repeating: 1, count: slots))
            for (i, r) in ranges.enumerated() {
                let payload = try runner.run(spec, job: 0, round: driver.round, params: driver.params, start: r.start, count: r.count)
                try driver.accept(shard: i, payload: payload)
            }
            let end = try driver.completeRound()
            for f in end.files { try OutputFiles.write(f, replacing: false) }
            progress(driver, end)
            if end.finished { return end.results }
        }
    }
}

/// Runs shards on one thread, keeping each job's state (data, model, encoder, open files) between its shards.
public final class ShardRunner {
    /// Keyed by job id *and* spec: a restarted coordinator numbers its jobs from 1 again, and its job 1 must not
    /// run on the model and data of the old one.
    var states: [(job: JobID, spec: JobSpec, worker: any ShardWorker)] = []
    let capacity: Int
    let kinds: JobKinds
    /// What a spec may ask of this process: checked before any of its data is read.
    let context: KindContext

    public init(kinds: JobKinds = .standard, roots: DataRoots = .currentDirectory(), capacity: Int = 4, limits: SpecLimits = .standard) {
        self.kinds = kinds
        self.capacity = capacity
        context = KindContext(roots: roots, limits: limits)
    }

    /// Drops the state (model, data, buffers) of jobs that have ended.
    public func forget(_ jobs: Set<JobID>) {
        states.removeAll { jobs.contains($0.job) }
    }

    func worker(_ job: JobID, _ spec: OpenSpec) throws -> any ShardWorker {
        if let s = states.first(where: { $0.job == job && $0.spec == spec.spec }) { return s.worker }
        states.removeAll { $0.job == job }
        let w = try spec.worker(context: context)
        states.append((job, spec.spec, w))
        if states.count > capacity { states.removeFirst() }
        return w
    }

    /// One shard's payload (a map-reduce partial, gradient partial sums, logits, embeddings, …), from a spec whose
    /// paths this process can read (its state is kept by job and by the spec as assigned).
    public func run(_ spec: OpenSpec, job: JobID, round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        try worker(job, spec).run(round: round, params: params, start: start, count: count)
    }

    /// A collective training step's result (`TrainWorker.collectiveStep`): the job's worker state (its slice, its
    /// weights) is this runner's, so a job's collective steps on a process must all run through the same runner.
    public func runCollective(_ spec: OpenSpec, job: JobID, round: UInt32, params: Frame?, start: UInt64, count: UInt64,
                              _ step: CollectiveStep, exchange: any PeerExchange) throws -> Frame {
        guard let w = try worker(job, spec) as? TrainWorker else { throw JobError("collective steps are for train jobs; this is a \(spec.kind) job") }
        guard Int(round) < w.plan.totalSteps else { throw JobError("step \(round) is beyond the job's \(w.plan.totalSteps) steps") }
        try checkedRange(start, count)
        return try w.collectiveStep(job: job, step: Int(round), params: params, range: Int(start)..<Int(start + count), step, exchange: exchange)
    }

    /// The same, for a spec read as it is.
    public func run(_ spec: JobSpec, job: JobID, round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        try run(kinds.open(spec), job: job, round: round, params: params, start: start, count: count)
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

import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

// The journal: what the core asks the shell to make durable (`CoordinatorAction.journal`, written before anything
// else the same event produced is sent), and the jobs it hands back after a restart (`CoordinatorEvent.restore`).

/// One durable fact about a job.
public enum JournalEntry: Sendable, Equatable {
    /// A job was accepted: its id is taken for good.
    case accepted(JournaledJob)
    /// A shard's result was committed (jobs whose driver resumes from its shards: a restart replays them).
    case committed(job: JobID, shard: ShardIndex, payload: Frame)
    /// A line of a job's log (`sigma logs`).
    case logged(job: JobID, line: JobLogLine)
    /// A finished job's result was dropped (results are kept within `keepResultBytes`).
    case resultDropped(job: JobID)
    /// A job ended, with its result: `result` holds its bytes, or is empty while `resultSize` > 0 when the shell
    /// keeps them on disk (`CoordinatorAction.storeResult`, performed first).
    case ended(job: JobID, state: JobState, error: String, result: [UInt8], resultSize: UInt64, shards: UInt32, elapsed: Nanos)
    /// A deployment was made (its `kind: serve` spec), or undeployed: a restarted coordinator deploys what is left again.
    case deployed(name: String, spec: JobSpec, owner: String)
    case undeployed(name: String)
}

/// What the journal keeps of an accepted job.
public struct JournaledJob: Sendable, Equatable {
    public var id: JobID
    public var spec: JobSpec
    public var options: SubmitOptions
    /// The client-chosen id ("" for none) and the submitter (`Principal.owner`, and its key's name).
    public var key: String
    public var owner: String
    public var ownerName: String
    /// The worker slots the job's first plan was cut for (its shards' ranges follow from them): a restart plans the
    /// same ranges again, so a committed shard's payload lands where it was computed for. 0: not known (a journal
    /// of format 3 or older) — its committed shards are run again.
    public var shares: Int
    public init(id: JobID, spec: JobSpec, options: SubmitOptions, key: String, owner: String, ownerName: String, shares: Int = 0) {
        self.id = id
        self.spec = spec
        self.options = options
        self.key = key
        self.owner = owner
        self.ownerName = ownerName
        self.shares = shares
    }
}

/// A job read back from the journal.
public struct RestoredJob: Sendable {
    public var job: JournaledJob
    /// `.running` (or `.queued`) for a job that had not ended; its end otherwise.
    public var state: JobState
    public var error: String
    public var result: [UInt8]
    /// An ended job whose result the shell keeps on disk: its size (`result` is then empty).
    public var storedResult: UInt64? = nil
    public var shards: UInt32
    public var elapsed: Nanos
    /// A job that had not ended: the driver its kind prepared again (or why it could not), and its committed shards.
    public var input: Result<any RoundDriver, JobError>?
    public var committed: [(shard: ShardIndex, payload: Frame)]
    /// Its files' digests and the files its workers fetch (as `inputResolved` gives them).
    public var digests = InputDigests()
    /// Its log so far (the latest lines).
    public var logs: [JobLogLine] = []
    /// An ended job whose result was dropped (results are kept within `keepResultBytes`).
    public var resultDropped = false

    public init(job: JournaledJob, state: JobState, error: String = "", result: [UInt8] = [], shards: UInt32 = 0, elapsed: Nanos = 0,
                input: Result<any RoundDriver, JobError>? = nil, committed: [(shard: ShardIndex, payload: Frame)] = []) {
        self.job = job
        self.state = state
        self.error = error
        self.result = result
        self.shards = shards
        self.elapsed = elapsed
        self.input = input
        self.committed = committed
    }
}

extension CoordinatorCore {
    /// The jobs of an earlier run: ended ones answer STATUS, WATCH and FETCH as before; the others run again from
    /// their committed shards (a driver that does not resume from shards starts over). Ids continue after `next`.
    mutating func restore(next: JobID, _ restored: [RestoredJob], now: Nanos, into out: inout [CoordinatorAction]) {
        nextJob = max(nextJob, next)
        for r in restored.sorted(by: { $0.job.id < $1.job.id }) {
            nextJob = max(nextJob, r.job.id + 1)
            let submit = Submit(request: 0, options: r.job.options.subtracting([.watch, .pushResult, .deferAccept]), spec: r.job.spec, key: r.job.key)
            let who = Principal(name: r.job.ownerName, key: "", role: nil)
            if !r.state.isFinal, case .success(let driver)? = r.input {
                accept(Self.restoredSubmitter, submit, who, driver: driver, now: now, into: &out, restoring: r.job)
                guard let job = jobs[r.job.id] else { continue }
                job.logs = r.logs
                job.inputDigest = r.digests.input
                job.modelDigest = r.digests.model
                job.inputFiles = r.digests.files
                // (without the first plan's slots the ranges may differ: a payload would land on other rows)
                if r.job.shares == 0, !r.committed.isEmpty {
                    out.append(.log(.warning, "job \(job.id): its \(r.committed.count) committed shard(s) run again (journaled by an older Sigma, without the shards' plan)", job: job.id))
                }
                for (shard, payload) in r.committed where r.job.shares > 0 {
                    guard let i = job.local(shard), job.shards[i].state == .pending else { continue }
                    do { try driver.accept(shard: i, payload: payload) } catch { continue }   // (run again)
                    job.commit(shard: i)
                }
                let at = driver.sharesPerWorker ? "at step \(driver.progress.step) of \(driver.progress.steps)"
                                                : "\(job.done) of \(job.shards.count) shards were committed"
                out.append(.log(.info, "job \(job.id) resumed after a restart: \(at)", job: job.id))
                if !job.shards.isEmpty, job.done == job.shards.count { completeRound(job, driver, now: now, into: &out) }
                continue
            }
            let job = JobEntry(id: r.job.id, spec: r.job.spec, driver: nil, ranges: [], submitter: Self.restoredSubmitter, request: 0,
                               options: submit.options, submittedAt: now &- r.elapsed)
            job.kindSlot = kindSlots.of(r.job.spec.kind)
            job.key = r.job.key
            job.owner = r.job.owner
            job.ownerName = r.job.ownerName
            job.restoredShards = r.shards
            job.logs = r.logs
            job.resultDropped = r.resultDropped
            if !job.key.isEmpty { keyed[Self.scoped(job.key, owner: job.owner)] = job.id }
            jobs[job.id] = job
            activeJobs += 1
            if r.state.isFinal {
                job.result = r.result
                if let size = r.storedResult {
                    job.resultSize = size
                    job.resultStored = true
                }
                finish(job.id, state: r.state, error: r.error, now: now, into: &out, journaled: true)
            } else {
                let why = (r.input.flatMap { if case .failure(let e) = $0 { "\(e)" } else { nil } }) ?? "its kind is not known here"
                finish(job.id, state: .failed, error: "could not be resumed after a restart: \(why)", now: now, into: &out)
            }
        }
    }

    /// The submitter of a job resumed after a restart (no connection: clients follow it again by id).
    static let restoredSubmitter = PeerID([])
}

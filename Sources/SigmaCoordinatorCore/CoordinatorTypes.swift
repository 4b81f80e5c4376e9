import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

/// Settings of the coordinator core. Times in nanoseconds.
public struct CoordinatorConfig: Sendable {
    /// Training steps of two or more workers that offer peer endpoints are reduced by the workers among themselves
    /// (docs/architecture.md "Collective steps"); false: always by the coordinator.
    public var collectiveSteps = true
    /// This coordinator's shared-memory host key (`SharedMemory.hostKey`; the shell sets it when it offers shared
    /// memory): a worker whose HELLO carries `shm=` this key shares its machine and memory.
    public var sharedMemoryKey: String? = nil
    /// The fewest members of a collective segment whose workers all share the coordinator's memory: with fewer the
    /// coordinator reduces, since on one machine its path copies nothing (gradients written into shared memory, the
    /// next PARAMS read there) while each member of a collective step copies about 2·P floats a step — two local
    /// workers trained at 97–99 % of the engine alone through the coordinator, 81–84 % collective
    /// (docs/performance.md). `sigma coordinator --same-machine-collective-from`.
    public var sameMachineCollectiveFrom = 3
    /// The largest payload a peer takes (cluster.yaml `coordinator.max_frame_bytes`; the shell sets it from its link's
    /// limits): a collective segment whose start (weights and optimizer state in one PARAMS) would be larger is not
    /// begun — the coordinator reduces that job's steps.
    public var maxPayload = ProtocolLimits.standard.maxPayload
    /// How often each side sends a heartbeat when it has nothing else to send.
    public var heartbeatInterval: Nanos = 1_000_000_000
    /// Missed intervals before a silent worker is declared dead.
    public var liveness: Int = 3
    /// Least shards queued on a worker beyond its slots (the window grows when shards are short).
    public var prefetch: Int = 1
    /// Most shards in flight per worker slot, whatever the shard length.
    public var maxWindowPerSlot: Int = 64
    /// Shortest gap between two PROGRESS messages to one watcher.
    public var progressInterval: Nanos = 100_000_000
    /// Finished jobs kept for STATUS and FETCH.
    public var keepFinishedJobs: Int = 1000
    /// Deployments the coordinator holds at most (each may queue 256 MiB of inputs and loads its model on workers).
    public var maxDeployments: Int = 64
    /// Bytes of finished jobs' results kept for FETCH (on disk, or in memory and the journal); past it the oldest
    /// results go first (their jobs stay listed; FETCH says the result is no longer kept).
    public var keepResultBytes: UInt64 = 4 << 30
    /// Results larger than this are handed to the shell to keep on disk (`CoordinatorAction.storeResult`) and read
    /// by clients in pieces (RESULT-GET); smaller ones stay in memory and travel in JOB-RESULT. nil: all in memory.
    public var storeResultsOver: UInt64? = nil
    /// Jobs queued or running at once; more are refused (bounded memory).
    public var maxActiveJobs: Int = 10_000
    /// Shards waiting in the queue across all jobs; a submission that would exceed it is refused.
    public var maxQueuedShards: Int = 10_000_000
    /// Same-id submissions that may wait (per id) while the first one's input is read; more are refused.
    public var maxParkedPerKey: Int = 64
    /// Clients following one job at once (PROGRESS or a pushed JOB-RESULT); more are refused.
    public var maxWatchersPerJob: Int = 256
    /// Jobs one connection may follow at once; more are refused.
    public var maxWatchesPerPeer: Int = 256
    /// Submissions whose input is being read at once: per connection, and in all; more are refused (retry later).
    public var maxResolvingPerPeer: Int = 16
    public var maxResolving: Int = 256
    /// Ask the shell to journal what must survive a restart (`CoordinatorAction.journal`).
    public var journal = false
    /// Sizes a submitted spec may ask for (cluster.yaml `limits:`); a spec beyond them is refused before anything
    /// is planned or read.
    public var specLimits = SpecLimits.standard
    /// Attempts a failing shard gets (on different workers when possible) before its job fails.
    public var maxFailedAttempts: Int = 2
    /// Placement policy (docs/scheduling.md).
    public var policy = SchedulingPolicy.latencyAware
    /// Backup copies of late shards near the end of a job or step (latency-aware policy).
    public var hedging = true
    /// A shard is late once it has run this many times its expected time, and at least `hedgeDelay` over it.
    public var hedgeFactor = 2.0
    public var hedgeDelay: Nanos = 20_000_000
    /// Longest a step (the whole job, for single-round jobs) may take before the job fails naming the missing
    /// shards; 0 for no limit.
    public var stepTimeout: Nanos = 3600 * 1_000_000_000
    /// A worker's throughput estimate not refreshed for this long is forgotten (it is measured again).
    public var rateTTL: Nanos = 3_000_000_000
    /// Workers that may die while running one shard before the shard fails its job.
    public var poisonDeaths = 2
    /// This coordinator's build, as READY tells workers (the shell adds its build id); a worker whose HELLO names
    /// another build is warned about when it joins.
    public var build = sigmaBuild
    public init() {}

    /// Time after which a silent worker is dead.
    public var deadAfter: Nanos { heartbeatInterval * Nanos(liveness) }
    /// A worker silent this long is suspect (shown so, and given no new shards) until heard again; with a
    /// liveness of 2 or less there is no suspect phase.
    public var suspectAfter: Nanos { heartbeatInterval * 2 }
    /// A worker whose host has less memory available than this takes no new shards: 5 % of the host's memory,
    /// at least 256 MiB and at most 2 GiB.
    public func memoryReserve(host memory: UInt64) -> UInt64 { min(2 << 30, max(256 << 20, memory / 20)) }
}

/// What happens to the coordinator.
public enum CoordinatorEvent: Sendable {
    /// A well-formed message from a peer, sent as `from` (the principal its connection was admitted as; trusted on
    /// links without authentication).
    case received(PeerID, Message, from: Principal = .trusted)
    /// A message that failed to decode.
    case rejected(PeerID, DecodeError)
    /// The shell read a job's input (see `CoordinatorAction.resolveInput`), with the content digests of its
    /// input and model files for provenance.
    case inputResolved(PeerID, Submit, Result<any RoundDriver, JobError>, digests: InputDigests = InputDigests(), from: Principal = .trusted)
    /// Periodic: heartbeats, liveness, progress.
    case tick
    /// At start, before anything else: the journal's jobs (`RestoredJob`) and the next free job id.
    case restore(next: JobID, jobs: [RestoredJob])
    /// The shell wrote a job's result (`CoordinatorAction.storeResult`), or could not (`error` says why).
    case resultStored(job: JobID, error: String?)
    /// A DEPLOY whose `kind: serve` spec the shell read (or refused: the error to answer).
    case deploy(PeerID, request: UInt64, Result<DeploymentConfig, ErrorReply>, from: Principal = .trusted)
    /// `serveWake` has come: send the batches due, time out what waited too long.
    case serveDue
}

/// What the coordinator asks its shell to do.
/// What the shell found when it read a submission's input.
/// Content digests of a job's files ("" where a job has none, e.g. generated input or a model trained from a seed).
public struct InputDigests: Sendable, Equatable {
    public var input: String
    public var model: String
    /// The files the coordinator serves to workers (`input_transport: coordinator`; else empty), in the order of
    /// `JobSpec.workerInputFiles`.
    public var files: [InputFile]
    public init(input: String = "", model: String = "", files: [InputFile] = []) {
        self.input = input
        self.model = model
        self.files = files
    }
}

/// One input file a job's workers fetch from the coordinator, as it was when the job was submitted.
public struct InputFile: Sendable, Equatable {
    public var path: String
    public var size: UInt64
    public var sha256: String
    public init(path: String, size: UInt64, sha256: String) {
        self.path = path
        self.size = size
        self.sha256 = sha256
    }
}

public enum CoordinatorAction: Sendable, Equatable {
    case send(PeerID, Message)
    /// Prepare this submission (its kind reads and checks what the job needs: an `.npy` header, data, model and
    /// weights) and answer with `.inputResolved` carrying the job's driver (file I/O and job code are the shell's).
    case resolveInput(PeerID, Submit, from: Principal)
    /// Write a file (a checkpoint) atomically.
    case writeFile(OutputFile)
    /// Answer a FILE-GET with FILE-DATA: read the asked bytes of `file` (`files`: the job's count); if the file
    /// cannot be read as it was at submission, answer ERROR naming it (file I/O is the shell's).
    case serveFile(PeerID, FileGet, file: InputFile, files: Int)
    /// A log line; `job`: the job it is about (it goes to that job's log too, `sigma logs`, and to the shell's log as
    /// metadata).
    case log(LogLevel, String, job: JobID? = nil)
    /// Make this durable before sending anything else of the same batch of actions (docs/operations.md, "Restarts
    /// and the journal").
    case journal(JournalEntry)
    /// Keep job `job`'s result on disk, and answer `.resultStored` once it is there; the core no longer holds it,
    /// and tells the job's end (journal, followers, JOB-RESULT) only then.
    case storeResult(job: JobID, bytes: [UInt8])
    /// Answer a RESULT-GET of a stored result (`size` bytes) with RESULT-DATA; ERROR 500 naming the file if it
    /// cannot be read.
    case serveResult(PeerID, ResultGet, size: UInt64)
    /// A stored result is no longer kept (dropped for the byte budget, or its job forgotten): delete it.
    case discardResult(job: JobID)
}

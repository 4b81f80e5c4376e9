import SigmaModel

/// Sigma Protocol version spoken by this build. Every message carries it in byte 1 of its header; a peer of another
/// version is refused at its first message (ERROR 505), so builds whose messages differ never meet mid-job
/// (docs/protocol.md, "Versions").
public let sigmaProtocolVersion: UInt8 = 5

/// The build string sent in HELLO/READY.
public let sigmaBuild = "sigma 0.1.0"

/// Message type codes (docs/protocol.md §3).
public enum MessageType: UInt8, Sendable, CaseIterable {
    case hello = 0x01, ready = 0x02, heartbeat = 0x03, assign = 0x04, result = 0x05, cancel = 0x06
    case disconnect = 0x07, error = 0x08, params = 0x09, drain = 0x0A
    case submit = 0x10, accept = 0x11, status = 0x12, statusReply = 0x13, watch = 0x14, progress = 0x15
    case fetch = 0x16, jobResult = 0x17, cancelJob = 0x18, detail = 0x19, detailReply = 0x1A, drainWorker = 0x1B
    case fileGet = 0x1C, fileData = 0x1D, resultGet = 0x1E, resultData = 0x1F
    case deploy = 0x20, undeploy = 0x21, deploymentsGet = 0x22, deployments = 0x23, predict = 0x24, prediction = 0x25
    case load = 0x26, loaded = 0x27, unload = 0x28, batch = 0x29, batchResult = 0x2A, withdraw = 0x2B

    public var name: String {
        switch self {
        case .hello: "HELLO"
        case .ready: "READY"
        case .heartbeat: "HEARTBEAT"
        case .assign: "ASSIGN"
        case .result: "RESULT"
        case .cancel: "CANCEL"
        case .disconnect: "DISCONNECT"
        case .error: "ERROR"
        case .params: "PARAMS"
        case .drain: "DRAIN"
        case .submit: "SUBMIT"
        case .accept: "ACCEPT"
        case .status: "STATUS"
        case .statusReply: "STATUS-REPLY"
        case .watch: "WATCH"
        case .progress: "PROGRESS"
        case .fetch: "FETCH"
        case .jobResult: "JOB-RESULT"
        case .cancelJob: "CANCEL-JOB"
        case .detail: "DETAIL"
        case .detailReply: "DETAIL-REPLY"
        case .drainWorker: "DRAIN-WORKER"
        case .fileGet: "FILE-GET"
        case .fileData: "FILE-DATA"
        case .resultGet: "RESULT-GET"
        case .resultData: "RESULT-DATA"
        case .deploy: "DEPLOY"
        case .undeploy: "UNDEPLOY"
        case .deploymentsGet: "DEPLOYMENTS-GET"
        case .deployments: "DEPLOYMENTS"
        case .predict: "PREDICT"
        case .prediction: "PREDICTION"
        case .load: "LOAD"
        case .loaded: "LOADED"
        case .unload: "UNLOAD"
        case .batch: "BATCH"
        case .batchResult: "BATCH-RESULT"
        case .withdraw: "WITHDRAW"
        }
    }
}

/// HELLO: a worker introduces itself.
public struct Hello: Sendable, Equatable {
    public var build: String
    public var cores: UInt16
    /// Shards the worker runs at once (its compute threads).
    public var slots: UInt32
    /// bytes
    public var memory: UInt64
    public var host: String
    public var name: String
    /// Random per worker process; a worker that re-registers after a reconnect keeps it.
    public var instance: String
    /// Comma-separated engine features, e.g. "map-reduce,lz4,blas=Haswell,blas-choice=env,blas-best=Cooperlake".
    public var features: String
    public init(build: String = sigmaBuild, cores: UInt16, slots: UInt32, memory: UInt64, host: String, name: String,
                instance: String, features: String) {
        self.build = build
        self.cores = cores
        self.slots = slots
        self.memory = memory
        self.host = host
        self.name = name
        self.instance = instance
        self.features = features
    }
}

/// READY: the coordinator accepts a worker and tells it the heartbeat contract.
public struct Ready: Sendable, Equatable {
    public var workerID: String
    /// milliseconds
    public var heartbeatInterval: UInt32
    public var liveness: UInt16
    public var build: String
    /// Comma-separated link features the coordinator accepted, e.g. "shm" (same-host shared memory, §6).
    public var features: String
    public init(workerID: String, heartbeatInterval: UInt32, liveness: UInt16, build: String = sigmaBuild, features: String = "") {
        self.workerID = workerID
        self.heartbeatInterval = heartbeatInterval
        self.liveness = liveness
        self.build = build
        self.features = features
    }
}

/// HEARTBEAT, both directions. `echo`/`held` let the receiver compute the round-trip time:
/// rtt = now − echo − held, all in the receiver's own clock except `held`, a duration.
public struct Heartbeat: Sendable, Equatable {
    /// Sender's monotonic clock, nanoseconds.
    public var sent: UInt64
    /// The `sent` value of the last heartbeat received from the peer (0 if none).
    public var echo: UInt64
    /// Nanoseconds between receiving that heartbeat and sending this one.
    public var held: UInt64
    /// Shards running on the sender (workers) or 0.
    public var running: UInt32
    /// Shards queued on the sender (workers) or 0.
    public var queued: UInt32
    /// Workers: process CPU use over the last interval, percent of one core; resident memory, bytes (0 from coordinators).
    public var cpu: Double
    public var rss: UInt64
    /// Payload bytes the sender has offered for compression since it started, and what went on the wire for them.
    public var rawOut: UInt64 = 0
    public var wireOut: UInt64 = 0
    /// Workers: memory available on the host (Linux MemAvailable), bytes; 0 when unknown.
    public var available: UInt64 = 0
    public init(sent: UInt64, echo: UInt64 = 0, held: UInt64 = 0, running: UInt32 = 0, queued: UInt32 = 0, cpu: Double = 0, rss: UInt64 = 0) {
        self.sent = sent
        self.echo = echo
        self.held = held
        self.running = running
        self.queued = queued
        self.cpu = cpu
        self.rss = rss
    }
}

/// ASSIGN: run one shard. The job spec travels with the first shard of a job a worker sees.
public struct Assign: Sendable, Equatable {
    public var job: JobID
    public var shard: ShardIndex
    public var attempt: Attempt
    public var start: UInt64
    public var count: UInt64
    /// The job's round (a training step), else 0.
    public var round: UInt32
    /// The shard needs the job's parameters of version `round`, sent in PARAMS.
    public var withParams: Bool
    /// A collective training step: the workers reduce the step's gradient among themselves (docs/protocol.md §4).
    public var collective: CollectiveStep? = nil
    public var spec: JobSpec?
    public init(job: JobID, shard: ShardIndex, attempt: Attempt, start: UInt64, count: UInt64, round: UInt32 = 0, withParams: Bool = false,
                spec: JobSpec? = nil, collective: CollectiveStep? = nil) {
        self.withParams = withParams
        self.collective = collective
        self.job = job
        self.shard = shard
        self.attempt = attempt
        self.start = start
        self.count = count
        self.round = round
        self.spec = spec
    }
}

/// PARAMS: a job's parameters at one version (a training step), sent once to each worker before the first
/// ASSIGN that needs them. The payload is the flat float32 parameter vector (docs/protocol.md).
public struct Params: Sendable, Equatable {
    public var job: JobID
    public var version: UInt32
    public var payload: Frame
    public init(job: JobID, version: UInt32, payload: Frame) {
        self.job = job
        self.version = version
        self.payload = payload
    }
}

/// RESULT: the outcome of one shard attempt.
public struct ShardResult: Sendable, Equatable {
    /// `declined`: a draining worker did not start the shard (run it elsewhere; not a failure).
    /// `tooLarge`: the shard's result does not fit in one frame (it fails its job at once: running it again would not help).
    public enum Status: UInt8, Sendable { case ok = 0, failed = 1, unknownJob = 2, declined = 3, tooLarge = 4 }
    public var job: JobID
    public var shard: ShardIndex
    public var attempt: Attempt
    public var status: Status
    /// Nanoseconds of compute on the worker.
    public var computeTime: UInt64
    public var error: String
    /// The job-kind-specific partial result (map-reduce: an encoded `Partial`); empty unless `.ok`.
    public var payload: Frame
    public init(job: JobID, shard: ShardIndex, attempt: Attempt, status: Status, computeTime: UInt64 = 0,
                error: String = "", payload: Frame = .empty) {
        self.job = job
        self.shard = shard
        self.attempt = attempt
        self.status = status
        self.computeTime = computeTime
        self.error = error
        self.payload = payload
    }
}

/// CANCEL: stop an attempt (or every shard of a job when `shard == .all`).
public struct Cancel: Sendable, Equatable {
    public static let allShards: ShardIndex = .max
    public var job: JobID
    public var shard: ShardIndex
    public var attempt: Attempt
    public init(job: JobID, shard: ShardIndex, attempt: Attempt) {
        self.job = job
        self.shard = shard
        self.attempt = attempt
    }
}

/// ERROR: a refusal or failure; `request` echoes the client's request id (0 when not a reply).
public struct ErrorReply: Sendable, Equatable, Error, CustomStringConvertible {
    public enum Code: UInt16, Sendable {
        case badRequest = 400, forbidden = 403, notFound = 404, tooLarge = 413, invalidSpec = 422, notReady = 425
        case tooManyRequests = 429
        case internalError = 500, unavailable = 503, timedOut = 504, versionNotSupported = 505
    }
    public var code: UInt16
    public var request: UInt64
    public var message: String
    public init(_ code: Code, request: UInt64 = 0, _ message: String) {
        self.code = code.rawValue
        self.request = request
        self.message = message
    }
    public init(rawCode: UInt16, request: UInt64, message: String) {
        code = rawCode
        self.request = request
        self.message = message
    }
    public var description: String { "error \(code): \(message)" }
}

/// SUBMIT options.
public struct SubmitOptions: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Send PROGRESS messages as the job runs.
    public static let watch = SubmitOptions(rawValue: 1)
    /// Send JOB-RESULT when the job ends.
    public static let pushResult = SubmitOptions(rawValue: 2)
    /// Hold ACCEPT until the coordinator's next tick (≤ 50 ms), and drop it if the job has ended by then
    /// (JOB-RESULT then implies acceptance). Saves one message, and one wake-up of the client, per short job.
    public static let deferAccept = SubmitOptions(rawValue: 4)
    /// Bits 3–4: this job's scheduling policy (0: the cluster's; 1 round-robin, 2 least-loaded, 3 latency-aware).
    public static func policy(_ code: UInt8) -> SubmitOptions { SubmitOptions(rawValue: (code & 3) << 3) }
    public var policyCode: UInt8 { (rawValue >> 3) & 3 }
}

public struct Submit: Sendable, Equatable {
    public var request: UInt64
    public var options: SubmitOptions
    public var spec: JobSpec
    /// A client-chosen id (`sigma submit --id`): submitting the same key again returns the existing job
    /// instead of starting another (idempotent retries). "" for none.
    public var key: String
    public init(request: UInt64, options: SubmitOptions, spec: JobSpec, key: String = "") {
        self.request = request
        self.options = options
        self.spec = spec
        self.key = key
    }
}

public struct Accept: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var shards: UInt32
    public init(request: UInt64, job: JobID, shards: UInt32) {
        self.request = request
        self.job = job
        self.shards = shards
    }
}

/// PROGRESS: pushed to watchers when a job's counts change (at most every heartbeat interval, plus the end).
public struct JobProgress: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var state: JobState
    public var done: UInt32
    public var total: UInt32
    public var running: UInt32
    /// Shards re-run after a worker died or failed them.
    public var reruns: UInt32
    /// Training: steps done and planned (0 for single-round jobs), the last step's loss and the last held-out
    /// accuracy (NaN when none yet).
    public var step: UInt32
    public var steps: UInt32
    public var loss: Double
    public var accuracy: Double
    /// The last held-out loss (a regressor's mean squared error; NaN when none yet).
    public var evalLoss: Double = .nan
    /// Live workers taking shards when this was sent (0: the job waits for one).
    public var workers: UInt32
    /// Training: steps in one pass over the training rows (0: not a training job).
    public var stepsPerEpoch: UInt32
    public init(request: UInt64, job: JobID, state: JobState, done: UInt32, total: UInt32, running: UInt32, reruns: UInt32,
                step: UInt32 = 0, steps: UInt32 = 0, loss: Double = .nan, accuracy: Double = .nan, workers: UInt32 = 0,
                stepsPerEpoch: UInt32 = 0) {
        self.workers = workers
        self.stepsPerEpoch = stepsPerEpoch
        self.request = request
        self.job = job
        self.state = state
        self.done = done
        self.total = total
        self.running = running
        self.reruns = reruns
        self.step = step
        self.steps = steps
        self.loss = loss
        self.accuracy = accuracy
    }

    public static func == (a: JobProgress, b: JobProgress) -> Bool {
        a.request == b.request && a.job == b.job && a.state == b.state && a.done == b.done && a.total == b.total
            && a.running == b.running && a.reruns == b.reruns && a.step == b.step && a.steps == b.steps
            && a.stepsPerEpoch == b.stepsPerEpoch
            && a.loss.bitPattern == b.loss.bitPattern && a.accuracy.bitPattern == b.accuracy.bitPattern
            && a.evalLoss.bitPattern == b.evalLoss.bitPattern
    }
}

/// JOB-RESULT: a finished (or failed) job's outcome.
public struct JobOutcome: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var state: JobState
    public var error: String
    public var shards: UInt32
    /// Results dropped because their shard was already committed.
    public var duplicates: UInt32
    public var reruns: UInt32
    /// Submit to end, nanoseconds.
    public var elapsed: UInt64
    /// Job-kind-specific result (map-reduce: an encoded `MapReduceResult`); empty unless completed, and empty when
    /// the result is kept on the coordinator's disk (`size` bytes, read with RESULT-GET; `SigmaClient` does so itself).
    public var payload: Frame
    /// The result's size in bytes (the payload's, when it came with it).
    public var size: UInt64
    /// The result is on the coordinator and must be fetched in pieces (RESULT-GET).
    public var isStored: Bool { size > 0 && payload.isEmpty }
    public init(request: UInt64, job: JobID, state: JobState, error: String = "", shards: UInt32 = 0, duplicates: UInt32 = 0,
                reruns: UInt32 = 0, elapsed: UInt64 = 0, payload: Frame = .empty, size: UInt64? = nil) {
        self.request = request
        self.job = job
        self.state = state
        self.error = error
        self.shards = shards
        self.duplicates = duplicates
        self.reruns = reruns
        self.elapsed = elapsed
        self.payload = payload
        self.size = size ?? UInt64(payload.count)
    }
}

/// Every message of Sigma Protocol v1.
public enum Message: Sendable, Equatable {
    case hello(Hello)
    case ready(Ready)
    case heartbeat(Heartbeat)
    case assign(Assign)
    case result(ShardResult)
    case cancel(Cancel)
    case disconnect(reason: String)
    case error(ErrorReply)
    case params(Params)
    /// A worker will take no new shards and leaves once those it holds are done.
    case drain(reason: String)
    case submit(Submit)
    case accept(Accept)
    case status(request: UInt64)
    case statusReply(request: UInt64, ClusterStatus)
    case watch(request: UInt64, job: JobID)
    case progress(JobProgress)
    case fetch(request: UInt64, job: JobID)
    case jobResult(JobOutcome)
    /// Client: cancel a job (answered with PROGRESS showing its final state).
    case cancelJob(request: UInt64, job: JobID)
    /// Client: one job in depth — log lines from `logFrom`, and its shard attempts when `attempts`.
    case detail(request: UInt64, job: JobID, logFrom: UInt32, attempts: Bool)
    case detailReply(request: UInt64, JobDetail)
    /// Client: stop giving shards to a worker (by id or name); it finishes what it holds and leaves.
    /// Answered with STATUS-REPLY.
    case drainWorker(request: UInt64, worker: String)
    /// Worker: a piece of a job's input file (answered with FILE-DATA, or ERROR echoing the request).
    case fileGet(FileGet)
    case fileData(FileData)
    /// Client: a piece of an ended job's result (answered with RESULT-DATA, or ERROR echoing the request).
    case resultGet(ResultGet)
    case resultData(ResultData)
    /// Client: deploy a `kind: serve` spec (answered with DEPLOYMENTS).
    case deploy(request: UInt64, spec: JobSpec)
    /// Client: drain and stop a deployment (answered with DEPLOYMENTS).
    case undeploy(request: UInt64, name: String)
    case deploymentsGet(request: UInt64)
    case deployments(request: UInt64, [DeploymentStatus])
    /// Client: a deployment's outputs for an input (answered with PREDICTION, or ERROR 429/503/504/4xx).
    case predict(PredictRequest)
    case prediction(Prediction)
    /// Client: withdraws its PREDICT with this request id (whoever waited for it went away): dropped if still queued,
    /// its answer not sent if in a batch. Never answered.
    case withdraw(request: UInt64)
    /// Coordinator → worker: load (and keep) a deployment's model; the worker answers LOADED.
    case load(LoadModel)
    case loaded(ModelLoaded)
    case unload(deployment: UInt32)
    /// Coordinator → worker: a batch of requests; the worker answers BATCH-RESULT.
    case batch(ServeBatch)
    case batchResult(ServeBatchResult)

    /// The request id a client's (or a worker's FILE-GET) message carries, to echo in an ERROR; nil for others.
    public var request: UInt64? {
        switch self {
        case .submit(let s): s.request
        case .status(let r), .watch(let r, _), .fetch(let r, _), .cancelJob(let r, _), .detail(let r, _, _, _), .drainWorker(let r, _): r
        case .fileGet(let g): g.request
        case .resultGet(let g): g.request
        case .deploy(let r, _), .undeploy(let r, _), .deploymentsGet(let r): r
        case .predict(let p): p.request
        default: nil
        }
    }

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .ready: .ready
        case .heartbeat: .heartbeat
        case .assign: .assign
        case .result: .result
        case .cancel: .cancel
        case .disconnect: .disconnect
        case .error: .error
        case .params: .params
        case .drain: .drain
        case .submit: .submit
        case .accept: .accept
        case .status: .status
        case .statusReply: .statusReply
        case .watch: .watch
        case .progress: .progress
        case .fetch: .fetch
        case .jobResult: .jobResult
        case .cancelJob: .cancelJob
        case .detail: .detail
        case .detailReply: .detailReply
        case .drainWorker: .drainWorker
        case .fileGet: .fileGet
        case .fileData: .fileData
        case .resultGet: .resultGet
        case .resultData: .resultData
        case .deploy: .deploy
        case .undeploy: .undeploy
        case .deploymentsGet: .deploymentsGet
        case .deployments: .deployments
        case .predict: .predict
        case .prediction: .prediction
        case .load: .load
        case .loaded: .loaded
        case .unload: .unload
        case .batch: .batch
        case .batchResult: .batchResult
        case .withdraw: .withdraw
        }
    }
}

extension SchedulingPolicy {
    /// The SUBMIT option bits that ask for this policy.
    public var submitOption: SubmitOptions { .policy(code) }
}

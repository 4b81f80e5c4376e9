import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

/// Settings of the coordinator core. Times in nanoseconds.
public struct CoordinatorConfig: Sendable {
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
    case inputResolved(PeerID, Submit, Result<ResolvedInput, JobError>, digests: InputDigests = InputDigests(), from: Principal = .trusted)
    /// Periodic: heartbeats, liveness, progress.
    case tick
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

public enum ResolvedInput: Sendable {
    /// Rows of a map-reduce input file.
    case rows(UInt64)
    /// An ML job, checked and ready: its coordinator-side driver.
    case driver(any RoundDriver)
}

public enum CoordinatorAction: Sendable, Equatable {
    case send(PeerID, Message)
    /// Read this submission's input (the `.npy` header of a map-reduce input; data, model and weights of an ML job)
    /// and answer with `.inputResolved` (file I/O is the shell's).
    case resolveInput(PeerID, Submit, from: Principal)
    /// Write a file (a checkpoint) atomically.
    case writeFile(OutputFile)
    /// Answer a FILE-GET with FILE-DATA: read the asked bytes of `file` (`files`: the job's count); if the file
    /// cannot be read as it was at submission, answer ERROR naming it (file I/O is the shell's).
    case serveFile(PeerID, FileGet, file: InputFile, files: Int)
    /// A log line; `job`: the job it is about (it goes to that job's log too, `sigma logs`, and to the shell's log as
    /// metadata).
    case log(LogLevel, String, job: JobID? = nil)
}


/// The coordinator's whole logic as a state machine: events in, actions out. No sockets, clocks or threads.
public struct CoordinatorCore {
    public let config: CoordinatorConfig
    let startedAt: Nanos
    /// Registered workers in registration order (dead ones are forgotten after a while), and where each peer is.
    var table: [WorkerEntry] = []
    var index: [PeerID: Int] = [:]
    var jobs: [JobID: JobEntry] = [:]
    /// Finished jobs, oldest first (trimmed to `keepFinishedJobs`).
    var finishedOrder: Deque<JobID> = []
    var activeJobs = 0
    var queue: Deque<ShardRef> = []
    var nextJob: JobID = 1
    /// Jobs by the client-chosen id they were submitted with.
    var keyed: [String: JobID] = [:]
    /// Client-chosen ids whose first submission's input is being read, with the same-id submissions that arrived
    /// meanwhile (answered once the first is accepted or refused).
    var resolvingKeys: [String: [(PeerID, Submit)]] = [:]
    /// Submissions whose input the shell is reading, per connection (bounded: `maxResolvingPerPeer`, `maxResolving`).
    var resolving: [PeerID: Int] = [:]
    var resolvingTotal = 0
    /// Jobs each connection follows (PROGRESS watchers and pushed JOB-RESULTs of running jobs).
    var watching: [PeerID: Int] = [:]
    var nextWorker = 1
    var roundRobin = 0
    /// Results whose job was unknown or already finished.
    public private(set) var strayResults = 0
    /// Messages rejected by the decoder.
    public private(set) var rejectedMessages = 0
    /// Messages refused because the sender's role does not allow them.
    public private(set) var refused = 0
    /// Shard attempts placed (the simulator reports the core's cost per decision).
    public internal(set) var decisions = 0
    /// Counters since start (STATUS, Prometheus).
    var totals = ClusterStatus.Totals()
    var rerunsOfForgottenJobs: UInt64 = 0
    var hedgesStarted = 0
    /// Recent samples for the shell's histograms (bounded; the shell takes them): shard round trips (sent to
    /// result, ns), and reduce times of completed rounds (ns).
    var shardSamples: [UInt64] = []
    var reduceSamples: [UInt64] = []
    /// The optimizer's part of each reduce sample (0 where a job has no optimizer), index for index.
    var optimizerSamples: [UInt64] = []
    static let maxSamples = 100_000

    /// Hands the samples gathered since the last call to the shell (metrics).
    public mutating func takeSamples() -> CoordinatorSamples {
        defer {
            shardSamples.removeAll(keepingCapacity: true)
            reduceSamples.removeAll(keepingCapacity: true)
            optimizerSamples.removeAll(keepingCapacity: true)
        }
        return CoordinatorSamples(shards: shardSamples, reduces: reduceSamples, optimizers: optimizerSamples)
    }

    /// One job in depth (nil if unknown).
    public func detail(job id: JobID, logFrom: Int = 0, attempts: Bool, now: Nanos) -> JobDetail? {
        jobs[id].map { detail($0, logFrom: logFrom, attempts: attempts, now: now) }
    }

    public init(config: CoordinatorConfig = CoordinatorConfig(), now: Nanos) {
        self.config = config
        startedAt = now
    }

    // MARK: events

    public mutating func handle(_ event: CoordinatorEvent, now: Nanos) -> [CoordinatorAction] {
        var out: [CoordinatorAction] = []
        switch event {
        case .received(let peer, let message, let who):
            heard(peer, now: now, into: &out)
            if let problem = Self.refusal(message, who) {
                refused += 1
                out.append(.send(peer, .error(ErrorReply(.forbidden, request: message.request ?? 0, problem))))
                out.append(.log(.warning, "refused \(message.type.name) from \(who): \(problem)"))
                return out
            }
            receive(peer, message, who: who, now: now, into: &out)
        case .rejected(let peer, let error):
            rejectedMessages += 1
            heard(peer, now: now, into: &out)
            // Never answer an ERROR with an ERROR (two confused peers would loop).
            if error.type != .error {
                out.append(.send(peer, .error(ErrorReply(error.code, request: error.request, "\(error)"))))
            }
            if error.type == .hello {
                out.append(.log(.warning, "refused worker \(peer): \(error)"))
            }
        case .inputResolved(let peer, let submit, let input, let digests, let who):
            if let n = resolving[peer] {
                resolving[peer] = n > 1 ? n - 1 : nil
                resolvingTotal -= 1
            }
            let before = nextJob
            defer {
                if nextJob > before, let job = jobs[before] {
                    job.inputDigest = digests.input
                    job.modelDigest = digests.model
                    job.inputFiles = digests.files
                }
            }
            switch input {
            case .success(.rows(let n)): accept(peer, submit, who, rows: n, now: now, into: &out)
            case .success(.driver(let d)): accept(peer, submit, who, driver: d, now: now, into: &out)
            case .failure(let e):
                let prefix = submit.spec.kind == "map-reduce" ? "input: " : "\(submit.spec.kind) job '\(submit.spec.name)': "
                out.append(.send(peer, .error(ErrorReply(.invalidSpec, request: submit.request, prefix + "\(e)"))))
            }
            if !submit.key.isEmpty, let parked = resolvingKeys.removeValue(forKey: Self.scoped(submit.key, who)) {
                for (p, s) in parked { receive(p, .submit(s), who: who, now: now, into: &out) }
            }
        case .tick:
            tick(now: now, into: &out)
        }
        dispatch(now: now, into: &out)
        captureJobLogs(out, now: now)
        return out
    }

    /// Lines logged about a job (their `job`) go to that job's log too (`sigma logs`).
    func captureJobLogs(_ out: [CoordinatorAction], now: Nanos) {
        for a in out {
            guard case .log(let level, let text, let id?) = a, let job = jobs[id] else { continue }
            job.log(level, text, now: now)
        }
    }

    /// Who may send what (docs/security.md): nil when `who` may send `m`, else why not.
    static func refusal(_ m: Message, _ who: Principal) -> String? {
        switch m {
        case .hello, .heartbeat, .drain, .result, .fileGet:
            return who.mayWork ? nil : who.refusal(m.type.name, needs: [.worker])
        case .submit, .status, .watch, .fetch, .cancelJob, .detail:
            return who.maySubmit ? nil : who.refusal(m.type.name, needs: [.client, .admin])
        case .drainWorker:
            return who.isAdmin ? nil : who.refusal(m.type.name, needs: [.admin])
        default:
            return nil
        }
    }

    /// A client-chosen job id, as the coordinator keeps it: per owner, so one client's id never names another's job.
    static func scoped(_ key: String, _ who: Principal) -> String { who.owner + "\u{0}" + key }

    /// The job `id` if `who` may see it (its own jobs; every job for admins), else the ERROR to answer.
    func visibleJob(_ id: JobID, to who: Principal, request: UInt64) -> Result<JobEntry, ErrorReply> {
        guard let job = jobs[id] else { return .failure(ErrorReply(.notFound, request: request, "no job \(id) on this coordinator; list jobs with: sigma jobs")) }
        guard who.isAdmin || job.owner == who.owner else {
            return .failure(ErrorReply(.forbidden, request: request,
                "job \(id) was submitted by another client; \(who) sees only its own jobs (an admin key sees all)"))
        }
        return .success(job)
    }

    /// A SUBMIT with a key already used: the same job answers (ACCEPT, and PROGRESS / JOB-RESULT as asked).
    mutating func resubmitted(_ peer: PeerID, _ s: Submit, _ job: JobEntry, now: Nanos, into out: inout [CoordinatorAction]) {
        out.append(.send(peer, .accept(Accept(request: s.request, job: job.id, shards: UInt32(job.shards.count)))))
        job.log(.info, "submitted again with id '\(s.key)': the existing job answers", now: now)
        if job.state.isFinal {
            if s.options.contains(.watch) { out.append(.send(peer, .progress(job.progress(request: s.request)))) }
            if s.options.contains(.pushResult) { out.append(.send(peer, .jobResult(job.outcome(request: s.request)))) }
            return
        }
        if s.options.contains(.watch) || s.options.contains(.pushResult), let e = watchRefusal(peer, request: s.request, job: job) {
            out.append(.send(peer, .error(e)))
            return
        }
        if s.options.contains(.watch) { addWatcher(job, peer, request: s.request) }
        if s.options.contains(.pushResult) {
            job.extraResultTo.append((peer, s.request))
            watching[peer, default: 0] += 1
        }
    }

    /// Why `peer` may not follow one more job (or `job` take one more follower); nil when it may.
    func watchRefusal(_ peer: PeerID, request: UInt64, job: JobEntry? = nil) -> ErrorReply? {
        if let job, job.watchers.count + job.extraResultTo.count >= config.maxWatchersPerJob {
            return ErrorReply(.tooManyRequests, request: request,
                              "job \(job.id) already has \(config.maxWatchersPerJob) followers (the limit); fetch its result when it ends instead")
        }
        if watching[peer, default: 0] >= config.maxWatchesPerPeer {
            return ErrorReply(.tooManyRequests, request: request,
                              "this connection already follows \(config.maxWatchesPerPeer) running jobs (the limit); fetch results when they end instead")
        }
        return nil
    }

    mutating func addWatcher(_ job: JobEntry, _ peer: PeerID, request: UInt64) {
        job.watchers.append(Watcher(peer: peer, request: request, lastSent: 0))
        watching[peer, default: 0] += 1
    }

    /// A job ended: its followers no longer count against their connections.
    mutating func releaseWatches(_ job: JobEntry) {
        for p in job.watchers.map(\.peer) + job.extraResultTo.map(\.0) {
            if let n = watching[p] { watching[p] = n > 1 ? n - 1 : nil }
        }
    }

    func summary(_ j: JobEntry, now: Nanos) -> ClusterStatus.Job {
        var s = ClusterStatus.Job(id: j.id, name: j.spec.name, kind: j.spec.kind, state: j.state, done: UInt32(j.done),
                                  total: UInt32(j.shards.count), running: UInt32(j.running), reruns: UInt32(j.reruns),
                                  duplicates: UInt32(j.duplicates), elapsed: (j.endedAt ?? now) &- j.submittedAt, error: j.error)
        s.key = j.key
        s.hedges = UInt32(j.hedges)
        s.hedgesWon = UInt32(j.hedgesWon)
        s.items = j.itemsDone
        if let g = j.trainProgress {
            s.step = UInt32(g.step)
            s.steps = UInt32(g.steps)
            s.loss = g.loss
            s.accuracy = g.accuracy
        }
        return s
    }

    func detail(_ j: JobEntry, logFrom: Int, attempts: Bool, now: Nanos) -> JobDetail {
        let first = Swift.max(0, logFrom - j.logsDropped)
        let lines = first < j.logs.count ? Array(j.logs[first...]) : []
        return JobDetail(job: summary(j, now: now), policy: j.policyName, specDigest: j.specDigest, inputDigest: j.inputDigest,
                         modelDigest: j.modelDigest, logFrom: UInt32(j.logsDropped + first), logTotal: UInt32(j.logsDropped + j.logs.count),
                         logs: lines, attemptsDropped: UInt32(j.attemptsDropped), attempts: attempts ? j.attempts : [])
    }

    mutating func receive(_ peer: PeerID, _ message: Message, who: Principal, now: Nanos, into out: inout [CoordinatorAction]) {
        switch message {
        case .hello(let h): hello(peer, h, now: now, into: &out)
        case .heartbeat(let hb):
            guard requireWorker(peer, message, into: &out) else { return }
            let k = index[peer]!
            table[k].observe(hb, now: now)
            // Memory reserve: below it the worker takes no new shards (hysteresis: back above 1.5 × the reserve).
            let reserve = config.memoryReserve(host: table[k].hello.memory)
            if !table[k].lowMemory, hb.available > 0, hb.available < reserve {
                table[k].lowMemory = true
                out.append(.log(.warning, "worker \(table[k].label): only \(hb.available >> 20) MiB of memory left on its host (reserve \(reserve >> 20) MiB); no new shards until it recovers"))
            } else if table[k].lowMemory, hb.available == 0 || hb.available >= reserve + reserve / 2 {
                table[k].lowMemory = false
                out.append(.log(.info, "worker \(table[k].label): \(hb.available >> 20) MiB of memory available again; taking shards"))
            }
        case .drain(let reason):
            guard requireWorker(peer, message, into: &out) else { return }
            drain(peer, reason: reason, now: now, into: &out)
        case .result(let r):
            guard requireWorker(peer, message, into: &out) else { return }
            result(peer, r, now: now, into: &out)
        case .disconnect(let reason):
            if let k = index[peer], table[k].isLive {
                out.append(.log(.info, "worker \(table[k].label) disconnected: \(reason)"))
                retire(peer, reason: "disconnected", now: now, into: &out)
            }
        case .error(let e):
            out.append(.log(.warning, "peer \(index[peer].map { table[$0].id } ?? peer.description) reported \(e)"))
        case .submit(let s):
            do { try s.spec.validate(limits: config.specLimits) } catch {
                out.append(.send(peer, .error(ErrorReply(.invalidSpec, request: s.request, "\(error)"))))
                return
            }
            let key = Self.scoped(s.key, who)
            if !s.key.isEmpty, let id = keyed[key], let job = jobs[id] {
                resubmitted(peer, s, job, now: now, into: &out)
                return
            }
            if !s.key.isEmpty, resolvingKeys[key] != nil {
                guard resolvingKeys[key]!.count < config.maxParkedPerKey else {
                    out.append(.send(peer, .error(ErrorReply(.tooManyRequests, request: s.request,
                        "\(config.maxParkedPerKey) submissions with id '\(s.key)' already wait for its first one to be read; retry once it is accepted"))))
                    return
                }
                resolvingKeys[key]!.append((peer, s))
                return
            }
            if s.options.contains(.watch) || s.options.contains(.pushResult), let e = watchRefusal(peer, request: s.request) {
                out.append(.send(peer, .error(e)))
                return
            }
            if case .mapReduce(let spec) = s.spec, spec.input.generatedCount != nil {
                accept(peer, s, who, rows: s.spec.generatedRows, now: now, into: &out)
            } else {
                guard resolving[peer, default: 0] < config.maxResolvingPerPeer, resolvingTotal < config.maxResolving else {
                    out.append(.send(peer, .error(ErrorReply(.tooManyRequests, request: s.request,
                        "\(resolvingTotal) submissions are being read (\(resolving[peer, default: 0]) from this connection; limits \(config.maxResolving) and \(config.maxResolvingPerPeer)); retry once they are accepted"))))
                    return
                }
                resolving[peer, default: 0] += 1
                resolvingTotal += 1
                if !s.key.isEmpty { resolvingKeys[key] = [] }
                out.append(.resolveInput(peer, s, from: who))
            }
        case .status(let req):
            out.append(.send(peer, .statusReply(request: req, status(now: now, visibleTo: who))))
        case .watch(let req, let id):
            let job: JobEntry
            switch visibleJob(id, to: who, request: req) {
            case .success(let j): job = j
            case .failure(let e): out.append(.send(peer, .error(e))); return
            }
            if !job.state.isFinal {
                if let e = watchRefusal(peer, request: req, job: job) { out.append(.send(peer, .error(e))); return }
                addWatcher(job, peer, request: req)
            }
            out.append(.send(peer, .progress(job.progress(request: req))))
        case .fetch(let req, let job):
            let j: JobEntry
            switch visibleJob(job, to: who, request: req) {
            case .success(let found): j = found
            case .failure(let e): out.append(.send(peer, .error(e))); return
            }
            if j.state.isFinal {
                out.append(.send(peer, .jobResult(j.outcome(request: req))))
            } else {
                out.append(.send(peer, .error(ErrorReply(.notReady, request: req,
                    "job \(job) is \(j.state) (\(j.done)/\(j.shards.count) shards); try again or watch it"))))
            }
        case .cancelJob(let req, let id):
            let job: JobEntry
            switch visibleJob(id, to: who, request: req) {
            case .success(let j): job = j
            case .failure(let e): out.append(.send(peer, .error(e))); return
            }
            if !job.state.isFinal {
                let by = job.owner == who.owner ? "a client" : "admin \(who.name)"
                job.log(.warning, "cancelled by \(by)", now: now)
                finish(id, state: .cancelled, error: "cancelled by \(by)", now: now, into: &out)
            }
            out.append(.send(peer, .progress(jobs[id]!.progress(request: req))))
        case .detail(let req, let id, let from, let withAttempts):
            let job: JobEntry
            switch visibleJob(id, to: who, request: req) {
            case .success(let j): job = j
            case .failure(let e): out.append(.send(peer, .error(e))); return
            }
            out.append(.send(peer, .detailReply(request: req, detail(job, logFrom: Int(from), attempts: withAttempts, now: now))))
        case .drainWorker(let req, let name):
            // An id names one worker; a name may be shared (two processes started with the same --name).
            let byName = table.indices.filter { table[$0].isLive && table[$0].hello.name == name }
            guard let k = table.indices.first(where: { table[$0].isLive && table[$0].id == name }) ?? (byName.count == 1 ? byName[0] : nil) else {
                let live = table.filter(\.isLive).map { "\($0.id) (\($0.hello.name))" }.joined(separator: ", ")
                let problem = byName.count > 1 ? "'\(name)' names \(byName.count) live workers (\(byName.map { table[$0].id }.joined(separator: ", "))); give the id"
                                               : "no live worker '\(name)'; live workers: \(live.isEmpty ? "none" : live)"
                out.append(.send(peer, .error(ErrorReply(.notFound, request: req, problem + " (see: sigma workers)"))))
                return
            }
            let p = table[k].peer
            if table[k].state == .ready {
                out.append(.send(p, .drain(reason: "asked by a client")))
                drain(p, reason: "asked by a client", now: now, into: &out)
            }
            out.append(.send(peer, .statusReply(request: req, status(now: now, visibleTo: who))))
        case .fileGet(let g):
            guard let k = index[peer], table[k].isLive else {
                out.append(.send(peer, .error(ErrorReply(.notReady, request: g.request, "FILE-GET from an unregistered worker; send HELLO first"))))
                return
            }
            fileGet(peer, g, into: &out)
        case .ready, .assign, .params, .cancel, .accept, .statusReply, .progress, .jobResult, .detailReply, .fileData:
            out.append(.send(peer, .error(ErrorReply(.badRequest, "\(message.type.name) is not accepted by a coordinator"))))
        }
    }

    /// A worker asks for a piece of a job's input file: only files the job's own spec names (by index), only while
    /// the job runs, only for jobs that ship their inputs, only from a worker running one of the job's shards.
    func fileGet(_ peer: PeerID, _ g: FileGet, into out: inout [CoordinatorAction]) {
        func refuse(_ code: ErrorReply.Code, _ problem: String) {
            out.append(.send(peer, .error(ErrorReply(code, request: g.request, "FILE-GET job \(g.job) file \(g.index): \(problem)"))))
        }
        guard let job = jobs[g.job] else { return refuse(.notFound, "no such job on this coordinator") }
        guard !job.state.isFinal else { return refuse(.notFound, "the job has ended (\(job.state))") }
        guard job.spec.inputTransport == .coordinator else {
            return refuse(.notFound, "the job reads its inputs from a shared path (input_transport: shared)")
        }
        guard Int(g.index) < job.inputFiles.count else { return refuse(.notFound, "the job has \(job.inputFiles.count) input files") }
        let f = job.inputFiles[Int(g.index)]
        guard g.offset <= f.size else { return refuse(.badRequest, "offset \(g.offset) is past the end of \(f.path) (\(f.size) bytes)") }
        guard g.length <= FileGet.maxLength else { return refuse(.tooLarge, "\(g.length) bytes asked; at most \(FileGet.maxLength) per request") }
        guard let k = index[peer], table[k].inFlight.keys.contains(where: { $0.job == g.job }) else {
            return refuse(.forbidden, "this worker runs no shard of the job")
        }
        out.append(.serveFile(peer, g, file: f, files: job.inputFiles.count))
    }

    func requireWorker(_ peer: PeerID, _ m: Message, into out: inout [CoordinatorAction]) -> Bool {
        if let k = index[peer], table[k].isLive { return true }
        out.append(.send(peer, .error(ErrorReply(.notReady, "\(m.type.name) from an unregistered worker; send HELLO first"))))
        return false
    }

    // MARK: workers

    mutating func hello(_ peer: PeerID, _ h: Hello, now: Nanos, into out: inout [CoordinatorAction]) {
        guard h.slots >= 1, h.slots <= 4096 else {
            out.append(.send(peer, .error(ErrorReply(.badRequest, "HELLO: slots must be between 1 and 4096, got \(h.slots)"))))
            return
        }
        // The same worker process registering again, or on a new connection (it found this coordinator silent):
        // its old session's shards run again, but the process is alive, so no shard is blamed for killing it.
        if index[peer] != nil { retire(peer, reason: "re-registered", now: now, into: &out, blame: false) }
        for w in table where w.hello.instance == h.instance && !h.instance.isEmpty && w.isLive {
            retire(w.peer, reason: "reconnected as a new session", now: now, into: &out, blame: false)
        }
        if let old = index[peer] {   // the same peer id registering again: its old entry leaves the table
            table.remove(at: old)
            reindex()
        }
        let id = "w\(nextWorker)"
        nextWorker += 1
        var w = WorkerEntry(peer: peer, id: id, hello: h, joinedAt: now, lastSeen: now)
        w.lastSent = now
        w.busyUntil = now
        index[peer] = table.count
        table.append(w)
        out.append(.send(peer, .ready(Ready(workerID: id, heartbeatInterval: UInt32(config.heartbeatInterval / 1_000_000),
                                            liveness: UInt16(config.liveness)))))
        out.append(.log(.info, "worker \(id) joined: \(h.name)@\(h.host), \(h.cores) cores, \(h.slots) slots, \(h.build)"))
    }

    /// Takes a worker out of service and queues its shards again, first in line.
    /// `died`: its shards were lost (else it declined them). `blame`: a shard that was running on a worker that
    /// died counts that death; at `poisonDeaths` it fails its job.
    mutating func retire(_ peer: PeerID, reason: String, now: Nanos, into out: inout [CoordinatorAction], died: Bool = true, blame: Bool = true) {
        guard let k = index[peer], table[k].isLive else { return }
        let w = table[k]
        let lost = w.inFlight.keys.sorted { ($0.job, $0.shard) > ($1.job, $1.shard) }
        for (key, f) in w.inFlight { jobs[key.job]?.endAttempt(f.record, died ? .lost : .declined, now: now, error: "worker \(w.id) \(reason)") }
        table[k].inFlight.removeAll()
        table[k].paramsSent.removeAll()
        table[k].state = .dead
        table[k].diedAt = now
        var poisoned: [(JobID, String)] = []
        for key in lost {
            guard let job = jobs[key.job], !job.state.isFinal, let i = job.local(key.shard) else { continue }
            job.shards[i].holders.removeAll { $0 == peer }
            guard job.shards[i].state == .running else { continue }
            if died && blame {
                job.shards[i].killed.append("\(w.id)@\(w.hello.host)")
                if job.shards[i].killed.count >= config.poisonDeaths {
                    poisoned.append((key.job, "job \(key.job): \(job.describe(i)) was running on \(job.shards[i].killed.count) workers that died (\(job.shards[i].killed.joined(separator: ", "))); not running it again — it may be what kills them"))
                    continue
                }
            }
            job.requeue(i, rerun: true, now: now, queue: &queue)
        }
        if !lost.isEmpty {
            out.append(.log(.warning, "worker \(w.label) \(reason); \(lost.count) shard(s) queued again"))
        }
        for (job, error) in poisoned { finish(job, state: .failed, error: error, now: now, into: &out) }
    }

    /// A worker asked to leave once its shards are done: no new shards; DISCONNECT when it holds none.
    mutating func drain(_ peer: PeerID, reason: String, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let k = index[peer], table[k].state == .ready else { return }
        table[k].state = .draining
        // Shards it was assigned but has not started would wait behind its running ones: it declines those.
        out.append(.log(.info, "worker \(table[k].label) draining (\(reason)); \(table[k].inFlight.count) shard(s) to finish"))
        finishDrain(k, now: now, into: &out)
    }

    mutating func finishDrain(_ k: Int, now: Nanos, into out: inout [CoordinatorAction]) {
        guard table[k].state == .draining, table[k].inFlight.isEmpty else { return }
        out.append(.send(table[k].peer, .disconnect(reason: "drained")))
        out.append(.log(.info, "worker \(table[k].label) drained and left"))
        retire(table[k].peer, reason: "drained", now: now, into: &out, died: false)
    }

    mutating func reindex() {
        index = [:]
        for (k, w) in table.enumerated() { index[w.peer] = k }
    }

    // MARK: jobs

    mutating func accept(_ peer: PeerID, _ s: Submit, _ who: Principal, rows: UInt64, now: Nanos, into out: inout [CoordinatorAction]) {
        guard case .mapReduce(let spec) = s.spec else { return }
        guard rows > 0 else {
            out.append(.send(peer, .error(ErrorReply(.invalidSpec, request: s.request, "input has no rows"))))
            return
        }
        // (counted before the ranges are made: a count of 2^64 - 1 rows must not become an array of them)
        do { try spec.sharding.check(rows: rows, limits: config.specLimits) } catch {
            out.append(.send(peer, .error(ErrorReply(.invalidSpec, request: s.request, "\(error)"))))
            return
        }
        let ranges = spec.sharding.ranges(rows: rows)
        admit(peer, s, who, driver: nil, ranges: ranges, detail: "\(rows) rows in \(ranges.count) shards", now: now, into: &out)
    }

    mutating func accept(_ peer: PeerID, _ s: Submit, _ who: Principal, driver: any RoundDriver, now: Nanos, into out: inout [CoordinatorAction]) {
        let ranges = driver.plan(shares: firstShares(s.spec)).map { ($0.start, $0.count) }
        admit(peer, s, who, driver: driver, ranges: ranges, detail: driver.planSummary ?? "\(ranges.count) shards", now: now, into: &out)
    }

    mutating func admit(_ peer: PeerID, _ s: Submit, _ who: Principal, driver: (any RoundDriver)?, ranges: [(start: UInt64, count: UInt64)], detail: String,
                        now: Nanos, into out: inout [CoordinatorAction]) {
        guard activeJobs < config.maxActiveJobs, queue.count + ranges.count <= config.maxQueuedShards else {
            out.append(.send(peer, .error(ErrorReply(.unavailable, request: s.request,
                "coordinator is full (\(activeJobs) active jobs, \(queue.count) shards queued); retry later"))))
            return
        }
        let id = nextJob
        nextJob += 1
        activeJobs += 1
        let job = JobEntry(id: id, spec: s.spec, driver: driver, ranges: ranges, submitter: peer, request: s.request, options: s.options, submittedAt: now)
        job.key = s.key
        job.owner = who.owner
        job.ownerName = who.name
        if !s.key.isEmpty { keyed[Self.scoped(s.key, who)] = id }
        job.policyName = policy(of: job).rawValue
        job.specDigest = Digest.fnv1a64(s.spec.encoded)
        if s.options.contains(.watch) { addWatcher(job, peer, request: s.request) }
        jobs[id] = job
        for i in 0..<ranges.count { queue.append(ShardRef(job: id, shard: ShardIndex(i))) }
        if s.options.contains(.deferAccept) {
            job.acceptPending = true
        } else {
            out.append(.send(peer, .accept(Accept(request: s.request, job: id, shards: UInt32(ranges.count)))))
        }
        out.append(.log(.info, "job \(id) '\(s.spec.name)' (\(s.spec.kind)) accepted: \(detail)", job: id))
        if ranges.isEmpty, let d = driver { completeRound(job, d, now: now, into: &out) }
    }

    /// A round of an ML job is complete: reduce it, then start the next round or finish the job.
    mutating func completeRound(_ job: JobEntry, _ d: any RoundDriver, now: Nanos, into out: inout [CoordinatorAction]) {
        let end: RoundEnd
        do { end = try d.completeRound() } catch {
            finish(job.id, state: .failed, error: "job \(job.id): \(error)", now: now, into: &out)
            return
        }
        if end.reduceNanos > 0, reduceSamples.count < CoordinatorCore.maxSamples {
            reduceSamples.append(end.reduceNanos)
            optimizerSamples.append(end.optimizerNanos)
        }
        for f in end.files { out.append(.writeFile(f)) }
        for line in end.log { out.append(.log(.info, "job \(job.id): \(line)", job: job.id)) }
        if end.finished {
            job.result = end.results
            finish(job.id, state: .completed, error: "", now: now, into: &out)
            return
        }
        let shares = roundShares(job, items: d.roundItems, bytes: d.params?.count ?? 0, now: now)
        let planned = d.plan(shares: shares.map(\.weight))
        let refs = job.startRound(planned.map { ($0.start, $0.count) }, now: now)
        for (g, p) in zip(refs, planned) {
            job.shards[g - job.base].preferred = p.share.flatMap { $0 < shares.count ? shares[$0].worker : nil }
            queue.append(ShardRef(job: job.id, shard: ShardIndex(g)))
        }
        sendProgress(job.id, now: now, force: false, into: &out)
        if refs.isEmpty { completeRound(job, d, now: now, into: &out) }
    }

    mutating func result(_ peer: PeerID, _ r: ShardResult, now: Nanos, into out: inout [CoordinatorAction]) {
        let key = AttemptKey(job: r.job, shard: r.shard, attempt: r.attempt)
        let k = index[peer]!
        let wasInFlight = table[k].inFlight.removeValue(forKey: key)
        table[k].bytesIn += UInt64(r.payload.count + 32)
        totals.bytesIn += UInt64(r.payload.count + 32)
        defer { finishDrain(k, now: now, into: &out) }
        guard let job = jobs[r.job], !job.state.isFinal else {
            strayResults += 1
            return
        }
        if Int(r.shard) < job.base {
            job.duplicates += 1   // a late answer from an earlier round
            if let f = wasInFlight { job.endAttempt(f.record, .late, now: now, compute: r.computeTime) }
            return
        }
        guard let i = job.local(r.shard), r.attempt >= 1, r.attempt <= job.shards[i].attempts else {
            out.append(.send(peer, .error(ErrorReply(.badRequest, "RESULT for job \(r.job) shard \(r.shard) attempt \(r.attempt) that was never assigned"))))
            strayResults += 1
            return
        }
        if let f = wasInFlight, r.status == .ok {
            table[k].observeShard(f, job: job.id, kind: JobKindIndex.of(job.spec), items: job.ranges[i].count, compute: r.computeTime,
                                  resultBytes: r.payload.count, now: now)
        }
        let record = wasInFlight?.record ?? -1
        if job.shards[i].state == .done {
            job.shards[i].holders.removeAll { $0 == peer }
            job.endAttempt(record, .late, now: now, compute: r.computeTime)
            job.duplicates += 1
            jobs[r.job] = job
            return
        }
        // Only the worker holding that attempt may answer for it: a result for an attempt this worker was never given,
        // or no longer holds (it answered already), commits nothing and fails nothing.
        guard wasInFlight != nil else {
            strayResults += 1
            out.append(.log(.warning, "job \(r.job) shard \(r.shard) attempt \(r.attempt): ignored a \(r.status) result from worker \(table[k].id) (\(table[k].hello.name)), which does not hold that attempt", job: r.job))
            return
        }
        job.shards[i].holders.removeAll { $0 == peer }
        let w = table[k]
        var fatal: String? = nil
        switch r.status {
        case .ok:
            do {
                if let d = job.driver {
                    try d.accept(shard: i, payload: r.payload)
                    job.commit(shard: i, partial: nil)
                } else if let spec = job.mapReduce {
                    let p = try Partial.decode(r.payload, expectedBins: spec.histogram?.bins ?? 0)
                    if spec.input.generatedCount != nil, p.count != job.ranges[i].count {
                        throw ByteReadError(field: "partial.count", problem: "\(p.count) values for a shard of \(job.ranges[i].count) rows")
                    }
                    job.commit(shard: i, partial: p)
                }
                table[k].shardsDone += 1
                totals.shardsDone += 1
                if let f = wasInFlight, shardSamples.count < CoordinatorCore.maxSamples { shardSamples.append(now &- f.sentAt) }
                job.endAttempt(record, .ok, now: now, compute: r.computeTime)
                if job.shards[i].hedged && r.attempt == job.shards[i].attempts { job.hedgesWon += 1 }
                cancelOthers(job, i, except: peer, now: now, into: &out)
            } catch {
                out.append(.log(.warning, "job \(r.job) shard \(r.shard): bad partial from worker \(w.id) (\(w.hello.host)): \(error)", job: r.job))
                job.endAttempt(record, .failed, now: now, compute: r.computeTime, error: "malformed result: \(error)")
                fatal = job.requeueOrFail(shard: i, worker: w, error: "malformed result: \(error)", config: config, now: now, queue: &queue, into: &out)
            }
        case .failed:
            totals.shardsFailed += 1
            job.endAttempt(record, .failed, now: now, compute: r.computeTime, error: r.error)
            fatal = job.requeueOrFail(shard: i, worker: w, error: r.error, config: config, now: now, queue: &queue, into: &out)
        case .unknownJob:
            // The worker no longer has the spec: send it again with the retry.
            job.endAttempt(record, .failed, now: now, error: "the worker no longer had the job's spec; sent again")
            table[k].specSent.remove(r.job)
            table[k].paramsSent[r.job] = nil
            job.requeue(i, rerun: false, now: now, queue: &queue)
        case .declined:
            // A draining worker did not start it: run it elsewhere (not a failure).
            job.endAttempt(record, .declined, now: now, error: r.error)
            job.requeue(i, rerun: false, now: now, queue: &queue)
        }
        jobs[r.job] = job
        if let error = fatal {
            finish(r.job, state: .failed, error: error, now: now, into: &out)
        } else if job.done == job.shards.count {
            if let d = job.driver {
                completeRound(job, d, now: now, into: &out)
            } else {
                finish(r.job, state: .completed, error: "", now: now, into: &out)
            }
        } else {
            sendProgress(r.job, now: now, force: false, into: &out)
        }
    }

    mutating func finish(_ id: JobID, state: JobState, error: String, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let job = jobs[id], !job.state.isFinal else { return }
        activeJobs -= 1
        job.acceptPending = false   // JOB-RESULT (or the job's status) now says it was accepted
        finishedOrder.append(id)
        while finishedOrder.count > config.keepFinishedJobs {
            let old = finishedOrder.removeFirst()
            if let j = jobs[old], !j.key.isEmpty { keyed[j.owner + "\u{0}" + j.key] = nil }
            rerunsOfForgottenJobs += UInt64(jobs[old]?.reruns ?? 0)
            jobs[old] = nil
        }
        job.state = state
        job.error = error
        job.endedAt = now
        switch state {
        case .completed: totals.jobsCompleted += 1
        case .failed: totals.jobsFailed += 1
        case .cancelled: totals.jobsCancelled += 1
        default: break
        }
        if state == .completed, let spec = job.mapReduce {
            let partials = job.partials.map { $0! }
            job.result = MapReduceResult.reduce(spec, partials: partials).encoded
        }
        job.partials = []
        job.releaseDriver()   // (its data, model and parameter payload: megabytes to gigabytes per job)
        // Stop whatever still runs for this job; workers that hold its parameters are told too, so they free
        // the job's state (model, gradients, data) now rather than when a later job pushes it out.
        for k in table.indices where table[k].isLive && (table[k].inFlight.keys.contains(where: { $0.job == id }) || table[k].paramsSent[id] != nil) {
            out.append(.send(table[k].peer, .cancel(Cancel(job: id, shard: Cancel.allShards, attempt: 0))))
            for (key, f) in table[k].inFlight where key.job == id { job.endAttempt(f.record, .cancelled, now: now, error: "job \(state)") }
            table[k].inFlight = table[k].inFlight.filter { $0.key.job != id }
            if table[k].inFlight.isEmpty { table[k].busyUntil = now }
        }
        for k in table.indices where table[k].paramsSent[id] != nil { table[k].paramsSent[id] = nil }
        jobs[id] = job
        let seconds = Double(now - job.submittedAt) / 1e9
        out.append(.log(state == .completed ? .info : .error,
                        "job \(id) \(state) in \(String(format: "%.3f", seconds)) s" + (error.isEmpty ? "" : ": \(error)"), job: id))
        sendProgress(id, now: now, force: true, into: &out)
        releaseWatches(jobs[id]!)
        jobs[id]!.watchers.removeAll()
        if job.options.contains(.pushResult) {
            out.append(.send(job.submitter, .jobResult(job.outcome(request: job.request))))
        }
        for (p, req) in job.extraResultTo { out.append(.send(p, .jobResult(job.outcome(request: req)))) }
        job.extraResultTo = []
    }

    mutating func sendProgress(_ id: JobID, now: Nanos, force: Bool, into out: inout [CoordinatorAction]) {
        guard let job = jobs[id], !job.watchers.isEmpty else { return }
        for k in job.watchers.indices where force || now &- job.watchers[k].lastSent >= config.progressInterval {
            job.watchers[k].lastSent = now
            out.append(.send(job.watchers[k].peer, .progress(job.progress(request: job.watchers[k].request))))
        }
        jobs[id] = job
    }

    // MARK: time

    mutating func heard(_ peer: PeerID, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let k = index[peer] else { return }
        table[k].lastSeen = now
        if table[k].suspect {
            table[k].suspect = false
            out.append(.log(.info, "worker \(table[k].label) heard from again; no longer suspect"))
        }
    }

    mutating func tick(now: Nanos, into out: inout [CoordinatorAction]) {
        for k in table.indices where table[k].isLive {
            let w = table[k]
            if !w.suspect, config.suspectAfter < config.deadAfter, now &- w.lastSeen > config.suspectAfter {
                table[k].suspect = true
                out.append(.log(.warning, "worker \(w.label) suspect: silent for \((now - w.lastSeen) / 1_000_000) ms; no new shards until heard from"))
            }
            if now &- w.lastSeen > config.deadAfter {
                out.append(.send(w.peer, .disconnect(reason: "no heartbeat for \((now - w.lastSeen) / 1_000_000) ms")))
                retire(w.peer, reason: "missed \(config.liveness) heartbeats (silent \((now - w.lastSeen) / 1_000_000) ms)", now: now, into: &out)
            } else if now &- w.lastSent >= config.heartbeatInterval {
                out.append(.send(w.peer, .heartbeat(w.heartbeat(now: now))))
                table[k].lastSent = now
            }
        }
        // Forget workers dead for a while (they stay visible in STATUS for 10 liveness windows).
        let forgetAfter = config.deadAfter * 10
        if table.contains(where: { !$0.isLive && now &- $0.diedAt > forgetAfter }) {
            table.removeAll { !$0.isLive && now &- $0.diedAt > forgetAfter }
            reindex()
            roundRobin = 0
        }
        hedge(now: now, into: &out)
        checkTimeouts(now: now, into: &out)
        for (id, job) in jobs where !job.state.isFinal {
            if job.acceptPending {
                job.acceptPending = false
                out.append(.send(job.submitter, .accept(Accept(request: job.request, job: id, shards: UInt32(job.shards.count)))))
            }
            if !job.watchers.isEmpty { sendProgress(id, now: now, force: false, into: &out) }
        }
    }

    // MARK: snapshots

    public func status(now: Nanos, visibleTo who: Principal = .trusted) -> ClusterStatus {
        let ws = table.map { w in
            var s = ClusterStatus.Worker(id: w.id, name: w.hello.name, host: w.hello.host, cores: w.hello.cores, slots: w.hello.slots,
                                 state: w.suspect && w.isLive ? "suspect" : w.lowMemory && w.state == .ready ? "low-memory"
                                     : w.state == .ready ? (w.inFlight.isEmpty ? "ready" : "busy") : w.state.rawValue,
                                 inFlight: UInt32(w.inFlight.count), rtt: UInt64(w.rtt), lastSeen: now &- w.lastSeen,
                                 shardsDone: w.shardsDone)
            s.throughput = w.rates.max() ?? 0
            s.bandwidth = w.bandwidth
            s.bytesIn = w.bytesIn
            s.bytesOut = w.bytesOut
            s.cpu = w.cpu
            s.rss = w.rss
            s.memory = w.hello.memory
            s.rawBytes = w.rawOut
            s.wireBytes = w.wireOut
            s.joined = now &- w.joinedAt
            s.blas = w.hello.feature("blas") ?? ""
            s.blasChoice = w.hello.feature("blas-choice") ?? ""
            s.blasBest = w.hello.feature("blas-best") ?? ""
            return s
        }
        let ids = who.isAdmin ? jobs.keys.sorted() : jobs.filter { $0.value.owner == who.owner }.keys.sorted()
        let js = ids.suffix(100).compactMap { jobs[$0] }.map { summary($0, now: now) }
        var st = ClusterStatus(uptime: now &- startedAt, workers: ws, jobs: js, queuedShards: UInt32(queue.count))
        st.policy = config.policy.rawValue
        st.totals = totals
        st.totals.reruns = UInt64(jobs.values.reduce(0) { $0 + $1.reruns }) + rerunsOfForgottenJobs
        st.totals.hedges = UInt64(hedgesStarted)
        return st
    }

    /// Live (not dead) workers.
    public var liveWorkers: Int { liveCount }
    /// The peers of live workers.
    public var livePeers: Set<PeerID> { Set(table.lazy.filter(\.isLive).map(\.peer)) }
    var liveCount: Int {
        // (through the buffer: `table[k].isLive` copied the whole WorkerEntry — most of the time at 1,000 workers)
        // (indices, not `reduce`: passing an element by value copies it too)
        table.withUnsafeBufferPointer { ws in
            var n = 0
            for i in ws.indices where ws[i].state != .dead { n += 1 }
            return n
        }
    }
    public func job(_ id: JobID) -> (state: JobState, done: Int, total: Int, duplicates: Int, reruns: Int)? {
        jobs[id].map { ($0.state, $0.done, $0.shards.count, $0.duplicates, $0.reruns) }
    }

    /// Scheduling counts of a job: backup attempts started, and how many of them finished first.
    public func hedges(_ id: JobID) -> (started: Int, won: Int)? { jobs[id].map { ($0.hedges, $0.hedgesWon) } }

    /// Per worker (by its coordinator id): shards completed.
    public var shardsDone: [String: UInt64] { Dictionary(table.map { ($0.id, $0.shardsDone) }, uniquingKeysWith: +) }

    /// Other attempts of a committed shard are cancelled on their workers.
    mutating func cancelOthers(_ job: JobEntry, _ i: Int, except winner: PeerID, now: Nanos, into out: inout [CoordinatorAction]) {
        for p in job.shards[i].holders where p != winner {
            guard let k = index[p] else { continue }
            let keys = table[k].inFlight.keys.filter { $0.job == job.id && $0.shard == ShardIndex(job.base + i) }
            for key in keys {
                if let f = table[k].inFlight[key] { job.endAttempt(f.record, .cancelled, now: now, error: "another attempt finished first") }
                table[k].inFlight[key] = nil
                out.append(.send(p, .cancel(Cancel(job: job.id, shard: key.shard, attempt: key.attempt))))
            }
            if table[k].inFlight.isEmpty { table[k].busyUntil = now }
            finishDrain(k, now: now, into: &out)
        }
        job.shards[i].holders.removeAll()
    }
}

extension JobSpec {
    /// Rows of a generated input (0 for files, whose rows the shell resolves).
    var generatedRows: UInt64 {
        switch self {
        case .mapReduce(let s): s.input.generatedCount ?? 0
        default: 0
        }
    }
}

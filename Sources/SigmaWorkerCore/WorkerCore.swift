import SigmaModel
import SigmaProtocol

/// A shard to compute, with the job spec it belongs to.
public struct ShardTask: Sendable, Equatable {
    public let job: JobID
    public let shard: ShardIndex
    public let attempt: Attempt
    public let start: UInt64
    public let count: UInt64
    public let spec: JobSpec
    /// The job's round (training step) and the parameters of that version, when the job kind needs them.
    public var round: UInt32 = 0
    public var params: Frame? = nil
    /// A collective training step (the workers reduce it among themselves), else nil.
    public var collective: CollectiveStep? = nil
    /// The worker core's session (connection) it was assigned in: its result goes back with it (`.computed`).
    public var session: UInt64 = 0

    public init(job: JobID, shard: ShardIndex, attempt: Attempt, start: UInt64, count: UInt64, spec: JobSpec,
                round: UInt32 = 0, params: Frame? = nil) {
        self.job = job
        self.shard = shard
        self.attempt = attempt
        self.start = start
        self.count = count
        self.spec = spec
        self.round = round
        self.params = params
    }

    public static func == (a: ShardTask, b: ShardTask) -> Bool {
        a.job == b.job && a.shard == b.shard && a.attempt == b.attempt && a.start == b.start && a.count == b.count
            && a.spec == b.spec && a.round == b.round && a.params == b.params && a.collective == b.collective
    }
}

/// What a worker process measures of itself (the shell reads /proc).
public struct WorkerLoad: Sendable, Equatable {
    /// CPU use over the last interval, percent of one core.
    public var cpu: Double = 0
    /// Resident memory, bytes.
    public var rss: UInt64 = 0
    /// Payload bytes offered for compression and what went on the wire for them, since start.
    public var rawOut: UInt64 = 0
    public var wireOut: UInt64 = 0
    /// Memory available on the host, bytes (0: unknown).
    public var available: UInt64 = 0
    public init() {}
}

public enum WorkerEvent: Sendable {
    /// The link is (re)made: introduce ourselves.
    case connected
    case received(Message)
    case rejected(DecodeError)
    /// A compute thread finished a shard.
    /// A shard's result, with the session its task was given (`ShardTask.session`; nil: not checked).
    case computed(ShardResult, session: UInt64? = nil)
    case tick
    /// Leave cleanly (tell the coordinator).
    case stop
    /// Take no new shards, finish those held, then leave (SIGTERM).
    case drain
}

public enum WorkerAction: Sendable, Equatable {
    case send(Message)
    case compute(ShardTask)
    /// Drop queued (not yet started) shards of a job (`shard` nil), or one attempt of one shard.
    case cancel(job: JobID, shard: ShardIndex?, attempt: Attempt? = nil)
    /// Drop every queued shard.
    case cancelAll
    /// Make a new connection (the coordinator went silent); followed by `.connected`.
    case reconnect(reason: String)
    /// The coordinator refused us for good (e.g. incompatible protocol version).
    case fatal(String)
    /// Drained: every shard is done and the coordinator let us go; exit.
    case finished
    case log(LogLevel, String)
}


/// A worker's protocol logic: handshake, heartbeats, coordinator liveness, spec cache, shard bookkeeping.
public struct WorkerCore {
    public struct Config: Sendable {
        public var hello: Hello
        /// Used until READY says otherwise, nanoseconds.
        public var heartbeatInterval: Nanos = 1_000_000_000
        public var liveness = 3
        /// Job specs remembered (least recently used go first).
        public var specCacheSize = 64
        /// The largest shard result one RESULT may carry (the protocol's payload limit); a larger one is answered
        /// `tooLarge`, which fails its job at once naming the shard, its size and the limit.
        public var maxResultBytes = 256 << 20
        public init(hello: Hello) { self.hello = hello }
    }

    public enum State: Equatable { case connecting, ready(workerID: String) }

    public private(set) var state = State.connecting
    public let config: Config
    var interval: Nanos
    var liveness: Int
    var lastReceived: Nanos = 0
    var lastSent: Nanos = 0
    var connectedAt: Nanos = 0
    var peerSent: UInt64 = 0
    var peerSentArrived: Nanos = 0
    var specs: [JobID: JobSpec] = [:]
    var specOrder: [JobID] = []
    /// The latest parameters received per job (PARAMS), with their version.
    var params: [JobID: (version: UInt32, frame: Frame)] = [:]
    /// Attempts handed to the compute threads and not yet reported.
    /// Attempts assigned and not answered, with the session (connection) each was assigned in.
    public private(set) var pending: [AttemptRef: UInt64] = [:]
    /// Counts connections: a result computed for an attempt of an earlier one is dropped — a restarted coordinator
    /// numbers its jobs from 1 again, so a late result could match a new attempt's (job, shard, attempt).
    public private(set) var session: UInt64 = 0
    public private(set) var completed: UInt64 = 0
    /// The worker process's load, set by the shell; reported in every heartbeat.
    public var load = WorkerLoad()
    var lastHeartbeat: Nanos = 0
    /// Since when we have been draining (nil: not draining).
    public private(set) var drainingSince: Nanos? = nil

    public struct AttemptRef: Hashable, Sendable {
        let job: JobID, shard: ShardIndex, attempt: Attempt
    }

    public init(config: Config) {
        self.config = config
        interval = config.heartbeatInterval
        liveness = config.liveness
    }

    public var workerID: String? {
        if case .ready(let id) = state { return id }
        return nil
    }

    public mutating func handle(_ event: WorkerEvent, now: Nanos) -> [WorkerAction] {
        var out: [WorkerAction] = []
        switch event {
        case .connected:
            session &+= 1
            state = .connecting
            connectedAt = now
            lastReceived = now
            peerSent = 0
            send(.hello(config.hello), now: now, into: &out)
        case .received(let m):
            lastReceived = now
            receive(m, now: now, into: &out)
        case .rejected(let e):
            lastReceived = now
            out.append(.log(.warning, "coordinator sent a bad message: \(e)"))
            if e.type != .error { send(.error(ErrorReply(e.code, "\(e)")), now: now, into: &out) }
        case .computed(var r, let from):
            let key = AttemptRef(job: r.job, shard: r.shard, attempt: r.attempt)
            // (cancelled, or from an earlier session: not this attempt's, even when its numbers are the same)
            guard let assigned = pending[key], from == nil || from == assigned else { return out }
            pending[key] = nil
            completed += 1
            if r.status == .ok, r.payload.count > config.maxResultBytes {
                r = ShardResult(job: r.job, shard: r.shard, attempt: r.attempt, status: .tooLarge, computeTime: r.computeTime,
                                error: "its result is \(r.payload.count) bytes, over the \(config.maxResultBytes)-byte frame limit (coordinator.max_frame_bytes); give the job more shards, so that each shard's result fits")
            }
            send(.result(r), now: now, into: &out)
        case .tick:
            // Draining, nothing left, and no word from the coordinator for two intervals: leave anyway.
            if let since = drainingSince, pending.isEmpty, now &- since > 2 * interval {
                send(.disconnect(reason: "worker drained"), now: now, into: &out)
                out.append(.finished)
            } else if now &- lastReceived > interval * Nanos(liveness) {
                let silent = (now - lastReceived) / 1_000_000
                pending.removeAll()
                out.append(.cancelAll)
                out.append(.reconnect(reason: state == .connecting
                    ? "no READY from the coordinator after \(silent) ms"
                    : "coordinator silent for \(silent) ms"))
            } else if now &- lastSent >= interval || (state != .connecting && now &- lastHeartbeat >= interval) {
                // Heartbeats also go out while results keep the link busy: they carry the load figures.
                if state == .connecting {
                    send(.hello(config.hello), now: now, into: &out)
                } else {
                    send(.heartbeat(heartbeat(now: now)), now: now, into: &out)
                }
            }
        case .stop:
            send(.disconnect(reason: "worker stopping"), now: now, into: &out)
        case .drain:
            guard drainingSince == nil else { return out }
            drainingSince = now
            out.append(.log(.info, "draining: finishing \(pending.count) shard(s), taking no new ones"))
            if case .ready = state {
                send(.drain(reason: "worker draining (SIGTERM)"), now: now, into: &out)
            } else {
                out.append(.finished)
            }
        }
        return out
    }

    mutating func receive(_ m: Message, now: Nanos, into out: inout [WorkerAction]) {
        switch m {
        case .ready(let r):
            state = .ready(workerID: r.workerID)
            // A new registration (a restarted coordinator, or one that declared this worker dead): nothing cached
            // proves it belongs to the same job, so specs and parameter versions go (the coordinator sends them again
            // with the first shard). A kept "newer" version of a reused job id once made a worker ignore the new job's
            // parameters forever.
            specs.removeAll()
            specOrder.removeAll()
            params.removeAll()
            // (within an hour and a thousand intervals: the products of the two stay far from overflowing)
            interval = Nanos(min(max(10, r.heartbeatInterval), 3_600_000)) * 1_000_000
            liveness = Int(min(max(1, r.liveness), 1000))
            out.append(.log(.info, "registered as \(r.workerID) with \(r.build) (heartbeat \(r.heartbeatInterval) ms × \(r.liveness))"))
        case .heartbeat(let hb):
            peerSent = hb.sent
            peerSentArrived = now
        case .assign(let a):
            guard case .ready = state else {
                send(.error(ErrorReply(.notReady, "ASSIGN before READY")), now: now, into: &out)
                return
            }
            if let s = a.spec { remember(a.job, s) }
            if drainingSince != nil {
                send(.result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .declined,
                                         error: "worker draining")), now: now, into: &out)
                return
            }
            guard let spec = specs[a.job] else {
                send(.result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .unknownJob,
                                         error: "no spec for job \(a.job) on this worker")), now: now, into: &out)
                return
            }
            var p: Frame? = nil
            if a.withParams {
                guard let held = params[a.job], held.version == a.round else {
                    send(.result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .unknownJob,
                                             error: "no parameters of version \(a.round) for job \(a.job) on this worker")), now: now, into: &out)
                    return
                }
                p = held.frame
            }
            pending[AttemptRef(job: a.job, shard: a.shard, attempt: a.attempt)] = session
            var task = ShardTask(job: a.job, shard: a.shard, attempt: a.attempt, start: a.start, count: a.count, spec: spec,
                                 round: a.round, params: p)
            task.session = session
            task.collective = a.collective
            out.append(.compute(task))
        case .params(let p):
            guard case .ready = state else {
                send(.error(ErrorReply(.notReady, "PARAMS before READY")), now: now, into: &out)
                return
            }
            if let held = params[p.job], held.version > p.version { return }   // older than what we have
            params[p.job] = (p.version, p.payload)
        case .cancel(let c):
            if c.shard == Cancel.allShards {
                pending = pending.filter { $0.key.job != c.job }
                params[c.job] = nil
                out.append(.cancel(job: c.job, shard: nil))
            } else {
                pending[AttemptRef(job: c.job, shard: c.shard, attempt: c.attempt)] = nil
                out.append(.cancel(job: c.job, shard: c.shard, attempt: c.attempt))
            }
        case .drain(let reason):
            // The coordinator drains us (`sigma worker --drain`): finish what we hold, take nothing new, then leave.
            if drainingSince == nil {
                drainingSince = now
                out.append(.log(.info, "coordinator asked this worker to drain (\(reason)): finishing \(pending.count) shard(s)"))
            }
        case .disconnect(let reason) where drainingSince != nil:
            out.append(.log(.info, "drained; coordinator said: \(reason)"))
            pending.removeAll()
            out.append(.cancelAll)
            out.append(.finished)
        case .disconnect(let reason):
            out.append(.log(.warning, "coordinator disconnected us: \(reason)"))
            pending.removeAll()
            out.append(.cancelAll)
            out.append(.reconnect(reason: "coordinator said: \(reason)"))
        case .error(let e):
            if e.code == ErrorReply.Code.versionNotSupported.rawValue || e.code == ErrorReply.Code.forbidden.rawValue {
                out.append(.fatal("coordinator refused this worker: \(e.message)"))
            } else if e.code == ErrorReply.Code.notReady.rawValue {
                // The coordinator does not know us (it restarted, or declared us dead): register again.
                out.append(.log(.warning, "coordinator does not know this worker (\(e.message)); registering again"))
                pending.removeAll()
                out.append(.cancelAll)
                state = .connecting
                send(.hello(config.hello), now: now, into: &out)
            } else {
                out.append(.log(.warning, "coordinator error \(e.code): \(e.message)"))
            }
        default:
            send(.error(ErrorReply(.badRequest, "\(m.type.name) is not accepted by a worker")), now: now, into: &out)
        }
    }

    mutating func send(_ m: Message, now: Nanos, into out: inout [WorkerAction]) {
        lastSent = now
        out.append(.send(m))
    }

    mutating func heartbeat(now: Nanos) -> Heartbeat {
        lastHeartbeat = now
        var h = Heartbeat(sent: now, echo: peerSent, held: peerSent == 0 ? 0 : now &- peerSentArrived,
                          running: UInt32(pending.count), queued: 0, cpu: load.cpu, rss: load.rss)
        h.rawOut = load.rawOut
        h.wireOut = load.wireOut
        h.available = load.available
        return h
    }

    mutating func remember(_ job: JobID, _ spec: JobSpec) {
        if specs[job] == nil {
            specOrder.append(job)
            if specOrder.count > config.specCacheSize {
                let old = specOrder.removeFirst()
                specs[old] = nil
                params[old] = nil
            }
        }
        specs[job] = spec
    }
}

import DequeModule
import SigmaJobs
import SigmaModel
import SigmaProtocol

struct ShardRef: Hashable, Sendable {
    let job: JobID
    let shard: ShardIndex
}

/// Results are keyed by (job, shard, attempt): the first result of a shard counts, the rest are duplicates.
struct AttemptKey: Hashable, Sendable {
    let job: JobID
    let shard: ShardIndex
    let attempt: Attempt
}

struct Watcher {
    let peer: PeerID
    let request: UInt64
    var lastSent: Nanos
}

/// What the coordinator knows about one registered worker.
struct WorkerEntry {
    enum State { case ready, dead }
    let peer: PeerID
    let id: String
    let hello: Hello
    let joinedAt: Nanos
    var state = State.ready
    var lastSeen: Nanos
    /// When we last sent anything (heartbeats are only needed when idle).
    var lastSent: Nanos = 0
    var diedAt: Nanos = 0
    /// Attempts assigned and not yet answered, with the time they were sent.
    var inFlight: [AttemptKey: Nanos] = [:]
    /// Jobs whose spec this worker already has.
    var specSent: Set<JobID> = []
    /// The parameter version of each job this worker holds (PARAMS is sent once per version).
    var paramsSent: [JobID: UInt32] = [:]
    var shardsDone: UInt64 = 0
    /// Smoothed heartbeat round trip, ns (0 until measured).
    var rtt: Double = 0
    /// Smoothed compute time per shard, ns (0 until measured).
    var shardTime: Double = 0
    /// The worker's last heartbeat timestamp and when it arrived (echoed back for RTT).
    var peerSent: UInt64 = 0
    var peerSentArrived: Nanos = 0

    init(peer: PeerID, id: String, hello: Hello, joinedAt: Nanos, lastSeen: Nanos) {
        self.peer = peer
        self.id = id
        self.hello = hello
        self.joinedAt = joinedAt
        self.lastSeen = lastSeen
    }

    mutating func observe(_ hb: Heartbeat, now: Nanos) {
        peerSent = hb.sent
        peerSentArrived = now
        if hb.echo != 0, now > hb.echo, now - hb.echo > hb.held {
            let sample = Double(now - hb.echo - hb.held)
            rtt = rtt == 0 ? sample : 0.8 * rtt + 0.2 * sample
        }
    }

    mutating func observeShard(sentAt: Nanos, compute: UInt64, now: Nanos) {
        let sample = Double(compute)
        shardTime = shardTime == 0 ? sample : 0.9 * shardTime + 0.1 * sample
    }

    func heartbeat(now: Nanos) -> Heartbeat {
        Heartbeat(sent: now, echo: peerSent, held: peerSent == 0 ? 0 : now &- peerSentArrived,
                  running: UInt32(inFlight.count), queued: 0)
    }

    /// Shards this worker may hold at once: its slots, plus enough queued behind them to cover one round trip
    /// when shards are short (a bandwidth-delay product in shards), at least `prefetch` per slot.
    func window(_ c: CoordinatorConfig) -> Int {
        guard state != .dead else { return 0 }
        let slots = Int(hello.slots)
        var perSlot = 1 + c.prefetch
        if shardTime > 0 {
            let latency = Swift.max(rtt, 200_000)   // ns; loopback heartbeats under-report queueing
            perSlot = Swift.max(perSlot, 1 + Int((latency / shardTime).rounded(.up)))
        }
        return slots * Swift.min(perSlot, c.maxWindowPerSlot)
    }
}

struct ShardEntry {
    enum State: UInt8 { case pending, running, done }
    var state = State.pending
    /// Attempts handed out so far (the next one gets `attempts + 1`).
    var attempts: Attempt = 0
    var failures = 0
    /// Workers currently running an attempt.
    var holders: [PeerID] = []
    var failedOn: [String] = []
}

/// A job and its shards. A class: shard tables are large and updated in place on every result.
/// Multi-round jobs (training: one round per step) replace `ranges`/`shards` each round; shard indices on the wire
/// are global (`base` + index in the round), so a late result from an earlier round is recognised as stale.
final class JobEntry {
    let id: JobID
    let spec: JobSpec
    /// Map-reduce jobs: the spec and the partials per shard.
    let mapReduce: MapReduceSpec?
    /// ML jobs: the coordinator-side driver (reduction, optimizer, results).
    let driver: (any RoundDriver)?
    var ranges: [(start: UInt64, count: UInt64)]
    /// Global index of `shards[0]`.
    var base = 0
    let submitter: PeerID
    let request: UInt64
    let options: SubmitOptions
    let submittedAt: Nanos
    var startedAt: Nanos? = nil
    var endedAt: Nanos? = nil
    var state = JobState.queued
    var shards: [ShardEntry]
    var partials: [Partial?]
    var done = 0
    var running = 0
    var duplicates = 0
    var reruns = 0
    var error = ""
    var result: [UInt8] = []
    var watchers: [Watcher] = []
    /// ACCEPT deferred to the next tick (SUBMIT option `deferAccept`).
    var acceptPending = false

    init(id: JobID, spec: JobSpec, driver: (any RoundDriver)?, ranges: [(start: UInt64, count: UInt64)], submitter: PeerID, request: UInt64,
         options: SubmitOptions, submittedAt: Nanos) {
        self.id = id
        self.spec = spec
        if case .mapReduce(let m) = spec { mapReduce = m } else { mapReduce = nil }
        self.driver = driver
        self.ranges = ranges
        self.submitter = submitter
        self.request = request
        self.options = options
        self.submittedAt = submittedAt
        shards = Array(repeating: ShardEntry(), count: ranges.count)
        partials = Array(repeating: nil, count: mapReduce == nil ? 0 : ranges.count)
    }

    /// Index into `shards` of a global shard index, if it belongs to the current round.
    func local(_ shard: ShardIndex) -> Int? {
        let i = Int(shard) - base
        return i >= 0 && i < shards.count ? i : nil
    }

    /// Starts the next round with new ranges; returns their global shard indices.
    func startRound(_ newRanges: [(start: UInt64, count: UInt64)]) -> Range<Int> {
        base += shards.count
        ranges = newRanges
        shards = Array(repeating: ShardEntry(), count: newRanges.count)
        done = 0
        running = 0
        return base..<(base + newRanges.count)
    }

    var unit: String { driver?.unit ?? "rows" }

    /// Commits the first result of a shard (it may arrive from an older attempt while a newer one is queued).
    func commit(shard i: Int, partial: Partial?) {
        if shards[i].state == .running { running -= 1 }
        shards[i].state = .done
        if let p = partial { partials[i] = p }
        done += 1
    }

    /// A shard failed on `worker`: run it again elsewhere, or — once it has failed too often — return the
    /// error that fails the job.
    func requeueOrFail(shard i: Int, worker: WorkerEntry, error: String, config: CoordinatorConfig,
                       queue: inout Deque<ShardRef>, into out: inout [CoordinatorAction]) -> String? {
        shards[i].failures += 1
        shards[i].failedOn.append("\(worker.id)@\(worker.hello.host)")
        let round = driver.map { $0.kind == "train" ? "step \($0.round + 1) " : "" } ?? ""
        let message = "\(round)shard \(base + i) (\(unit) \(ranges[i].start)..<\(ranges[i].start + ranges[i].count)) failed on worker \(worker.id) (host \(worker.hello.host)): \(error)"
        if shards[i].failures >= config.maxFailedAttempts {
            return "job \(id): \(message); failed \(shards[i].failures) times (on \(shards[i].failedOn.joined(separator: ", ")))"
        }
        out.append(.log(.warning, "job \(id): \(message); running it again"))
        if shards[i].state == .running && shards[i].holders.isEmpty {
            shards[i].state = .pending
            running -= 1
            reruns += 1
            queue.prepend(ShardRef(job: id, shard: ShardIndex(base + i)))
        }
        return nil
    }

    func progress(request: UInt64) -> JobProgress {
        var p = JobProgress(request: request, job: id, state: state, done: UInt32(done), total: UInt32(shards.count),
                            running: UInt32(running), reruns: UInt32(reruns))
        if let d = driver, d.kind == "train" {
            let g = d.progress
            p.step = UInt32(g.step)
            p.steps = UInt32(g.steps)
            p.loss = g.loss
            p.accuracy = g.accuracy
        }
        return p
    }

    func outcome(request: UInt64) -> JobOutcome {
        JobOutcome(request: request, job: id, state: state, error: error, shards: UInt32(shards.count),
                   duplicates: UInt32(duplicates), reruns: UInt32(reruns), elapsed: (endedAt ?? submittedAt) - submittedAt,
                   payload: result.isEmpty ? .empty : Frame(result))
    }
}

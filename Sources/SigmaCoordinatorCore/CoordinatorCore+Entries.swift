import DequeModule
import SigmaJobCore
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

/// What the coordinator knows about one registered worker, including the scheduler's model of it.
struct WorkerEntry {
    enum State: String { case ready, draining, dead }
    let peer: PeerID
    let id: String
    let hello: Hello
    let joinedAt: Nanos
    /// HELLO's `key=value` features, parsed once (status reads them every tick; a split per read was most of an
    /// idle coordinator's CPU).
    let features: [String: String]
    var state = State.ready
    var lastSeen: Nanos
    /// Silent for more than two heartbeat intervals but not yet declared dead: takes no new shards meanwhile.
    var suspect = false
    /// When we last sent anything (heartbeats are only needed when idle).
    var lastSent: Nanos = 0
    var diedAt: Nanos = 0
    /// Attempts assigned and not yet answered.
    var inFlight: [AttemptKey: InFlight] = [:]
    /// Jobs whose spec this worker already has.
    var specSent: Set<JobID> = []
    /// Completed jobs this worker may now let go of, told at the next tick (a CANCEL each): the release is then
    /// not part of a small job's round trip, whose processes would handle it meanwhile.
    var releases: [JobID] = []
    /// The parameter version of each job this worker holds (PARAMS is sent once per version).
    var paramsSent: [JobID: UInt32] = [:]
    var shardsDone: UInt64 = 0
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    /// Load the worker reports in heartbeats: CPU percent of one core, resident bytes, payload bytes before/after LZ4.
    var cpu = 0.0
    var rss: UInt64 = 0
    /// Memory available on the worker's host, bytes (0: not reported), and whether that is below the reserve
    /// (`lowMemory`: no new shards — an out-of-memory kill would lose every shard it holds).
    var available: UInt64 = 0
    var lowMemory = false
    var rawOut: UInt64 = 0
    var wireOut: UInt64 = 0
    /// Smoothed heartbeat round trip, ns (0 until measured).
    var rtt: Double = 0
    /// Smoothed link bandwidth, bytes/s (0 until measured).
    var bandwidth: Double = 0
    /// Smoothed compute throughput per slot by job kind, items/s (0 until measured).
    var rates = [Double](repeating: 0, count: JobKindIndex.count)
    /// When each rate was last measured: an estimate not refreshed for `rateTTL` is dropped, so a worker that was
    /// slow once (and so got no work) is tried again.
    var ratedAt = [Nanos](repeating: 0, count: JobKindIndex.count)
    /// Jobs this worker has returned a result for: the first shard of a job pays one-time setup (reading data,
    /// building the model) and is not used to estimate throughput.
    var warmJobs: Set<JobID> = []
    /// Smoothed compute time per shard, ns (0 until measured): sizes the prefetch window.
    var shardTime: Double = 0
    /// When the scheduler expects this worker's slots to have worked through what it holds.
    var busyUntil: Nanos = 0
    /// The worker's last heartbeat timestamp and when it arrived (echoed back for RTT).
    var peerSent: UInt64 = 0
    var peerSentArrived: Nanos = 0

    struct InFlight {
        var sentAt: Nanos
        /// Expected compute, ns (0 if unknown).
        var compute: Double
        var bytes: Int
        /// Shards this worker held when this one was sent (its queue position).
        var ahead: Int
        /// Index of this attempt's record in its job's `attempts` (-1: not recorded).
        var record: Int = -1
    }

    init(peer: PeerID, id: String, hello: Hello, joinedAt: Nanos, lastSeen: Nanos) {
        self.peer = peer
        self.id = id
        self.hello = hello
        features = hello.featureValues
        self.joinedAt = joinedAt
        self.lastSeen = lastSeen
    }

    var isLive: Bool { state != .dead }
    /// Measured throughput for `kind`, if measured recently enough.
    func rate(_ kind: Int, now: Nanos, ttl: Nanos) -> Double? {
        rates[kind] > 0 && now &- ratedAt[kind] <= ttl ? rates[kind] : nil
    }
    /// Takes new shards.
    var accepts: Bool { state == .ready && !suspect && !lowMemory }
    var slots: Int { Int(hello.slots) }
    var label: String { "\(id) (host \(hello.host))" }

    mutating func observe(_ hb: Heartbeat, now: Nanos) {
        cpu = hb.cpu
        rss = hb.rss
        available = hb.available
        rawOut = hb.rawOut
        wireOut = hb.wireOut
        peerSent = hb.sent
        peerSentArrived = now
        if hb.echo != 0, now > hb.echo, now - hb.echo > hb.held {
            let sample = Double(now - hb.echo - hb.held)
            rtt = rtt == 0 ? sample : 0.8 * rtt + 0.2 * sample
        }
    }

    /// A result arrived: update compute throughput and (when the shard did not queue behind others) bandwidth.
    mutating func observeShard(_ f: InFlight, job: JobID, kind: Int, items: UInt64, compute: UInt64, resultBytes: Int, now: Nanos) {
        let moved = f.bytes + resultBytes
        // A shard that did not queue behind others measures the round trip too (busy workers send no heartbeats).
        if f.ahead < slots, moved < 64 * 1024, now > f.sentAt, Double(now - f.sentAt) > Double(compute) {
            let sample = Double(now - f.sentAt) - Double(compute)
            rtt = rtt == 0 ? sample : 0.9 * rtt + 0.1 * sample
        }
        if warmJobs.insert(job).inserted {
            if inFlight.isEmpty { busyUntil = now }
            return
        }
        if compute > 0, items > 0 {
            ratedAt[kind] = now
            let sample = Double(items) / (Double(compute) / 1e9)
            rates[kind] = rates[kind] == 0 ? sample : 0.7 * rates[kind] + 0.3 * sample
            shardTime = shardTime == 0 ? Double(compute) : 0.9 * shardTime + 0.1 * Double(compute)
        }
        if f.ahead < slots, moved >= 256 * 1024, now > f.sentAt {
            let transfer = Double(now - f.sentAt) - Double(compute) - rtt
            if transfer > 0 {
                let sample = Double(moved) / (transfer / 1e9)
                bandwidth = bandwidth == 0 ? sample : 0.7 * bandwidth + 0.3 * sample
            }
        }
        if inFlight.isEmpty { busyUntil = now }
    }

    func heartbeat(now: Nanos) -> Heartbeat {
        Heartbeat(sent: now, echo: peerSent, held: peerSent == 0 ? 0 : now &- peerSentArrived,
                  running: UInt32(inFlight.count), queued: 0)
    }

    /// Shards this worker may hold at once. Latency-aware: its slots, plus enough queued behind them to cover one
    /// round trip when shards are short (a bandwidth-delay product in shards). Other policies: slots × (1 + prefetch).
    func window(_ c: CoordinatorConfig, adaptive: Bool) -> Int {
        guard accepts else { return 0 }
        return Self.window(slots: slots, rtt: rtt, shardTime: adaptive ? shardTime : 0, c)
    }

    /// The window from plain fields (placement reads them in place rather than copying entries).
    static func window(slots: Int, rtt: Double, shardTime: Double, _ c: CoordinatorConfig) -> Int {
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
    /// Workers that died while running this shard ("w2@host").
    var killed: [String] = []
    /// The worker this shard was sized for (latency-aware training steps).
    var preferred: PeerID? = nil
    /// When the latest attempt was sent, and how long it was expected to take (ns, 0 if unknown).
    var sentAt: Nanos = 0
    var expected: Double = 0
    /// A backup attempt is running (hedged).
    var hedged = false
}

/// A job and its shards. A class: shard tables are large and updated in place on every result.
/// Multi-round jobs (training: one round per step) replace `ranges`/`shards` each round; shard indices on the wire
/// are global (`base` + index in the round), so a late result from an earlier round is recognised as stale.
final class JobEntry {
    let id: JobID
    let spec: JobSpec
    /// Its slot in the per-kind throughput tables (`JobKindIndex`).
    var kindSlot = 0
    /// Its result was dropped to keep finished results within `keepResultBytes`.
    var resultDropped = false
    /// A job restored as ended from the journal: its shard count (its shard table is not kept).
    var restoredShards: UInt32? = nil
    /// Shards of its current round (of its last, for a restored ended job).
    var shardCount: Int { restoredShards.map(Int.init) ?? shards.count }
    /// The coordinator-side driver of its rounds (reduction, optimizer, results) while the job runs. It may hold
    /// the job's data, model, optimizer state and parameter payload, so it goes when the job ends (`releaseDriver`).
    private(set) var driver: (any RoundDriver)?
    /// What an ended ML job keeps of its driver: the unit of its ranges, its last round, its training progress.
    private var endedDriver: (unit: String, round: UInt32, train: RoundProgress?)? = nil
    var ranges: [(start: UInt64, count: UInt64)]
    /// Global index of `shards[0]`.
    var base = 0
    /// Its current collective segment (training steps the workers reduce among themselves), if any; why the
    /// current one can no longer finish (set where a shard of it is queued again); and whether a failed collective
    /// step has the coordinator reduce this job's steps from now on.
    var collective: CollectiveSegment? = nil
    var collectiveBroken: String? = nil
    var collectiveOff = false
    /// The log said once that this job's few workers, all on the coordinator's machine, are reduced by it.
    var reducedOnOneMachineSaid = false
    /// The step whose collective attempts were last stopped, and how many times in a row (`repairCollectives`).
    var collectiveStops: (step: Int, count: Int) = (0, 0)
    let submitter: PeerID
    let request: UInt64
    let options: SubmitOptions
    let submittedAt: Nanos
    var startedAt: Nanos? = nil
    var endedAt: Nanos? = nil
    var state = JobState.queued
    var shards: [ShardEntry]
    var done = 0
    var running = 0
    var duplicates = 0
    var reruns = 0
    var hedges = 0
    var hedgesWon = 0
    /// When the current round (the whole job for map-reduce) started: the step timeout counts from here.
    var roundStartedAt: Nanos
    /// Shards of the current round queued (not running, not done).
    var pending: Int { shards.count - done - running }
    var error = ""
    /// Its result: the bytes while the core holds them, empty once the shell keeps them on disk (`resultStored`).
    var result: [UInt8] = [] { didSet { resultSize = UInt64(result.count) } }
    /// The result's size in bytes (held or stored).
    var resultSize: UInt64 = 0
    /// The shell keeps the result on disk (`CoordinatorAction.storeResult`); clients read it with RESULT-GET.
    var resultStored = false
    /// The shell is writing it: the job has ended, and its end is told once the result is on disk.
    var resultPending = false
    /// Why the shell could not keep its result (nil: it could, or it is not stored).
    var resultLost: String? = nil
    var watchers: [Watcher] = []
    /// ACCEPT deferred to the next tick (SUBMIT option `deferAccept`).
    var acceptPending = false
    /// The client-chosen id it was submitted with ("" for none).
    var key = ""
    /// Who submitted it (`Principal.owner`; clients see only their own jobs) and that key's name.
    var owner = Principal.trusted.owner
    var ownerName = Principal.trusted.name
    /// Clients that re-submitted the same key and wait for JOB-RESULT (peer, request).
    var extraResultTo: [(PeerID, UInt64)] = []
    /// Items of committed shards (rows, samples, lines), over all rounds.
    var itemsDone: UInt64 = 0
    /// Its recent pace, sampled each tick while it runs.
    var pace = RecentRate()
    /// How far it is, 0…1: steps for a training job, shards otherwise (`ClusterStatus.Job.progressFraction`).
    var progress: Double {
        if let g = trainProgress, g.steps > 0 { return Double(g.step) / Double(g.steps) }
        return shardCount == 0 ? 0 : Double(restoredShards.map(Int.init) ?? done) / Double(shardCount)
    }
    /// When the current shards were queued (their records' `queued` time).
    var queuedAt: [Nanos] = []
    /// The job's log (lines about it the coordinator logged) and its shard attempts, both bounded.
    var logs: [JobLogLine] = []
    var logsDropped = 0
    var attempts: [AttemptRecord] = []
    var attemptsDropped = 0
    static let maxLogLines = 2000
    static let maxAttempts = 200_000
    /// Digests of the spec, input and model ("" when unknown); the spec's is computed when first asked for (`sigma
    /// job`, the dashboard), not for every job accepted — a small job's round trip paid for encoding and hashing it.
    var specDigest: String {
        if let d = specDigestKept { return d }
        let d = Digest.fnv1a64(spec.encoded)
        specDigestKept = d
        return d
    }
    private var specDigestKept: String?
    var inputDigest = ""
    var modelDigest = ""
    /// What workers may fetch from the coordinator (`input_transport: coordinator`).
    var inputFiles: [InputFile] = []
    /// The policy placing this job's shards.
    var policyName = ""

    func log(_ level: LogLevel, _ text: String, now: Nanos) {
        if logs.count >= JobEntry.maxLogLines {
            logs.removeFirst(JobEntry.maxLogLines / 4)
            logsDropped += JobEntry.maxLogLines / 4
        }
        logs.append(JobLogLine(at: now &- submittedAt, level: level, text: text))
    }

    /// Records an attempt sent now; returns its record index (-1 once the bound is reached).
    func recordAttempt(_ i: Int, attempt: Attempt, worker: WorkerEntry, hedge: Bool, now: Nanos) -> Int {
        guard attempts.count < JobEntry.maxAttempts else {
            attemptsDropped += 1
            return -1
        }
        let queued = i < queuedAt.count ? queuedAt[i] : roundStartedAt
        attempts.append(AttemptRecord(round: UInt32(driver?.round ?? 0), shard: UInt32(base + i), attempt: attempt,
                                      start: ranges[i].start, count: ranges[i].count, worker: worker.id, host: worker.hello.host,
                                      hedge: hedge, queued: queued &- submittedAt, started: now &- submittedAt))
        return attempts.count - 1
    }

    /// Ends an attempt's record (no-op for unrecorded or already ended ones).
    func endAttempt(_ record: Int, _ outcome: AttemptRecord.Outcome, now: Nanos, compute: UInt64 = 0, error: String = "") {
        guard record >= 0, record < attempts.count, attempts[record].outcome == .running else { return }
        attempts[record].outcome = outcome
        attempts[record].finished = Swift.max(attempts[record].started, now &- submittedAt)
        attempts[record].compute = compute
        attempts[record].error = error
    }

    /// A running shard that no worker holds any more goes back to the head of the queue (its next attempt's queue
    /// time is now); `rerun` counts it as a re-run (a worker died or failed it, rather than declined it).
    func requeue(_ i: Int, rerun: Bool, now: Nanos, queue: inout Deque<ShardRef>) {
        guard shards[i].state == .running, shards[i].holders.isEmpty else { return }
        // (a collective step's shard cannot run alone elsewhere: the step starts again, `repairCollectives`)
        if collective != nil && collectiveBroken == nil { collectiveBroken = "\(describe(i)) has to run again" }
        shards[i].state = .pending
        shards[i].hedged = false   // (its next attempt may be hedged again; a win then is not the old hedge's)
        running -= 1
        if rerun { reruns += 1 }
        if i < queuedAt.count { queuedAt[i] = now }
        queue.prepend(ShardRef(job: id, shard: ShardIndex(base + i)))
    }

    init(id: JobID, spec: JobSpec, driver: (any RoundDriver)?, ranges: [(start: UInt64, count: UInt64)], submitter: PeerID, request: UInt64,
         options: SubmitOptions, submittedAt: Nanos) {
        self.id = id
        self.spec = spec
        self.driver = driver
        self.ranges = ranges
        self.submitter = submitter
        self.request = request
        self.options = options
        self.submittedAt = submittedAt
        roundStartedAt = submittedAt
        shards = Array(repeating: ShardEntry(), count: ranges.count)
        queuedAt = Array(repeating: submittedAt, count: ranges.count)
    }

    /// Index into `shards` of a global shard index, if it belongs to the current round.
    func local(_ shard: ShardIndex) -> Int? {
        let i = Int(shard) - base
        return i >= 0 && i < shards.count ? i : nil
    }

    /// Starts the next round with new ranges; returns their global shard indices.
    func startRound(_ newRanges: [(start: UInt64, count: UInt64)], now: Nanos) -> Range<Int> {
        base += shards.count
        roundStartedAt = now
        ranges = newRanges
        shards = Array(repeating: ShardEntry(), count: newRanges.count)
        queuedAt = Array(repeating: now, count: newRanges.count)
        done = 0
        running = 0
        return base..<(base + newRanges.count)
    }

    var unit: String { driver?.unit ?? endedDriver?.unit ?? "rows" }

    /// The job has ended: its driver's state is freed; its unit, last round and training progress stay for status.
    func releaseDriver() {
        guard let d = driver else { return }
        endedDriver = (d.unit, d.round, d.sharesPerWorker ? d.progress : nil)
        driver = nil
    }

    /// "step 12 shard 40 (rows 0..<21)" / "shard 7 (rows 700..<800)".
    func describe(_ i: Int) -> String {
        let round = driver.map { $0.sharesPerWorker ? "step \($0.round + 1) " : "" }
            ?? endedDriver.map { $0.train != nil ? "step \($0.round + 1) " : "" } ?? ""
        return "\(round)shard \(base + i) (\(unit) \(ranges[i].start)..<\(ranges[i].start + ranges[i].count))"
    }

    /// Commits the first result of a shard (it may arrive from an older attempt while a newer one is queued).
    func commit(shard i: Int) {
        if shards[i].state == .running { running -= 1 }
        shards[i].state = .done
        done += 1
        itemsDone += ranges[i].count
    }

    /// A shard failed on `worker`: run it again elsewhere, or — once it has failed too often — return the
    /// error that fails the job.
    func requeueOrFail(shard i: Int, worker: WorkerEntry, error: String, config: CoordinatorConfig, now: Nanos,
                       queue: inout Deque<ShardRef>, into out: inout [CoordinatorAction]) -> String? {
        shards[i].failures += 1
        shards[i].failedOn.append("\(worker.id)@\(worker.hello.host)")
        let message = "\(describe(i)) failed on worker \(worker.label): \(error)"
        if shards[i].failures >= config.maxFailedAttempts {
            return "job \(id): \(message); failed \(shards[i].failures) times (on \(shards[i].failedOn.joined(separator: ", ")))"
        }
        out.append(.log(.warning, "job \(id): \(message); running it again", job: id))
        requeue(i, rerun: true, now: now, queue: &queue)
        return nil
    }

    func progress(request: UInt64) -> JobProgress {
        var p = JobProgress(request: request, job: id, state: state, done: UInt32(restoredShards ?? UInt32(done)), total: UInt32(shardCount),
                            running: UInt32(running), reruns: UInt32(reruns))
        if let g = trainProgress {
            p.step = UInt32(g.step)
            p.steps = UInt32(clamping: g.steps)
            p.stepsPerEpoch = UInt32(clamping: g.stepsPerEpoch)
            p.loss = g.loss
            p.accuracy = g.accuracy
            p.evalLoss = g.evalLoss
        }
        return p
    }

    /// Training: steps done and planned, last loss and held-out accuracy (nil for other kinds).
    var trainProgress: RoundProgress? {
        guard let d = driver else { return endedDriver?.train }
        return d.sharesPerWorker ? d.progress : nil
    }

    func outcome(request: UInt64) -> JobOutcome {
        JobOutcome(request: request, job: id, state: state, error: error, shards: UInt32(shardCount),
                   duplicates: UInt32(duplicates), reruns: UInt32(reruns), elapsed: (endedAt ?? submittedAt) &- submittedAt,
                   payload: result.isEmpty ? .empty : Frame(result), size: resultSize)
    }
}

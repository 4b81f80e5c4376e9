import DequeModule
import SigmaModel
import SigmaProtocol

/// A deployment as the core needs it: the shell reads the `kind: serve` spec (job kinds are the shell's) and hands
/// the core these figures with the spec itself, which workers load (docs/serving.md).
public struct DeploymentConfig: Sendable, Equatable {
    public var name: String
    /// "embed" or "encoder" (texts in: `ServedModelKind.takesTexts`), or "mlp", "cnn", "transformer" (rows of
    /// `inputs` floats in).
    public var model: String
    public var inputs: Int
    public var spec: JobSpec
    /// Workers that keep it loaded; 0: every worker.
    public var replicas: Int
    public var maxBatch: Int
    public var maxWait: Nanos
    /// Most tokens in a batch of texts (estimated from their bytes: 1 per 4, plus 2).
    public var maxTokens: Int
    public var queueLimit: Int
    public var timeout: Nanos
    public init(name: String, model: String, inputs: Int = 0, spec: JobSpec, replicas: Int = 1, maxBatch: Int = 32, maxWait: Nanos = 5_000_000,
                maxTokens: Int = 16384, queueLimit: Int = 1024, timeout: Nanos = 30_000_000_000) {
        self.name = name
        self.model = model
        self.inputs = inputs
        self.spec = spec
        self.replicas = replicas
        self.maxBatch = maxBatch
        self.maxWait = maxWait
        self.maxTokens = maxTokens
        self.queueLimit = queueLimit
        self.timeout = timeout
    }

    /// Bytes of queued inputs a deployment holds at most (past it: 429, as past `queueLimit`).
    public static let maxQueuedBytes = 256 << 20
}

/// A request waiting for, or riding in, a batch.
struct PendingRequest {
    let peer: PeerID
    let request: UInt64
    let input: ServeInput
    let rows: Int
    let tokens: Int
    let bytes: Int
    let arrived: Nanos
    let deadline: Nanos
    /// When it left the queue in a batch.
    var sent: Nanos = 0
    /// Its place in the order of arrival, set when first queued (unique: `RequestQueue` finds withdrawn ones by it).
    var seq: UInt64 = 0
    /// Answered while its batch is on a worker (504, or withdrawn by its client): the batch's answer skips it — its
    /// rows stay in the batch, so the requests after it still get their own.
    var settled = false

    static func tokens(_ input: ServeInput) -> Int {
        guard case .texts(let t) = input else { return input.count }
        return t.reduce(0) { $0 + $1.utf8.count / 4 + 2 }
    }
}

/// A deployment's waiting requests, oldest first, with their rows, tokens and bytes kept as they come and go, and a
/// bound on their deadlines: `dispatch` runs on every request and every answer, and recounting a deep queue each time
/// made an overloaded coordinator slower the deeper its queue grew (quadratic under a flood). A request withdrawn by
/// its client (WITHDRAW) leaves the totals at once and the deque lazily — as it reaches the front, at an expiry's
/// scan, or when withdrawn ones outnumber the rest — so clients going away in numbers cost O(1) each too.
struct RequestQueue {
    struct Key: Hashable {
        let peer: PeerID
        let request: UInt64
    }

    /// Oldest first; the front is never a withdrawn one.
    private(set) var items: Deque<PendingRequest> = []
    private(set) var rows = 0, tokens = 0, bytes = 0
    /// No queued request's deadline is earlier; it may be earlier than all of them (requests that left in a batch keep
    /// it), and `removeExpired` at or after it makes it exact again — so the queue is scanned only when this moment
    /// has come.
    private(set) var earliestDeadline: Nanos = .max
    /// The queued requests by client and request id (the last one queued under an id), for `withdraw`: its `seq`
    /// and sizes, so a withdrawal needs no search.
    private var byKey: [Key: (seq: UInt64, rows: Int, tokens: Int, bytes: Int)] = [:]
    /// Withdrawn requests still in `items`, by `seq`.
    private var withdrawn: Set<UInt64> = []
    private var nextSeq: UInt64 = 1

    var count: Int { items.count - withdrawn.count }
    var isEmpty: Bool { count == 0 }
    var first: PendingRequest? { items.first }

    mutating func append(_ r: PendingRequest) {
        let r = numbered(r)
        items.append(r)
        added(r)
    }

    /// First in line (a lost batch's requests, queued again).
    mutating func prepend(_ r: PendingRequest) {
        let r = numbered(r)
        items.prepend(r)
        added(r)
    }

    mutating func popFirst() -> PendingRequest? {
        guard let r = items.popFirst() else { return nil }
        taken(r)
        dropWithdrawnFront()
        return r
    }

    /// Takes the request `peer` queued as `request` out of the line; false when none is queued (already in a batch,
    /// answered, or never sent).
    mutating func withdraw(_ peer: PeerID, request: UInt64) -> Bool {
        guard let e = byKey.removeValue(forKey: Key(peer: peer, request: request)) else { return false }
        (rows, tokens, bytes) = (rows - e.rows, tokens - e.tokens, bytes - e.bytes)
        withdrawn.insert(e.seq)
        if withdrawn.count > count {
            items.removeAll { withdrawn.contains($0.seq) }
            withdrawn.removeAll()
        }
        dropWithdrawnFront()
        if count == 0 { earliestDeadline = .max }
        return true
    }

    /// The requests whose deadline has come, taken out in queue order.
    mutating func removeExpired(now: Nanos) -> [PendingRequest] {
        guard now >= earliestDeadline else { return [] }
        let late = Array(items.filter { $0.deadline <= now && !withdrawn.contains($0.seq) })
        if !late.isEmpty || !withdrawn.isEmpty {
            items.removeAll { $0.deadline <= now || withdrawn.contains($0.seq) }
            withdrawn.removeAll()
            for r in late { taken(r) }
        }
        earliestDeadline = items.reduce(Nanos.max) { min($0, $1.deadline) }
        return late
    }

    private mutating func numbered(_ r: PendingRequest) -> PendingRequest {
        guard r.seq == 0 else { return r }
        var r = r
        r.seq = nextSeq
        nextSeq += 1
        return r
    }

    private mutating func added(_ r: PendingRequest) {
        (rows, tokens, bytes) = (rows + r.rows, tokens + r.tokens, bytes + r.bytes)
        earliestDeadline = min(earliestDeadline, r.deadline)
        byKey[Key(peer: r.peer, request: r.request)] = (r.seq, r.rows, r.tokens, r.bytes)
    }

    /// `r` leaves the line (popped or expired; a withdrawn one left the totals when withdrawn).
    private mutating func taken(_ r: PendingRequest) {
        (rows, tokens, bytes) = (rows - r.rows, tokens - r.tokens, bytes - r.bytes)
        let key = Key(peer: r.peer, request: r.request)
        if byKey[key]?.seq == r.seq { byKey[key] = nil }
    }

    private mutating func dropWithdrawnFront() {
        while let f = items.first, withdrawn.contains(f.seq) {
            items.removeFirst()
            withdrawn.remove(f.seq)
        }
        if items.isEmpty { earliestDeadline = .max }
    }
}

/// One worker's copy of a deployment's model.
struct Replica {
    enum State: Equatable { case loading, ready, failed(String) }
    var state = State.loading
    /// Batches sent and not answered, and their rows.
    var inFlight = 0
    var inFlightRows = 0
    /// Smoothed compute time per row, ns (0 until measured).
    var nsPerRow = 0.0
    var batches: UInt64 = 0
    /// Batches waiting on the worker when it last answered (carried on BATCH-RESULT).
    var reportedQueue = 0
    /// When the batches it holds are expected to be computed (from its time per row and the round trip).
    var expectedFree: Nanos = 0
}

/// A batch on a worker.
struct InFlightBatch {
    let deployment: UInt32
    let worker: PeerID
    var requests: [PendingRequest]
    let rows: Int
    let sentAt: Nanos
}

/// A deployment's state in the core: its queue, replicas and figures.
final class DeploymentEntry {
    let id: UInt32
    let config: DeploymentConfig
    var queue = RequestQueue()
    var replicas: [PeerID: Replica] = [:]
    /// Undeployed: takes no requests; gone once its batches in flight are answered.
    var draining = false
    /// Who deployed it (`Principal.owner`): only they, or an admin, replace or undeploy it ("": anyone — restored
    /// from a journal written before owners were kept).
    var owner = ""
    /// Floats per output row, as the first replica to load the model said.
    var width = 0
    /// The classes' names, as the last replica that loaded the model reported them (empty: it has none).
    var labels: [String] = []
    /// Requests answered whose clients have not asked again yet: under load they come back at once, and a replica
    /// that just became idle waits (at most `maxWait`) for them rather than taking the first alone.
    var returning = 0
    var requests: UInt64 = 0, tooBusy: UInt64 = 0, unavailable: UInt64 = 0, timedOut: UInt64 = 0, failed: UInt64 = 0, answered: UInt64 = 0
    /// Requests their clients withdrew before the answer (WITHDRAW: an HTTP caller that hung up).
    var withdrawn: UInt64 = 0
    /// The last answered requests' latency, queue and compute times, ns (a ring of `sampleCount`).
    var latency: [UInt64] = [], queueTimes: [UInt64] = [], computeTimes: [UInt64] = []
    var sampleNext = 0
    static let sampleCount = 2000
    /// Rows per batch sent (sum and count), and when requests were answered (the last 10 s).
    var batchRows = 0, batchCount = 0
    var answeredAt: Deque<Nanos> = []

    init(id: UInt32, config: DeploymentConfig) {
        self.id = id
        self.config = config
    }

    var inFlight: Int { replicas.values.reduce(0) { $0 + $1.inFlight } }

    func record(latency l: UInt64, queue q: UInt64, compute c: UInt64, now: Nanos) {
        if latency.count < Self.sampleCount {
            latency.append(l)
            queueTimes.append(q)
            computeTimes.append(c)
        } else {
            latency[sampleNext] = l
            queueTimes[sampleNext] = q
            computeTimes[sampleNext] = c
            sampleNext = (sampleNext + 1) % Self.sampleCount
        }
        answeredAt.append(now)
        while let first = answeredAt.first, now &- first > 10_000_000_000 || answeredAt.count > 1_000_000 { answeredAt.removeFirst() }
    }

    static func percentile(_ v: [UInt64], _ p: Double) -> Double {
        guard !v.isEmpty else { return .nan }
        let s = v.sorted()
        return Double(s[min(s.count - 1, Int(Double(s.count - 1) * p + 0.5))]) / 1e6
    }

    func status(names: (PeerID) -> (id: String, name: String), now: Nanos) -> DeploymentStatus {
        var d = DeploymentStatus(name: config.name, model: config.model, replicasWanted: UInt32(config.replicas), queued: UInt32(queue.count),
                                 queueLimit: UInt32(config.queueLimit), maxBatch: UInt32(config.maxBatch), maxWaitMs: Double(config.maxWait) / 1e6)
        (d.requests, d.tooBusy, d.unavailable, d.timedOut, d.failed, d.withdrawn) = (requests, tooBusy, unavailable, timedOut, failed, withdrawn)
        d.draining = draining
        (d.inputs, d.width, d.answered) = (UInt32(config.inputs), UInt32(width), answered)
        d.labels = labels
        (d.batches, d.batchedRows) = (UInt64(batchCount), UInt64(batchRows))
        d.p50Ms = Self.percentile(latency, 0.5)
        d.p99Ms = Self.percentile(latency, 0.99)
        d.queueP50Ms = Self.percentile(queueTimes, 0.5)
        d.computeP50Ms = Self.percentile(computeTimes, 0.5)
        d.meanBatch = batchCount > 0 ? Double(batchRows) / Double(batchCount) : .nan
        // (answer times are in order: skip the stale ones at the front, no copy of up to a million)
        if let i = answeredAt.firstIndex(where: { now &- $0 <= 10_000_000_000 }), answeredAt.count - i > 1 {
            d.rate = Double(answeredAt.count - i - 1) / max(Double(now &- answeredAt[i]) / 1e9, 1)
        }
        d.replicas = replicas.map { peer, r in
            let (id, name) = names(peer)
            let (state, error): (String, String) = switch r.state {
            case .loading: ("loading", "")
            case .ready: (draining ? "draining" : "ready", "")
            case .failed(let why): ("failed", why)
            }
            return DeploymentStatus.Replica(worker: id, name: name, state: state, error: error, inFlight: UInt32(r.inFlight), batches: r.batches)
        }.sorted { $0.worker.count != $1.worker.count ? $0.worker.count < $1.worker.count : $0.worker < $1.worker }
        return d
    }
}

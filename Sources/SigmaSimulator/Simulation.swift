import Foundation
import HeapModule
import SigmaCoordinatorCore
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaWorkerCore
import Yams

/// A simulated worker host.
public struct SimWorker: Sendable {
    public var name: String
    /// Relative compute speed (1 = `costPerRow` per row).
    public var speed: Double = 1
    public var rtt: Double = 0          // seconds
    public var bandwidth: Double = 1e9  // bytes/s
    public var slots = 1
    public var joinAt: Double = 0
    public var failAt: Double? = nil    // seconds; the process vanishes (no goodbye)
    /// From this time on the worker runs `straggleFactor` times slower.
    public var straggleFrom: Double? = nil
    public var straggleFactor: Double = 1
    public init(name: String) { self.name = name }
}

/// A synchronous data-parallel train job for the simulator: the real `TrainDriver` in the real core (parameters,
/// tree reduce, SGD step) on generated rows; simulated workers answer each shard with zero gradients of the right
/// shape, after `costPerRow` × micro-batches of simulated compute.
public struct TrainScenario: Sendable {
    /// MLP layer sizes, inputs first.
    public var layers: [Int]
    public var microBatch: Int
    public var batchSize: Int
    public var steps: Int
    public init(layers: [Int], microBatch: Int, batchSize: Int, steps: Int) {
        self.layers = layers
        self.microBatch = microBatch
        self.batchSize = batchSize
        self.steps = steps
    }

    public var parameters: Int { zip(layers, layers.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 } }
    /// Micro-batches per step (the gradient tree's leaves).
    public var microBatches: Int { (batchSize + microBatch - 1) / microBatch }

    /// The job (its data paths are never read: the simulation builds the driver on generated rows).
    public func job(name: String) -> TrainJob {
        TrainJob(name: name, model: ModelSpec(mlp: layers), data: LabeledDataSpec(x: "simulated.npy", y: "simulated-labels.npy"),
                 optimizer: OptimizerSpec(kind: "sgd", lr: 0.01, momentum: 0.9), steps: steps, batchSize: batchSize,
                 microBatch: microBatch, holdout: 0)
    }

    /// `batchSize` generated rows (seeded): every step reads each row once.
    func data() -> LabeledData {
        var rng = SeededRandom(seed: 5)
        func next() -> UInt64 { rng.next() }
        let features = layers[0], classes = layers.last!
        let x = (0..<batchSize * features).map { _ in Float(next() % 1000) / 1000 }
        let y = (0..<batchSize).map { _ in Int32(next() % UInt64(classes)) }
        return LabeledData(rows: batchSize, features: features, x: x, y: y)
    }
}

/// What to simulate: workers and one job — map-reduce over generated data, or a train job (`train`).
public struct Scenario: Sendable {
    public var name = "scenario"
    public var workers: [SimWorker] = []
    public var shards = 1000
    public var rowsPerShard = 100
    /// Seconds of compute per row at speed 1.
    public var costPerRow = 1e-4
    public var policy = SchedulingPolicy.latencyAware
    public var hedging = true
    public var heartbeat = 1.0
    public var liveness = 3
    public var tick = 0.05
    /// A train job instead of the map-reduce job (then `costPerRow` is seconds per micro-batch).
    public var train: TrainScenario? = nil
    public init() {}

    public var spec: JobSpec {
        if let t = train { return .train(t.job(name: name)) }
        return .mapReduce(mapReduce)
    }

    /// The map-reduce job (when `train` is nil).
    var mapReduce: MapReduceSpec {
        MapReduceSpec(name: name, input: .uniform(count: UInt64(shards * rowsPerShard), seed: 7, low: 0, high: 1),
                      map: .square, reduce: [.sum, .count], sharding: .size(UInt64(rowsPerShard)))
    }

    /// Parses a scenario file (docs/scheduling.md shows the format).
    public static func parse(_ text: String) throws -> Scenario {
        guard let any = try Yams.load(yaml: text) as? [String: Any] else {
            throw SpecError(field: "(document)", problem: "expected a mapping with 'workers' and 'job'")
        }
        var s = Scenario()
        func num(_ d: [String: Any], _ k: String, _ path: String) throws -> Double? {
            guard let v = d[k] else { return nil }
            if let x = v as? Double { return x }
            if let x = v as? Int { return Double(x) }
            throw SpecError(field: path + k, problem: "expected a number, got \(v)")
        }
        if let n = any["name"] as? String { s.name = n }
        if let p = any["policy"] as? String { s.policy = try SchedulingPolicy.parse(p) }
        if let h = any["hedging"] as? Bool { s.hedging = h }
        if let v = try num(any, "heartbeat_ms", "") { s.heartbeat = v / 1000 }
        if let v = try num(any, "liveness", "") { s.liveness = Int(v) }
        guard let ws = any["workers"] as? [[String: Any]], !ws.isEmpty else {
            throw SpecError(field: "workers", problem: "expected a non-empty list of {speed, rtt_ms, …}")
        }
        for (i, w) in ws.enumerated() {
            let path = "workers[\(i)]."
            let count = Int(try num(w, "count", path) ?? 1)
            var x = SimWorker(name: w["name"] as? String ?? "w")
            x.speed = try num(w, "speed", path) ?? 1
            guard x.speed > 0 else { throw SpecError(field: path + "speed", problem: "must be > 0") }
            x.rtt = (try num(w, "rtt_ms", path) ?? 0) / 1000
            x.bandwidth = (try num(w, "bandwidth_mbps", path) ?? 8000) * 1e6 / 8
            x.slots = Int(try num(w, "slots", path) ?? 1)
            x.joinAt = try num(w, "join_s", path) ?? 0
            x.failAt = try num(w, "fail_s", path)
            x.straggleFrom = try num(w, "straggle_from_s", path)
            x.straggleFactor = try num(w, "straggle_factor", path) ?? 1
            for k in 0..<max(1, count) {
                var y = x
                y.name = count > 1 ? "\(x.name)\(k + 1)" : x.name
                s.workers.append(y)
            }
        }
        if let j = any["job"] as? [String: Any] {
            if let k = j["kind"] as? String, k != "map-reduce" {
                guard k == "train" else { throw SpecError(field: "job.kind", problem: "expected map-reduce or train, got '\(k)'") }
                guard let layers = j["mlp"] as? [Int], layers.count >= 2, layers.allSatisfy({ $0 > 0 }) else {
                    throw SpecError(field: "job.mlp", problem: "expected layer sizes, inputs first, e.g. [16, 32, 10]")
                }
                let micro = Int(try num(j, "micro_batch", "job.") ?? 4)
                let batch = Int(try num(j, "batch_size", "job.") ?? Double(micro * s.workers.count))
                let steps = Int(try num(j, "steps", "job.") ?? 10)
                guard micro > 0, batch >= micro, steps > 0 else {
                    throw SpecError(field: "job", problem: "micro_batch, batch_size and steps must be positive, batch_size ≥ micro_batch")
                }
                s.train = TrainScenario(layers: layers, microBatch: micro, batchSize: batch, steps: steps)
            }
            if let v = try num(j, "shards", "job.") { s.shards = Int(v) }
            if let v = try num(j, "rows_per_shard", "job.") { s.rowsPerShard = Int(v) }
            if let v = try num(j, "cost_per_row_us", "job.") { s.costPerRow = v / 1e6 }
        }
        return s
    }
}

/// What a simulation measured.
public struct SimReport: Sendable {
    public var makespan: Double
    public var lowerBound: Double
    public var completed: Bool
    public var error: String
    public var result: [UInt8]
    public var hedges: Int
    public var hedgesWon: Int
    public var reruns: Int
    public var duplicates: Int
    public var decisions: Int
    /// Wall-clock seconds the coordinator core spent handling events.
    public var coreSeconds: Double
    public var wallSeconds: Double
    public var workers: [(name: String, shards: Int, utilisation: Double)]
    /// Time from the last shard's first dispatch to the end of the job.
    public var tail: Double
    /// Rounds the job ran (training steps; 1 for map-reduce), and messages the coordinator core received and sent.
    public var steps: Int = 1
    public var messages: Int = 0
    /// The core's histogram samples (shard round trips, reduce and optimizer times of each round).
    public var samples = CoordinatorSamples()
}

/// The real `CoordinatorCore` and real `WorkerCore`s driven by a simulated clock and network: messages arrive after
/// RTT/2 + bytes / bandwidth, in order on each link (a message waits for the ones before it to be sent), shards take rows × cost / speed. Deterministic: same scenario, same report.
public final class Simulation {
    enum Event {
        case toCoordinator(PeerID, Message)
        case toWorker(Int, Message)
        case computed(Int, ShardTask)
        case workerTick(Int)
        case coordinatorTick
        case join(Int)
        case fail(Int)
        case submit
    }

    struct Timed: Comparable {
        let time: Double, seq: Int
        let index: Int
        static func < (a: Timed, b: Timed) -> Bool { (a.time, a.seq) < (b.time, b.seq) }
        static func == (a: Timed, b: Timed) -> Bool { a.seq == b.seq }
    }

    final class Node {
        let spec: SimWorker
        var core: WorkerCore
        var alive = false
        var queue: [ShardTask] = []
        var running = 0
        var busy = 0.0
        var shards = 0
        /// When each direction of the worker's link is free again: messages go out one after another and arrive
        /// in order (a ZeroMQ connection is FIFO; a large PARAMS must not be overtaken by the ASSIGN sent after it).
        var downFreeAt = 0.0
        var upFreeAt = 0.0
        init(_ spec: SimWorker, core: WorkerCore) { self.spec = spec; self.core = core }
    }

    let scenario: Scenario
    /// The scenario's map-reduce job, decoded once (the simulated workers compute its shards).
    let mapReduce: MapReduceSpec
    var core: CoordinatorCore
    var nodes: [Node] = []
    var heap = Heap<Timed>()
    var events: [Event?] = []
    var seq = 0
    var now = 0.0
    let client = PeerID(Array("client".utf8))
    var outcome: JobOutcome? = nil
    var coreNanos: UInt64 = 0
    var lastDispatch = 0.0
    var messages = 0
    var submittedAt = 0.0

    public init(_ scenario: Scenario) {
        self.scenario = scenario
        mapReduce = scenario.mapReduce
        var c = CoordinatorConfig()
        c.policy = scenario.policy
        c.hedging = scenario.hedging
        c.heartbeatInterval = Nanos(scenario.heartbeat * 1e9)
        c.liveness = scenario.liveness
        core = CoordinatorCore(config: c, now: 0)
        for (i, w) in scenario.workers.enumerated() {
            let hello = Hello(cores: UInt16(w.slots), slots: UInt32(w.slots), memory: 1 << 30, host: "sim-\(w.name)", name: w.name,
                              instance: "sim-\(i)", features: "map-reduce")
            nodes.append(Node(w, core: WorkerCore(config: WorkerCore.Config(hello: hello))))
            schedule(w.joinAt, .join(i))
            if let f = w.failAt { schedule(f, .fail(i)) }
        }
        schedule(scenario.tick, .coordinatorTick)
    }

    func peer(_ i: Int) -> PeerID { PeerID(Array("sim-\(i)".utf8)) }

    func schedule(_ t: Double, _ e: Event) {
        events.append(e)
        heap.insert(Timed(time: t, seq: seq, index: events.count - 1))
        seq += 1
    }

    static func size(_ m: Message) -> Int {
        switch m {
        case .result(let r): 40 + r.payload.count
        case .params(let p): 24 + p.payload.count
        case .assign(let a): 48 + (a.spec == nil ? 0 : 200)
        default: 48
        }
    }

    func coordinator(_ e: CoordinatorEvent) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let actions = core.handle(e, now: Nanos(now * 1e9))
        coreNanos += DispatchTime.now().uptimeNanoseconds - t0
        for a in actions {
            if case .resolveInput(let p, let submit, _) = a {
                // The shell's part (its kind prepares the job), a train job's on generated rows.
                let input: Result<any RoundDriver, JobError>
                do {
                    if let t = scenario.train {
                        input = .success(try TrainDriver(spec: t.job(name: scenario.name), data: t.data()))
                    } else {
                        input = .success(try JobKinds.standard.prepare(submit.spec, roots: .currentDirectory(), limits: .standard))
                    }
                } catch let e as JobError {
                    input = .failure(e)
                } catch { input = .failure(JobError("\(error)")) }
                coordinator(.inputResolved(p, submit, input))
                continue
            }
            guard case .send(let p, let m) = a else { continue }
            if p == client {
                if case .jobResult(let o) = m { outcome = o }
                continue
            }
            guard let i = workerIndex(p), nodes[i].alive else { continue }
            if case .assign = m { lastDispatch = now }
            messages += 1
            let w = nodes[i].spec
            nodes[i].downFreeAt = max(now, nodes[i].downFreeAt) + Double(Self.size(m)) / w.bandwidth
            schedule(nodes[i].downFreeAt + w.rtt / 2, .toWorker(i, m))
        }
    }

    func workerIndex(_ p: PeerID) -> Int? {
        let s = String(decoding: p.bytes, as: UTF8.self)
        guard s.hasPrefix("sim-"), let i = Int(s.dropFirst(4)), i < nodes.count else { return nil }
        return i
    }

    func worker(_ i: Int, _ e: WorkerEvent) {
        let n = nodes[i]
        for a in n.core.handle(e, now: Nanos(now * 1e9)) {
            switch a {
            case .send(let m):
                n.upFreeAt = max(now, n.upFreeAt) + Double(Self.size(m)) / n.spec.bandwidth
                schedule(n.upFreeAt + n.spec.rtt / 2, .toCoordinator(peer(i), m))
            case .compute(let task):
                n.queue.append(task)
            case .cancel(let job, let shard, let attempt):
                n.queue.removeAll { $0.job == job && (shard == nil || ($0.shard == shard && (attempt == nil || $0.attempt == attempt))) }
            case .cancelAll:
                n.queue.removeAll()
            default: break
            }
        }
        startWork(i)
    }

    func startWork(_ i: Int) {
        let n = nodes[i]
        while n.running < n.spec.slots, !n.queue.isEmpty {
            let task = n.queue.removeFirst()
            var speed = n.spec.speed
            if let from = n.spec.straggleFrom, now >= from { speed /= n.spec.straggleFactor }
            let d = Double(task.count) * scenario.costPerRow / speed
            n.running += 1
            n.busy += d
            schedule(now + d, .computed(i, task))
        }
    }

    /// Runs until the job ends (or `limit` simulated seconds).
    public func run(limit: Double = 36_000) -> SimReport {
        let wall0 = Date()
        if scenario.train != nil {
            // A training step is split among the workers live when it starts: submit once the workers have joined
            // (as `sigma train` does after `sigma up`), not before.
            schedule((scenario.workers.map(\.joinAt).max() ?? 0) + 2 * scenario.tick, .submit)
        } else {
            coordinator(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: scenario.spec))))
        }
        while outcome == nil, let next = heap.popMin() {
            now = next.time
            if now > limit { break }
            guard let e = events[next.index] else { continue }
            events[next.index] = nil
            switch e {
            case .join(let i):
                nodes[i].alive = true
                worker(i, .connected)
                schedule(now + scenario.tick, .workerTick(i))
            case .fail(let i):
                nodes[i].alive = false
            case .submit:
                submittedAt = now
                coordinator(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: scenario.spec))))
            case .workerTick(let i):
                guard nodes[i].alive else { continue }
                worker(i, .tick)
                schedule(now + scenario.tick, .workerTick(i))
            case .coordinatorTick:
                coordinator(.tick)
                schedule(now + scenario.tick, .coordinatorTick)
            case .toWorker(let i, let m):
                guard nodes[i].alive else { continue }
                worker(i, .received(m))
            case .toCoordinator(let p, let m):
                if let i = workerIndex(p), !nodes[i].alive { continue }
                messages += 1
                coordinator(.received(p, m))
            case .computed(let i, let task):
                guard nodes[i].alive else { continue }
                nodes[i].running -= 1
                nodes[i].shards += 1
                var r: ShardResult
                if scenario.train == nil, let p = try? MapReduceKernel.run(mapReduce, start: task.start, count: task.count) {
                    r = ShardResult(job: task.job, shard: task.shard, attempt: task.attempt, status: .ok, payload: Frame(p.encoded))
                } else if let t = scenario.train, let p = try? Self.zeroGradients(t, start: task.start, count: task.count) {
                    r = ShardResult(job: task.job, shard: task.shard, attempt: task.attempt, status: .ok, payload: p)
                } else {
                    r = ShardResult(job: task.job, shard: task.shard, attempt: task.attempt, status: .failed, error: "not a map-reduce shard")
                }
                r.computeTime = UInt64(Double(task.count) * scenario.costPerRow / nodes[i].spec.speed * 1e9)
                if let from = nodes[i].spec.straggleFrom, now >= from { r.computeTime = UInt64(Double(r.computeTime) * nodes[i].spec.straggleFactor) }
                worker(i, .computed(r))
            }
        }
        let o = outcome
        let h = core.hedges(1) ?? (0, 0)
        let span = o.map { Double($0.elapsed) / 1e9 } ?? now
        var report = SimReport(makespan: span, lowerBound: lowerBound(), completed: o?.state == .completed, error: o?.error ?? "did not finish",
                         result: o.map { Array($0.payload.withUnsafeBytes { Array($0) }) } ?? [],
                         hedges: h.started, hedgesWon: h.won, reruns: Int(o?.reruns ?? 0), duplicates: Int(o?.duplicates ?? 0),
                         decisions: core.decisions, coreSeconds: Double(coreNanos) / 1e9, wallSeconds: Date().timeIntervalSince(wall0),
                         workers: nodes.map { ($0.spec.name, $0.shards, span > 0 ? min(1, $0.busy / span) : 0) },
                         tail: span - (lastDispatch - submittedAt), steps: scenario.train?.steps ?? 1, messages: messages)
        report.samples = core.takeSamples()
        return report
    }

    /// A train shard's answer: the gradient tree's cover of micro-batches `start ..< start+count`, every value zero
    /// (the wire form a real worker sends, so the driver decodes and reduces it as it would real gradients).
    static func zeroGradients(_ t: TrainScenario, start: UInt64, count: UInt64) throws -> Frame {
        let total = t.microBatches
        let nodes = GradientTree.cover(Int(start)..<Int(start + count), total: total)
        return try GradientTree.encode(nodes: nodes, parameters: t.parameters) { node, dst in
            dst.initializeMemory(as: UInt8.self, repeating: 0)
            let rows = node.span(total: total).reduce(0) { $0 + min(t.microBatch, t.batchSize - $1 * t.microBatch) }
            return (loss: Double(rows), correct: 0, rows: UInt64(rows))
        }
    }

    /// No schedule can beat this: the smallest T with Σ speed_i × (T − join_i − RTT_i)⁺ / cost ≥ all rows
    /// (each worker computing without pause from its first possible moment, until it fails; stragglers at nominal speed).
    public func lowerBound() -> Double {
        let rows = scenario.train.map { Double($0.microBatches * $0.steps) } ?? Double(scenario.shards * scenario.rowsPerShard)
        func done(_ t: Double) -> Double {
            scenario.workers.reduce(0) { acc, w in
                let end = min(t, w.failAt ?? t)
                return acc + max(0, end - w.joinAt - w.rtt) * w.speed * Double(w.slots) / scenario.costPerRow
            }
        }
        var lo = 0.0, hi = 1.0
        while done(hi) < rows { hi *= 2; if hi > 1e9 { return .infinity } }
        for _ in 0..<60 { let mid = (lo + hi) / 2; if done(mid) >= rows { hi = mid } else { lo = mid } }
        return hi
    }
}

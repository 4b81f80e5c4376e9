import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// Peers in one process: a mailbox per endpoint (the worker's `PeerMesh` in a cluster).
final class MemoryPeers: @unchecked Sendable {
    private let condition = NSCondition()
    private var boxes: [String: [(tag: [UInt8], frames: [Frame])]] = [:]
    private(set) var messages = 0
    /// The job and segment each message's tag names, as a worker reads them to drop an old segment's messages.
    private(set) var named: [(job: JobID, segment: UInt32)?] = []

    struct Exchange: PeerExchange {
        let peers: MemoryPeers, me: String
        func send(to peer: PeerAddress, tag: [UInt8], frames: [Frame]) { peers.post(peer.endpoint, tag, frames) }
        func receive(tag: [UInt8], count: Int) throws -> [[Frame]] { try peers.take(me, tag, count) }
    }

    func exchange(_ me: String) -> Exchange { Exchange(peers: self, me: me) }

    func post(_ to: String, _ tag: [UInt8], _ frames: [Frame]) {
        condition.withLock {
            boxes[to, default: []].append((tag, frames))
            messages += 1
            named.append(Collective.jobAndSegment(ofTag: tag))
            condition.broadcast()
        }
    }

    func take(_ me: String, _ tag: [UInt8], _ count: Int) throws -> [[Frame]] {
        let deadline = Date().addingTimeInterval(30)
        condition.lock()
        defer { condition.unlock() }
        while (boxes[me] ?? []).filter({ $0.tag == tag }).count < count {
            guard condition.wait(until: deadline) else { throw JobError("peers did not answer") }
        }
        var out: [[Frame]] = [], kept: [(tag: [UInt8], frames: [Frame])] = []
        for m in boxes[me] ?? [] { if m.tag == tag && out.count < count { out.append(m.frames) } else { kept.append(m) } }
        boxes[me] = kept
        return out
    }
}

/// Collective steps (docs/architecture.md): workers reducing a step among themselves give the same bits as the
/// coordinator reducing it — weights, history (losses, held-out figures), through snapshots, a segment that stops
/// mid-way and goes back to its snapshot, and a change of the number of workers.
@Suite(.serialized) struct CollectiveStepTests {
    static let yaml = """
        kind: train
        model: {mlp: [64, 32, 10]}
        data: {csv: \(repoRoot)/data/digits.csv, scale: 0.0625}
        optimizer: {sgd: {lr: 0.05, momentum: 0.9, weight_decay: 0.0001}}
        steps: 40
        batch_size: 96
        micro_batch: 16
        eval_every: 10
        seed: 3
        """

    /// Runs the job with `sizes(step, rollbacks so far)` workers reducing each step among themselves (0: the driver);
    /// `stopAt`: steps whose round is abandoned half-way (as when a member is lost) and run again from the snapshot.
    /// `sliced`: at a segment's start each member gets only its slice of the optimizer's state (else all of it, as when
    /// that fits one payload).
    func runCollective(_ sizes: (Int, Int) -> Int, stopAt: Set<Int> = [], yaml: String = Self.yaml, sliced: Bool = true) throws -> (result: [UInt8], rollbacks: Int) {
        let spec = try JobSpec.parse(yaml).decode(as: TrainJob.self)
        let data = try LabeledData.load(spec.data, for: spec.model, needLabels: true)
        let driver = try TrainDriver(spec: spec, data: data)
        let workers = try (0..<4).map { _ in try TrainWorker(spec: spec, data: data) }
        let peers = MemoryPeers()
        let saved = BLASInfo.threads
        BLASInfo.setThreads(1)
        defer { BLASInfo.setThreads(saved) }
        var stops = stopAt, rollbacks = 0
        var segment: UInt32 = 0, segments: Set<UInt32> = []
        defer {
            // every message's tag names this job and a segment the driver began
            #expect(peers.messages > 0 || segments.isEmpty)
            #expect(peers.named.allSatisfy { $0.map { $0.job == 1 && segments.contains($0.segment) } ?? false })
        }
        while true {
            let want = sizes(driver.progress.step, rollbacks)
            if driver.atSnapshot && want != driver.segmentSize { segment = driver.beginSegment(size: want); segments.insert(segment) }
            let size = driver.segmentSize
            let plans = driver.plan(shares: Array(repeating: 1, count: max(1, size)))
            let step = Int(driver.round), params = driver.params
            if size == 0 {
                let p = plans[0]
                try driver.accept(shard: 0, payload: try workers[0].run(round: driver.round, params: params, start: p.start, count: p.count))
            } else {
                #expect(plans.count == size)
                let addresses = (0..<size).map { PeerAddress(endpoint: "w\($0)") }
                let snapshot = driver.snapshotDue, current = segment
                let results = (0..<size).map { _ in ResultBox() }
                let memberParams: [Frame?] = (0..<size).map { driver.params(member: $0, of: sliced ? size : 1) }
                let threads = (0..<size).map { (k: Int) -> OSThreadForTests in
                    let mine: Frame? = memberParams[k]
                    return OSThreadForTests {
                        results[k].value = Result {
                            try workers[k].collectiveStep(job: 1, step: step, params: mine, range: Int(plans[k].start)..<Int(plans[k].start + plans[k].count),
                                                          CollectiveStep(segment: current, rank: UInt16(k), snapshot: snapshot, peers: addresses),
                                                          exchange: peers.exchange("w\(k)"))
                        }
                    }
                }
                for t in threads { t.join() }
                if stops.remove(step) != nil {
                    // (the round is lost before its results are in: back to the snapshot, a new segment from there)
                    _ = driver.rollback()
                    rollbacks += 1
                    segment = driver.beginSegment(size: sizes(driver.progress.step, rollbacks))
                    segments.insert(segment)
                    continue
                }
                for k in 0..<size { try driver.accept(shard: k, payload: try results[k].value!.get()) }
            }
            let end = try driver.completeRound()
            if end.finished { return (end.results, rollbacks) }
        }
    }

    func reference(_ yaml: String = Self.yaml) throws -> [UInt8] {
        try JobKinds.standard.runLocal(try JobSpec.parse(yaml), roots: try DataRoots([repoRoot]))
    }

    /// Adam and AdamW: the members carry both moments and count the steps from the segment's start — the same bits
    /// as the coordinator's Adam, from the first step, after coordinator-reduced steps, and through stopped steps.
    @Test(arguments: ["adam: {lr: 0.01, weight_decay: 0.0001}", "adamw: {lr: 0.01, weight_decay: 0.01}"])
    func adamStepsGiveTheCoordinatorsBits(_ optimizer: String) throws {
        let yaml = Self.yaml.replacingOccurrences(of: "sgd: {lr: 0.05, momentum: 0.9, weight_decay: 0.0001}", with: optimizer)
        #expect(yaml != Self.yaml)
        let expected = try reference(yaml)
        let two = try runCollective({ _, _ in 2 }, yaml: yaml).result == expected
        #expect(two)
        let later = try runCollective({ step, _ in step < 5 ? 0 : 3 }, yaml: yaml).result == expected
        #expect(later)
        // (members first, then the coordinator from the snapshot at step 10 on: it takes over their moments and count)
        let back = try runCollective({ step, _ in step < 12 ? 2 : 0 }, yaml: yaml).result == expected
        #expect(back)
        let run = try runCollective({ _, rollbacks in [3, 2, 4][rollbacks] }, stopAt: [5, 21], yaml: yaml)
        let stopped = run.result == expected
        #expect(run.rollbacks == 2 && stopped)
    }

    @Test func twoAndThreeWorkersGiveTheCoordinatorsBits() throws {
        let expected = try reference()
        // (compared as one Bool: a failure would print two result bundles byte by byte)
        let two = try runCollective { _, _ in 2 }.result == expected, three = try runCollective { _, _ in 3 }.result == expected
        #expect(two)
        #expect(three)
        // (all of the optimizer's state to every member at a segment's start: the same bits)
        let whole = try runCollective({ _, _ in 3 }, sliced: false).result == expected
        #expect(whole)
        // (the coordinator reduces the first steps, then workers: a segment starts from the driver's state, velocity included)
        let later = try runCollective { step, _ in step < 5 ? 0 : 4 }.result == expected
        #expect(later)
    }

    /// At a segment's start each member may get the weights and only its own slice of the optimizer's state (SGD's
    /// velocity, Adam's two moments): the slices tile the state, the largest start is with two members, and a
    /// worker refuses a PARAMS sized for another rank, naming the sizes; or all of the state, one frame for all.
    @Test(arguments: ["sgd: {lr: 0.05, momentum: 0.9, weight_decay: 0.0001}", "adam: {lr: 0.01}"])
    func eachMemberGetsTheWeightsAndItsSliceOfTheState(_ optimizer: String) throws {
        let yaml = Self.yaml.replacingOccurrences(of: "sgd: {lr: 0.05, momentum: 0.9, weight_decay: 0.0001}", with: optimizer)
        let spec = try JobSpec.parse(yaml).decode(as: TrainJob.self)
        let data = try LabeledData.load(spec.data, for: spec.model, needLabels: true)
        let driver = try TrainDriver(spec: spec, data: data)
        let n = driver.parameterCount, k = spec.collectiveStateVectors
        // (one coordinator-reduced step first, so SGD has a velocity)
        let worker = try TrainWorker(spec: spec, data: data)
        let plan = driver.plan(shares: [1])[0]
        try driver.accept(shard: 0, payload: try worker.run(round: driver.round, params: driver.params, start: plan.start, count: plan.count))
        _ = try driver.completeRound()
        for size in [2, 3] {
            _ = driver.beginSegment(size: size)
            let frames = (0..<size).map { driver.params(member: $0, of: size) }
            let slices = (0..<size).map { Collective.slice($0, of: size, parameters: n) }
            #expect(zip(frames, slices).allSatisfy { $0?.count == (n + k * $1.count) * 4 }, "\(frames.map { $0?.count ?? 0 })")
            #expect(slices.map(\.count).reduce(0, +) == n)
            #expect(driver.segmentStartBytes(members: size) == frames.map { $0?.count ?? 0 }.max())
            // every member's weights are the same, and the state after them is its own part of the whole
            let weights = Set(frames.map { $0.map { Array($0.withUnsafeBytes { $0[0..<n * 4] }) } ?? [] })
            #expect(weights.count == 1)
            #expect(driver.segmentStartBytes(members: 2) > driver.segmentStartBytes(members: 3))
            // all of the state: one frame, the same for every member
            let whole = (0..<size).map { driver.params(member: $0, of: 1) }
            #expect(whole.allSatisfy { $0?.count == n * (1 + k) * 4 && $0 == whole[0] } && driver.segmentStartBytes(members: 1) == n * (1 + k) * 4)
            let wrong = try TrainWorker(spec: spec, data: data)
            let addresses = (0..<size).map { PeerAddress(endpoint: "w\($0)") }
            // rank 1's PARAMS handed to rank 0 (the slices differ by 16-float rounding or size): refused
            if frames[0]?.count != frames[1]?.count {
                #expect { _ = try wrong.collectiveStep(job: 1, step: 1, params: frames[1], range: 0..<1,
                                                       CollectiveStep(segment: 1, rank: 0, snapshot: false, peers: addresses), exchange: MemoryPeers().exchange("w0")) }
                    throws: { "\($0)".contains("rank 0 of \(size)") && "\($0)".contains("\(frames[1]!.count) bytes;") }
            }
            _ = driver.beginSegment(size: 0)
        }
    }

    /// Each member sends to every other rank once, starting with the next rank: the first messages of all members go
    /// to all ranks, not all to rank 0.
    @Test func membersSendStartingWithTheNextRank() {
        for size in 1...6 {
            let orders = (0..<size).map { Collective.sendOrder(rank: $0, size: size) }
            for (rank, order) in orders.enumerated() {
                #expect(order.sorted() == (0..<size).filter { $0 != rank }, "rank \(rank) of \(size): \(order)")
            }
            if size > 1 { #expect(Set(orders.map { $0[0] }).count == size, "first destinations \(orders.map { $0[0] })") }
        }
    }

    @Test func aStoppedStepGoesBackToTheSnapshotWithTheSameBits() throws {
        let expected = try reference()
        // Stopped at steps 5 and 21 (between snapshots: the evaluations every 10 steps), with 3 workers
        // after the first stop and 2 after the second.
        let run = try runCollective({ _, rollbacks in [2, 3, 2][rollbacks] }, stopAt: [5, 21])
        #expect(run.rollbacks == 2)
        let same = run.result == expected
        #expect(same)
    }
}

final class ResultBox: @unchecked Sendable {
    var value: Result<Frame, Error>? = nil
}

/// A joinable thread for a test's concurrent workers (each blocks on its peers).
final class OSThreadForTests: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    init(_ body: @escaping @Sendable () -> Void) {
        let t = Thread { [done] in body(); done.signal() }
        t.stackSize = 8 << 20
        t.start()
    }
    func join() { done.wait() }
}

/// Snapshots by time: every 5 s while they are cheap; where one costs more than 5 % of that, no sooner than its cost
/// ÷ 0.05 — measured as a snapshot round's length less the last regular round's; a segment's first round (its start)
/// is not measured.
@Test func snapshotsByTimeStretchWhenTheyAreCostly() {
    let s: UInt64 = 1_000_000_000
    var c = SnapshotCadence(seconds: 5, share: 0.05)
    #expect(c.interval == 5e9)
    // A segment's first round (4 s: it carries the start), then regular rounds of 3 s.
    c.roundBegins(at: 0, snapshot: false)
    c.roundBegins(at: 4 * s, snapshot: false)
    #expect(c.regular == nil, "the segment's first round was measured")
    c.roundBegins(at: 7 * s, snapshot: true)
    #expect(c.regular == 3 * s)
    // The snapshot round took 4.25 s: 1.25 s more than a regular one — snapshots then at most every 25 s.
    c.roundBegins(at: 11 * s + s / 4, snapshot: false)
    #expect(c.cost == s + s / 4)
    #expect(c.interval == 25e9)
    // A cheap snapshot (0.1 s more) brings back 5 s.
    c.roundBegins(at: 14 * s + s / 4, snapshot: true)
    c.roundBegins(at: 17 * s + s / 4 + s / 10, snapshot: false)
    #expect(c.cost == s / 10 && c.interval == 5e9)
    // A rollback or a new segment: the next round is not measured.
    c.restart()
    c.roundBegins(at: 30 * s, snapshot: true)
    c.roundBegins(at: 40 * s, snapshot: false)
    #expect(c.cost == s / 10, "the round after a restart was measured")
}

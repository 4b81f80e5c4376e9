@testable import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// A training job's rounds as the core sees them, collective-capable: 8 micro-batches a step, a snapshot every
/// fourth step; it records the segments it was asked to start and its rollbacks.
final class CollectiveDriver: CollectiveRounds, @unchecked Sendable {
    let steps: Int
    var step = 0, snapshotStep = 0, segmentSize = 0, dueAtPlan = false, broadcast = false
    var segments: [Int] = [], rollbacks: [Int] = []
    /// What a segment's start would weigh: the weights, and the optimizer's state shared out among the members.
    var weightBytes = 4, stateBytes = 4
    init(steps: Int) { self.steps = steps }
    var kind: String { "train" }
    var round: UInt32 { UInt32(step) }
    var params: Frame? { segmentSize > 0 ? (broadcast ? Frame([1, 2, 3, 4, 5, 6, 7, 8]) : nil) : Frame([1, 2, 3, 4]) }
    /// A member's PARAMS at a segment's start name its rank and the members the state is shared out among.
    func params(member rank: Int, of size: Int) -> Frame? { segmentSize > 0 && broadcast ? Frame([UInt8(rank), UInt8(size), 3, 4, 5, 6]) : params }
    func segmentStartBytes(members size: Int) -> Int { weightBytes + stateBytes / size }
    var unit: String { "micro-batches" }
    var roundItems: Int { 8 }
    var sharesPerWorker: Bool { true }
    var resumesFromShards: Bool { false }
    var progress: RoundProgress { RoundProgress(step: step, steps: steps, loss: .nan, accuracy: .nan) }
    var collectiveCapable: Bool { true }
    var atSnapshot: Bool { segmentSize == 0 || step == snapshotStep }
    var snapshotDue: Bool { dueAtPlan }
    func plan(shares: [Double]) -> [ShardPlan] {
        dueAtPlan = segmentSize > 0 && (step + 1) % 4 == 0
        let n = max(1, shares.count)
        return (0..<n).map { k in ShardPlan(start: UInt64(8 * k / n), count: UInt64(8 * (k + 1) / n - 8 * k / n), share: k) }
    }
    func accept(shard index: Int, payload: Frame) throws {}
    func completeRound() throws -> RoundEnd {
        step += 1
        broadcast = false
        if segmentSize == 0 || dueAtPlan { snapshotStep = step }
        var e = RoundEnd()
        e.finished = step == steps
        return e
    }
    func beginSegment(size: Int) -> UInt32 {
        segmentSize = size
        snapshotStep = step
        broadcast = size > 0
        segments.append(size)
        return UInt32(100 + segments.count)
    }
    func rollback() -> Int {
        rollbacks.append(step)
        defer { step = snapshotStep }
        return step - snapshotStep
    }
}

/// The core's side of collective steps (docs/architecture.md): members are the workers offering a peer endpoint,
/// each gets its rank and every member's address, the segment's weights go out once, and a member lost or failing
/// mid-segment takes the job back to the snapshot.
@Suite struct CollectiveCoreTests {
    func start(_ steps: Int, workers: [(PeerID, String)], weightBytes: Int = 4, stateBytes: Int = 4, config: CoordinatorConfig = CoordinatorConfig()) -> (Harness, CollectiveDriver) {
        var h = Harness(config)
        for (w, f) in workers { h.hello(w, features: f) }
        let d = CollectiveDriver(steps: steps)
        (d.weightBytes, d.stateBytes) = (weightBytes, stateBytes)
        h.event(.inputResolved(client, Submit(request: 1, options: [], spec: .mapReduce(spec)), .success(d)))
        return (h, d)
    }

    /// Answers every ASSIGN in the outbox (ok), returning them.
    @discardableResult
    func answerAll(_ h: inout Harness, _ workers: [PeerID]) -> [(PeerID, Assign)] {
        var out: [(PeerID, Assign)] = []
        for w in workers {
            for a in h.takeAssigns(w) {
                out.append((w, a))
                h.event(.received(w, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1000))))
            }
        }
        return out
    }

    @Test func membersGetTheirRanksPeersAndTheSegmentsWeightsOnce() throws {
        var (h, d) = start(6, workers: [(w1, "peer=tcp://h1:7001,peer-key=K1"), (w2, "peer=tcp://h2:7002"), (w3, "")])
        h.outbox.removeAll { if case .params = $0.1 { true } else { false } }
        answerAll(&h, [w1, w2, w3])   // step 1: planned at submission, the coordinator reduces it
        // Step 2 on: w1 and w2 (w3 offers no peer endpoint) reduce it, ranks in the worker table's order; the
        // segment's weights went to both, once.
        func takeParams(_ h: inout Harness) -> [PeerID: Frame] {
            var to: [PeerID: Frame] = [:]
            h.outbox.removeAll { p, m in if case .params(let x) = m { to[p] = x.payload; return true } else { return false } }
            return to
        }
        // (the whole start fits one payload: each asked for the weights and all of the optimizer's state — "of 1")
        #expect(takeParams(&h) == [w1: Frame([0, 1, 3, 4, 5, 6]), w2: Frame([1, 1, 3, 4, 5, 6])])
        let step2 = answerAll(&h, [w1, w2, w3])
        #expect(step2.map(\.0) == [w1, w2])
        let peers = [PeerAddress(endpoint: "tcp://h1:7001", key: "K1"), PeerAddress(endpoint: "tcp://h2:7002")]
        #expect(step2.map { $0.1.collective?.rank } == [0, 1])
        #expect(step2.allSatisfy { $0.1.collective?.peers == peers && $0.1.collective?.segment == 101 && $0.1.withParams })
        #expect(d.segments == [2])
        #expect(h.core.collectiveJobs == [1], "the pass run after every event walks the collective job alone")
        // Step 3: no weights from the coordinator (the members hold them); step 4 is a snapshot.
        #expect(takeParams(&h).isEmpty)
        let step3 = answerAll(&h, [w1, w2, w3])
        #expect(step3.count == 2 && step3.allSatisfy { !$0.1.withParams && $0.1.collective?.snapshot == false })
        let step4 = answerAll(&h, [w1, w2, w3])
        #expect(step4.count == 2 && step4.allSatisfy { $0.1.collective?.snapshot == true })
        for _ in 0..<20 where h.core.job(1)?.state == .running { answerAll(&h, [w1, w2, w3]) }
        #expect(h.core.job(1)?.state == .completed && d.rollbacks.isEmpty && takeParams(&h).isEmpty)
        #expect(h.core.collectiveJobs.isEmpty, "an ended job leaves the collective pass")
    }

    /// Members on one machine (the same `shm=` host key in HELLO) share a memory group, so their large messages go
    /// through /dev/shm; a member whose key no other member has, or that offers none, is in group 0.
    @Test func membersThatShareMemoryGetOneGroup() throws {
        #expect(CoordinatorCore.memoryGroups(["K", "L", "K", "", "L", "M"]) == [1, 2, 1, 0, 2, 0])
        #expect(CoordinatorCore.memoryGroups(["", ""]) == [0, 0])
        let w4 = PeerID([0, 0, 0, 0, 4])
        var (h, _) = start(6, workers: [(w1, "peer=tcp://h1:1,shm=boot:1:2:0"), (w2, "peer=tcp://h2:2,shm=boot2:1:2:0"),
                                        (w3, "peer=tcp://h3:3,shm=boot:1:2:0"), (w4, "peer=tcp://h4:4")])
        answerAll(&h, [w1, w2, w3, w4])
        let step2 = answerAll(&h, [w1, w2, w3, w4])
        let c = try #require(step2.first?.1.collective)
        #expect(c.peers.map(\.memoryGroup) == [1, 0, 1, 0])
        // Each member sees whom it shares memory with.
        let ranks = step2.compactMap(\.1.collective)
        #expect(ranks.map { r in r.peers.map { r.sharesMemory(with: $0) } } == [[true, false, true, false], [false, false, false, false],
                                                                               [true, false, true, false], [false, false, false, false]])
        #expect(h.logs.contains { $0.contains("4 workers reduce the steps among themselves (segment 101); 2 of them share memory with another") }, "\(h.logs)")
    }

    /// Two workers that share the coordinator's machine and memory are reduced by the coordinator (its path copies
    /// nothing there; docs/performance.md, "Two local workers with collective steps"), and the log says so once;
    /// from `sameMachineCollectiveFrom` workers, or with one of them on another machine, they reduce among
    /// themselves.
    @Test func fewWorkersOnTheCoordinatorsMachineAreReducedByIt() throws {
        let here = "shm=boot:1:2:0"
        func collectiveSizes(_ workers: [(PeerID, String)], from: Int? = nil) -> (segments: [Int], said: Int) {
            var config = CoordinatorConfig()
            config.sharedMemoryKey = "boot:1:2:0"
            if let from { config.sameMachineCollectiveFrom = from }
            var (h, d) = start(8, workers: workers, config: config)
            for _ in 0..<20 where h.core.job(1)?.state == .running { answerAll(&h, workers.map(\.0)) }
            #expect(h.core.job(1)?.state == .completed)
            return (d.segments, h.logs.filter { $0.contains("the coordinator reduces the steps: its 2 workers share its machine's memory") }.count)
        }
        let two = collectiveSizes([(w1, "peer=tcp://h1:1,\(here)"), (w2, "peer=tcp://h2:2,\(here)")])
        #expect(two.segments.isEmpty && two.said == 1, "\(two)")
        #expect(collectiveSizes([(w1, "peer=tcp://h1:1,\(here)"), (w2, "peer=tcp://h2:2,\(here)")], from: 2) == ([2], 0))
        #expect(collectiveSizes([(w1, "peer=tcp://h1:1,\(here)"), (w2, "peer=tcp://h2:2,shm=boot2:1:2:0")]) == ([2], 0))
        #expect(collectiveSizes([(w1, "peer=tcp://h1:1,\(here)"), (w2, "peer=tcp://h2:2")]) == ([2], 0))
        #expect(collectiveSizes([(w1, "peer=tcp://h1:1,\(here)"), (w2, "peer=tcp://h2:2,\(here)"), (w3, "peer=tcp://h3:3,\(here)")]) == ([3], 0))
    }

    @Test func aLostMemberCancelsTheStepAndGoesBackToTheSnapshot() throws {
        var (h, d) = start(12, workers: [(w1, "peer=tcp://h1:1"), (w2, "peer=tcp://h2:2"), (w3, "peer=tcp://h3:3")])
        for _ in 0..<6 { answerAll(&h, [w1, w2, w3]) }   // steps 1–6; step 4 was a snapshot
        #expect(d.step == 6 && d.snapshotStep == 4)
        // Step 7 is out; w3 goes silent and is declared dead while w1 and w2 compute.
        let out = [w1, w2, w3].flatMap { w in h.takeAssigns(w).map { (w, $0) } }
        #expect(out.count == 3)
        h.advance(10_000_000_000)
        for w in [w1, w2] { h.event(.received(w, .heartbeat(Heartbeat(sent: 1)))) }
        h.outbox.removeAll()
        h.event(.tick)
        #expect(d.rollbacks == [6], "back from step 6 to the snapshot")
        #expect(d.step == 4)
        let cancelled = h.outbox.compactMap { p, m -> PeerID? in if case .cancel = m { p } else { nil } }
        #expect(Set(cancelled) == [w1, w2], "the step's attempts on the members left are cancelled")
        // The step again, from the snapshot, on the two left: a new segment, its weights sent again.
        #expect(d.segments == [3, 2])
        let again = answerAll(&h, [w1, w2, w3])
        #expect(again.map(\.0) == [w1, w2] && again.allSatisfy { $0.1.round == 4 && $0.1.withParams && $0.1.collective?.peers.count == 2 })
        // Their late answers for the cancelled step change nothing.
        for (w, a) in out where w != w3 {
            h.event(.received(w, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .failed, error: "collective step cancelled by the coordinator"))))
        }
        for _ in 0..<30 where h.core.job(1)?.state == .running { answerAll(&h, [w1, w2, w3]) }
        #expect(h.core.job(1)?.state == .completed && d.step == 12)
    }

    @Test func aFailedCollectiveStepHasTheCoordinatorReduceFromThen() throws {
        var (h, d) = start(8, workers: [(w1, "peer=tcp://h1:1"), (w2, "peer=tcp://h2:2")])
        answerAll(&h, [w1, w2])
        answerAll(&h, [w1, w2])   // step 2, collective
        let a = try #require(h.takeAssigns(w2).first)
        #expect(a.collective != nil && h.takeAssigns(w1).first?.collective != nil)
        h.event(.received(w2, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .failed, error: "peers unreachable"))))
        #expect(h.logs.contains { $0.contains("the coordinator reduces this job's steps from now on") })
        #expect(d.rollbacks.count == 1 && d.segments.last == 0)
        let rest = answerAll(&h, [w1, w2])
        #expect(!rest.isEmpty && rest.allSatisfy { $0.1.collective == nil })
        for _ in 0..<30 where h.core.job(1)?.state == .running { answerAll(&h, [w1, w2]) }
        #expect(h.core.job(1)?.state == .completed)
    }

    /// A worker that keeps answering a collective step's ASSIGN without having its weights (it refused the segment's
    /// PARAMS — larger than its payload limit, say) would have the step started again forever: after three stops at
    /// the same step the coordinator reduces the job's steps.
    @Test func aStepStoppedAgainAndAgainHandsTheReduceToTheCoordinator() throws {
        var (h, d) = start(6, workers: [(w1, "peer=tcp://h1:1"), (w2, "peer=tcp://h2:2")])
        answerAll(&h, [w1, w2])   // step 1, the coordinator reduces
        for stop in 1...3 {
            let a = try #require(h.takeAssigns(w2).first, "stop \(stop)")
            #expect(a.collective != nil && a.round == 1)
            _ = h.takeAssigns(w1)
            h.event(.received(w2, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .unknownJob))))
            #expect(h.logs.contains { $0.contains("the coordinator reduces this job's steps from now on") } == (stop == 3), "stop \(stop)")
        }
        #expect(h.logs.contains { $0.contains("collective steps stopped 3 times at step 2") })
        #expect(d.rollbacks.count == 3 && d.segments.last == 0)
        let rest = answerAll(&h, [w1, w2])
        #expect(!rest.isEmpty && rest.allSatisfy { $0.1.collective == nil })
        for _ in 0..<30 where h.core.job(1)?.state == .running { answerAll(&h, [w1, w2]) }
        #expect(h.core.job(1)?.state == .completed && d.step == 6)
    }

    /// A segment whose start (the weights and a member's share of the optimizer state in one PARAMS, with two members:
    /// the largest share) exceeds the payload limit is not begun: the coordinator reduces the job's steps and says
    /// why, once — even with three workers at hand, whose shares would fit.
    @Test func aSegmentStartOverThePayloadLimitIsNotBegun() throws {
        var config = CoordinatorConfig()
        config.maxPayload = 1000
        let three = [(w1, "peer=tcp://h1:1"), (w2, "peer=tcp://h2:2"), (w3, "peer=tcp://h3:3")]
        var (h, d) = start(5, workers: three, weightBytes: 600, stateBytes: 802, config: config)
        for _ in 0..<30 where h.core.job(1)?.state == .running {
            #expect(answerAll(&h, [w1, w2, w3]).allSatisfy { $0.1.collective == nil })
        }
        #expect(h.core.job(1)?.state == .completed && d.step == 5 && d.segments.allSatisfy { $0 == 0 })
        #expect(h.logs.filter { $0.contains("1001 bytes) exceeds the payload limit of 1000 bytes") }.count == 1, "\(h.logs)")
        // At the limit, it is begun (weights and optimizer state together, 1,400 bytes, would not have been): each
        // member gets the weights and its own half of the state.
        var (h2, d2) = start(5, workers: [(w1, "peer=tcp://h1:1"), (w2, "peer=tcp://h2:2")], weightBytes: 600, stateBytes: 800, config: config)
        var sent: [PeerID: Frame] = [:]
        for _ in 0..<30 where h2.core.job(1)?.state == .running {
            h2.outbox.removeAll { p, m in if case .params(let x) = m, x.payload.count == 6 { sent[p] = x.payload; return true } else { return false } }
            answerAll(&h2, [w1, w2])
        }
        #expect(d2.segments.contains(2))
        #expect(sent == [w1: Frame([0, 2, 3, 4, 5, 6]), w2: Frame([1, 2, 3, 4, 5, 6])], "\(sent)")
    }
}

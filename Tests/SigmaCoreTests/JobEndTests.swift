import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// A two-step "training" driver: one micro-batch per step, parameters of version `step`.
final class TwoStepDriver: RoundDriver, @unchecked Sendable {
    var step = 0
    var kind: String { "train" }
    var round: UInt32 { UInt32(step) }
    var params: Frame? { Frame([UInt8](repeating: UInt8(step), count: 16)) }
    var unit: String { "micro-batches" }
    var roundItems: Int { 1 }
    func plan(shares: [Double]) -> [ShardPlan] { [ShardPlan(start: 0, count: 1, share: 0)] }
    func accept(shard index: Int, payload: Frame) throws {}
    func completeRound() throws -> RoundEnd {
        step += 1
        var e = RoundEnd()
        e.finished = step == 2
        return e
    }
    var progress: RoundProgress { RoundProgress(step: step, steps: 2, loss: 0, accuracy: 0) }
}

@Suite struct JobEndTests {
    /// When a job ends, every worker that holds its parameters is told (CANCEL for all shards), so it frees the
    /// job's state (model, gradients, data) at once — even a worker with nothing of the job in flight.
    @Test func workersHoldingAJobsParametersAreToldWhenItEnds() throws {
        var h = Harness()
        h.hello(w1)
        h.hello(w2)
        let spec = try JobSpec.parse("kind: train\nname: t\nmodel: {mlp: [4, 2]}\ndata: {x: /nonexistent/x.npy, y: /nonexistent/y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 2\nbatch_size: 1\nmicro_batch: 1\n")
        let submit = Submit(request: 1, options: [], spec: spec)
        var resolve: [CoordinatorEvent] = []
        for a in h.core.handle(.received(client, .submit(submit)), now: h.now) {
            if case .resolveInput(let p, let s) = a { resolve.append(.inputResolved(p, s, .success(.driver(TwoStepDriver())))) }
        }
        try #require(resolve.count == 1)
        h.event(resolve[0])
        var paramsTo: Set<PeerID> = []
        for _ in 0..<2 {
            for (p, m) in h.outbox { if case .params = m { paramsTo.insert(p) } }
            let assigns = h.takeAssigns(w1).map { (w1, $0) } + h.takeAssigns(w2).map { (w2, $0) }
            try #require(assigns.count == 1, "one shard per step")
            let (p, a) = assigns[0]
            h.advance(1_000_000)
            h.event(.received(p, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1000, payload: Frame([1])))))
        }
        #expect(h.logs.contains { $0.contains("completed") }, "\(h.logs)")
        try #require(!paramsTo.isEmpty)
        for p in paramsTo {
            let told = h.outbox.contains { q, m in
                if q == p, case .cancel(let c) = m { return c.shard == Cancel.allShards }
                return false
            }
            #expect(told, "worker \(p) holds the job's parameters but was not told the job ended")
        }
    }
}

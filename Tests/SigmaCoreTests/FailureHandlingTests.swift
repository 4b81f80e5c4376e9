import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

private let oneShard = MapReduceSpec(name: "poison", input: .range(count: 10, start: 0, step: 1), reduce: [.sum], sharding: .count(1))

private func jobError(_ sent: [(PeerID, Message)]) -> String? {
    for (p, m) in sent where p == client { if case .jobResult(let o) = m, o.state == .failed { return o.error } }
    return nil
}

@Suite struct FailureHandlingTests {
    /// A shard whose workers die under it twice fails its job, naming the shard, both workers and their hosts.
    @Test func poisonShardFailsTheJobNamingIt() {
        var c = CoordinatorConfig()
        c.heartbeatInterval = 100_000_000
        var h = Harness(c)
        h.hello(w1, host: "alpha")
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(oneShard)))))
        #expect(h.takeAssigns(w1).count == 1)
        h.hello(w2, host: "beta")
        var error: String? = nil
        // w1 goes silent: declared dead, the shard moves to w2, which goes silent too.
        for _ in 0..<12 where error == nil {
            h.advance(50_000_000)
            h.event(.received(w2, .heartbeat(Heartbeat(sent: h.now))))
            error = jobError(h.event(.tick))
        }
        #expect(error == nil, "failed before the second death: \(error ?? "")")
        #expect(h.takeAssigns(w2).count == 1, "the dead worker's shard did not move")
        for _ in 0..<12 where error == nil {
            h.advance(50_000_000)
            error = jobError(h.event(.tick))
        }
        let e = try! #require(error)
        #expect(e.contains("shard 0") && e.contains("w1@alpha") && e.contains("w2@beta"), "\(e)")
    }

    /// A worker process that reconnects (it found the coordinator silent) is alive: the shard it held runs again,
    /// but is not blamed for a death — reconnecting three times does not fail the job as a poison shard.
    @Test func reconnectingWorkerIsNotAPoisonDeath() {
        var h = Harness()
        h.hello(w1, instance: "proc-1", host: "alpha")
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(oneShard)))))
        #expect(h.takeAssigns(w1).count == 1)
        var peers = [w1]
        for n in 0..<3 {
            let again = PeerID([0, 0, 0, 1, UInt8(n)])
            let sent = h.hello(again, instance: "proc-1", host: "alpha")
            #expect(jobError(sent) == nil, "a reconnection failed the job: \(jobError(sent) ?? "")")
            #expect(h.takeAssigns(again).count == 1, "the shard did not run again on the new session")
            peers.append(again)
        }
        #expect(h.core.status(now: h.now).jobs.first?.reruns == 3)
    }

    /// With default settings (1 s heartbeats × 3), a worker silent for more than 2 s is "suspect": shown so and
    /// given no new shards; heard from again, it is ready and takes shards; silent past 3 s, it is dead.
    @Test func silentWorkerIsSuspectBeforeDeadAndGetsNoNewShards() {
        var h = Harness()
        h.hello(w1, host: "alpha")
        h.hello(w2, host: "beta")
        func state(_ id: String) -> String? { h.core.status(now: h.now).workers.first { $0.id == id }?.state }
        for _ in 0..<5 {   // 2.5 s: w2 keeps heart-beating, w1 is silent
            h.advance(500_000_000)
            h.event(.received(w2, .heartbeat(Heartbeat(sent: h.now))))
            h.event(.tick)
        }
        #expect(state("w1") == "suspect")
        #expect(state("w2") == "ready")
        let many = MapReduceSpec(name: "m", input: .range(count: 400, start: 0, step: 1), reduce: [.sum], sharding: .count(40))
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(many)))))
        #expect(h.takeAssigns(w1).isEmpty, "a suspect worker was given shards")
        #expect(!h.takeAssigns(w2).isEmpty)
        h.event(.received(w1, .heartbeat(Heartbeat(sent: h.now))))
        #expect(state("w1") == "busy", "heard from again, w1 should take shards")
        #expect(!h.takeAssigns(w1).isEmpty)
        h.advance(3_100_000_000)
        h.event(.received(w2, .heartbeat(Heartbeat(sent: h.now))))
        h.event(.tick)
        #expect(state("w1") == "dead")
    }

    /// A worker whose host reports less memory available than the reserve (5 % of its memory, at least 256 MiB)
    /// is shown as low-memory and given no new shards, with a warning naming it; with memory back above 1.5 × the
    /// reserve it takes shards again.
    @Test func workerLowOnMemoryGetsNoNewShardsUntilItRecovers() {
        var h = Harness()
        h.hello(w1, host: "alpha")   // (the harness's hosts have 1 GiB: the reserve is 256 MiB)
        h.hello(w2, host: "beta")
        func state(_ id: String) -> String? { h.core.status(now: h.now).workers.first { $0.id == id }?.state }
        func beat(_ peer: PeerID, available: UInt64) -> [(PeerID, Message)] {
            var hb = Heartbeat(sent: h.now)
            hb.available = available
            return h.event(.received(peer, .heartbeat(hb)))
        }
        _ = beat(w1, available: 100 << 20)
        _ = beat(w2, available: 800 << 20)
        #expect(state("w1") == "low-memory")
        #expect(h.logs.contains { $0.contains("w1") && $0.contains("alpha") && $0.contains("100 MiB") && $0.contains("no new shards") }, "\(h.logs)")
        let many = MapReduceSpec(name: "m", input: .range(count: 400, start: 0, step: 1), reduce: [.sum], sharding: .count(40))
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(many)))))
        #expect(h.takeAssigns(w1).isEmpty, "a worker low on memory was given shards")
        #expect(!h.takeAssigns(w2).isEmpty)
        _ = beat(w1, available: 300 << 20)   // above the reserve, below 1.5 × it: still held back
        #expect(state("w1") == "low-memory")
        _ = beat(w1, available: 500 << 20)
        #expect(state("w1") == "busy", "with memory back, w1 should take shards")
        #expect(!h.takeAssigns(w1).isEmpty)
    }

    /// DRAIN-WORKER names a worker by id, or by name when one live worker has it; a shared name is refused,
    /// listing the ids (draining the wrong process would be worse than asking again).
    @Test func drainWorkerPrefersTheIdAndRefusesAmbiguousNames() {
        var h = Harness()
        h.hello(w1, host: "alpha")
        h.hello(w2, host: "beta")   // both are named "n"
        let ambiguous = h.event(.received(client, .drainWorker(request: 1, worker: "n")))
        #expect(ambiguous.contains { if case .error(let e) = $0.1 { return e.message.contains("w1, w2") && e.message.contains("give the id") } else { return false } },
                "\(ambiguous)")
        let byID = h.event(.received(client, .drainWorker(request: 2, worker: "w2")))
        #expect(byID.contains { $0.0 == w2 && $0.1 == .drain(reason: "asked by a client") })
        #expect(!byID.contains { $0.0 == w1 && $0.1 == .drain(reason: "asked by a client") })
        // w2 held nothing, so it left at once; w1 is untouched.
        #expect(h.core.status(now: h.now).workers.map(\.state) == ["ready", "dead"])
    }

    /// A step that runs past the step timeout fails its job, naming the missing shards and where they run.
    @Test func stepTimeoutNamesMissingShardsAndWorkers() {
        var c = CoordinatorConfig()
        c.stepTimeout = 2_000_000_000
        c.hedging = false
        var h = Harness(c)
        h.hello(w1, host: "alpha")
        let spec = MapReduceSpec(name: "slow", input: .range(count: 20, start: 0, step: 1), reduce: [.sum], sharding: .count(2))
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec)))))
        var error: String? = nil
        for _ in 0..<30 where error == nil {
            h.advance(100_000_000)
            h.event(.received(w1, .heartbeat(Heartbeat(sent: h.now))))
            error = jobError(h.event(.tick))
        }
        let e = try! #require(error)
        #expect(e.contains("timed out") && e.contains("shard 0") && e.contains("shard 1") && e.contains("w1 (host alpha)"), "\(e)")
    }

    /// A draining worker gets no new shards; DISCONNECT once its own are done; declined shards run elsewhere.
    @Test func drainingWorkerFinishesAndLeaves() throws {
        var h = Harness()
        h.hello(w1)
        let spec = MapReduceSpec(name: "d", input: .range(count: 40, start: 0, step: 1), reduce: [.sum], sharding: .count(4))
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec)))))
        let held = h.takeAssigns(w1)
        #expect(!held.isEmpty)
        h.event(.received(w1, .drain(reason: "SIGTERM")))
        h.hello(w2)
        #expect(h.takeAssigns(w1).isEmpty, "a draining worker got new shards")
        // It finishes the first, declines the rest.
        try h.answer(w1, held[0], spec: spec)
        var left = h.outbox
        for a in held.dropFirst() {
            left += h.event(.received(w1, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .declined, error: "draining"))))
        }
        #expect(left.contains { p, m in p == w1 && m == .disconnect(reason: "drained") })
        // w2 runs everything else; the job completes.
        var done = false
        for _ in 0..<10 where !done {
            for a in h.takeAssigns(w2) {
                for (p, m) in try h.answer(w2, a, spec: spec) where p == client {
                    if case .jobResult(let o) = m { done = o.state == .completed }
                }
            }
        }
        #expect(done)
    }
}

@Suite struct PerJobPolicyTests {
    /// A job submitted with the round-robin option takes strict turns even on a latency-aware cluster.
    @Test func submitOptionSelectsTheJobsPolicy() {
        var h = Harness()
        h.hello(w1)
        h.hello(w2)
        let spec = MapReduceSpec(name: "rr", input: .range(count: 40, start: 0, step: 1), reduce: [.sum], sharding: .count(4))
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult, SchedulingPolicy.roundRobin.submitOption],
                                                 spec: .mapReduce(spec)))))
        let order = h.outbox.compactMap { p, m -> PeerID? in if case .assign = m { return p } else { return nil } }
        #expect(order == [w1, w2, w1, w2], "\(order)")
        #expect(SchedulingPolicy.roundRobin.submitOption.policyCode == 1 && SchedulingPolicy.latencyAware.submitOption.policyCode == 3)
    }
}

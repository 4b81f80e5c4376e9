import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaWorkerCore
import Testing

/// A two-step "training" driver: one micro-batch per step, parameters of version `step`.
final class TwoStepDriver: RoundDriver, @unchecked Sendable {
    var step = 0
    var kind: String { "train" }
    var sharesPerWorker: Bool { true }
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
    /// Finished jobs keep their results within `keepResultBytes`: past it the oldest go first; their jobs stay listed,
    /// and FETCH says the result is no longer kept, naming the setting (issue 19: results kept by count only grew a
    /// coordinator to gigabytes).
    @Test func finishedResultsAreKeptWithinTheirByteBudget() throws {
        var config = CoordinatorConfig()
        config.keepResultBytes = 80   // (a one-reducer map-reduce result is 45 bytes)
        var h = Harness(config)
        h.hello(w1)
        let spec = MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        var ids: [JobID] = []
        for r in 1...3 {
            h.event(.received(client, .submit(Submit(request: UInt64(r), options: [], spec: .mapReduce(spec)))))
            let a = try #require(h.takeAssigns(w1).first)
            ids.append(a.job)
            _ = try h.answer(w1, a, spec: spec)
        }
        func fetch(_ id: JobID) -> Message? {
            h.event(.received(client, .fetch(request: 99, job: id))).last { $0.0 == client }?.1
        }
        for id in ids.prefix(2) {
            guard case .error(let e)? = fetch(id) else { Issue.record("job \(id): expected an ERROR"); continue }
            #expect(e.message.contains("no longer kept") && e.message.contains("keep_result_bytes"), "\(e.message)")
        }
        guard case .jobResult(let o)? = fetch(ids[2]) else { Issue.record("the latest result is kept"); return }
        #expect(o.state == .completed && o.payload.count == 45)
        let listed = h.core.status(now: h.now).jobs.map(\.id)
        #expect(ids.allSatisfy(listed.contains), "the jobs stay listed")
    }

    /// A result over `storeResultsOver` leaves the core for the shell's disk (`storeResult`, before the journal says
    /// the job ended); JOB-RESULT carries its size only, and RESULT-GET reads it back in pieces, byte for byte. Out of
    /// range or oversized asks are refused naming the problem; a result dropped for the byte budget is discarded.
    @Test func largeResultsAreStoredAndReadInPieces() throws {
        var config = CoordinatorConfig()
        config.storeResultsOver = 40
        config.keepResultBytes = 250   // (two results of 98 bytes)
        config.journal = true
        var h = Harness(config)
        h.hello(w1)
        let spec = MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum, .histogram(bins: 4, low: 0, high: 4)], sharding: .count(1))
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec)))))
        let a = try #require(h.takeAssigns(w1).first)
        _ = try h.answer(w1, a, spec: spec)
        let bytes = try #require(h.stored[a.job], "stored by the shell")
        #expect(bytes.count > 40)
        guard case .ended(_, _, _, let inJournal, let size, _, _)? = h.journal.last(where: { if case .ended = $0 { true } else { false } }) else {
            Issue.record("\(h.journal)")
            return
        }
        #expect(inJournal.isEmpty && size == UInt64(bytes.count), "the journal keeps its size, not its bytes")
        let pushed = h.outbox.compactMap { if case .jobResult(let o) = $0.1 { o } else { nil } }
        #expect(pushed.count == 1 && pushed[0].isStored && pushed[0].size == UInt64(bytes.count) && pushed[0].payload.isEmpty)
        // Read back in pieces of 7 bytes.
        var back: [UInt8] = []
        while back.count < bytes.count {
            let r = h.event(.received(client, .resultGet(ResultGet(request: 5, job: a.job, offset: UInt64(back.count), length: 7))))
            guard case .resultData(let d)? = r.last?.1 else { Issue.record("\(r)"); return }
            #expect(d.size == UInt64(bytes.count) && d.offset == UInt64(back.count))
            back += d.payload.withUnsafeBytes { Array($0) }
        }
        #expect(back == bytes)
        func refusal(_ g: ResultGet) -> ErrorReply? {
            if case .error(let e)? = h.event(.received(client, .resultGet(g))).last?.1 { e } else { nil }
        }
        #expect(refusal(ResultGet(request: 6, job: a.job, offset: UInt64(bytes.count) + 1, length: 1))?.message.contains("past the result's end") == true)
        #expect(refusal(ResultGet(request: 7, job: a.job, offset: 0, length: ResultGet.maxLength + 1))?.code == ErrorReply.Code.tooLarge.rawValue)
        #expect(refusal(ResultGet(request: 8, job: 999, offset: 0, length: 1))?.code == ErrorReply.Code.notFound.rawValue)
        // Two more jobs: past the byte budget the first one's stored result is discarded.
        for r in 2...3 {
            h.event(.received(client, .submit(Submit(request: UInt64(r), options: [], spec: .mapReduce(spec)))))
            let b = try #require(h.takeAssigns(w1).first)
            _ = try h.answer(w1, b, spec: spec)
        }
        #expect(h.stored[a.job] == nil && h.stored.count == 2, "the oldest result is discarded from disk")
        #expect(refusal(ResultGet(request: 9, job: a.job, offset: 0, length: 1))?.message.contains("no longer kept") == true)
    }

    /// While the shell writes a stored result, the job's end is not told: a FETCH waits and is answered once the
    /// result is on disk (with the submitter's JOB-RESULT), a RESULT-GET is told to ask again, and the journal says
    /// the job ended only then. A result the shell could not write is reported as lost, naming why.
    @Test func aJobsEndIsToldOnceItsStoredResultIsOnDisk() throws {
        var h = Harness.storingResults()
        let spec = MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum, .histogram(bins: 4, low: 0, high: 4)], sharding: .count(1))
        func ended() -> Bool { h.journal.contains { if case .ended = $0 { true } else { false } } }
        func results(to peer: PeerID) -> [JobOutcome] {
            h.outbox.compactMap { p, m in
                guard p == peer, case .jobResult(let o) = m else { return nil }
                return o
            }
        }
        for (n, error) in [(1, nil as String?), (2, "disk full")] {
            h.journal = []
            h.outbox = []
            h.event(.received(client, .submit(Submit(request: UInt64(n), options: [.pushResult], spec: .mapReduce(spec)))))
            let a = try #require(h.takeAssigns(w1).first)
            _ = try h.answer(w1, a, spec: spec)
            #expect(h.storing == [a.job] && !ended() && results(to: client).isEmpty, "nothing told while the result is written")
            let fetcher = PeerID([0, 0, 0, 0, 8])
            #expect(h.event(.received(fetcher, .fetch(request: 7, job: a.job))).isEmpty, "a FETCH waits")
            guard case .error(let e)? = h.event(.received(fetcher, .resultGet(ResultGet(request: 8, job: a.job, offset: 0, length: 10)))).last?.1 else {
                Issue.record("RESULT-GET while writing: expected an ERROR")
                return
            }
            #expect(e.code == ErrorReply.Code.notReady.rawValue && e.message.contains("being written"), "\(e.message)")
            h.storing = []
            h.event(.resultStored(job: a.job, error: error))
            #expect(ended(), "the journal says it ended once the result is on disk")
            let toClient = results(to: client), toFetcher = results(to: fetcher)
            #expect(toClient.count == 1 && toFetcher.count == 1 && toFetcher.first?.request == 7)
            if error == nil {
                #expect(toFetcher.first?.isStored == true && toFetcher.first?.size == UInt64(h.stored[a.job]?.count ?? 0))
            } else {
                guard case .error(let lost)? = h.event(.received(fetcher, .fetch(request: 9, job: a.job))).last?.1 else { Issue.record("expected an ERROR"); return }
                #expect(lost.message.contains("could not be kept: disk full"), "\(lost.message)")
            }
        }
    }

    /// True numbers (issue 20, point 2): a worker's throughput is its whole rate (all slots) on the kind of job it ran
    /// last, and goes to 0 once it has been idle for the rate's time to live (it kept showing an old job's figure);
    /// a cancelled job shows no shards running.
    @Test func workerThroughputIsCurrentAndACancelledJobRunsNothing() throws {
        var h = Harness()
        h.hello(w1, slots: 2)
        let spec = MapReduceSpec(input: .range(count: 4000, start: 0, step: 1), reduce: [.sum], sharding: .count(8))
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))
        for _ in 0..<8 {
            for a in h.takeAssigns(w1) {
                h.advance(1_000_000)
                _ = h.event(.received(w1, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1_000_000,
                                                              payload: Frame(try MapReduceKernel.run(spec, start: a.start, count: a.count).encoded)))))
            }
        }
        let busy = try #require(h.core.status(now: h.now).workers.first)
        // 500 items per shard in 1 ms of compute: 500,000 items/s per slot, 1,000,000 for the worker's 2 slots.
        #expect(abs(busy.throughput - 1_000_000) < 1, "\(busy.throughput)")
        h.advance(CoordinatorConfig().rateTTL + 1)
        #expect(h.core.status(now: h.now).workers.first?.throughput == 0, "idle past the rate's time to live: no stale figure")
        // A cancelled job: nothing running.
        let long = MapReduceSpec(input: .range(count: 4000, start: 0, step: 1), reduce: [.sum], sharding: .count(8))
        h.event(.received(client, .submit(Submit(request: 2, options: [], spec: .mapReduce(long)))))
        let job = try #require(h.takeAssigns(w1).first?.job)
        #expect((h.core.status(now: h.now).jobs.first { $0.id == job }?.running ?? 0) > 0)
        h.event(.received(client, .cancelJob(request: 3, job: job)))
        let cancelled = h.core.status(now: h.now).jobs.first { $0.id == job }
        #expect(cancelled?.state == .cancelled && cancelled?.running == 0, "\(String(describing: cancelled))")
    }

    /// True numbers (issue 20, points 2 and 4): a job's rate and ETA come from its last 10 s of progress — 200 items
    /// every 100 ms is 2,000 items/s and the ETA is what is left at that pace, whatever the 5 s start-up before the
    /// first result — and a job that stops making progress shows 0 items/s and no ETA once the window has passed.
    @Test func aJobsRateAndETAAreItsRecentPaceWithoutStartUp() throws {
        var h = Harness()
        h.hello(w1)
        let spec = MapReduceSpec(input: .range(count: 4000, start: 0, step: 1), reduce: [.sum], sharding: .count(20))
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))
        h.advance(5_000_000_000)   // start-up: nothing done for 5 s
        var job: JobID = 0, held: [Assign] = []
        for k in 1...10 {
            held += h.takeAssigns(w1)   // (a worker may hold a shard ahead of the one it computes)
            let a = try #require(held.first)
            held.removeFirst()
            job = a.job
            h.advance(100_000_000)
            _ = try h.answer(w1, a, spec: spec)
            h.event(.tick)
            if k == 1 { #expect(h.core.status(now: h.now).jobs.first?.recentRate == nil, "one sample: no rate yet") }
        }
        let j = try #require(h.core.status(now: h.now).jobs.first { $0.id == job })
        #expect(j.done == 10 && j.items == 2000)
        #expect(abs((j.recentRate ?? 0) - 2000) < 1e-6, "200 items per 100 ms: \(String(describing: j.recentRate))")
        #expect(abs((j.eta ?? 0) - 1.0) < 1e-6, "10 shards left at 10 per second: \(String(describing: j.eta))")
        #expect(j.itemUnit == "items")
        // The whole-run figure would have been 2,000 items in 6 s (333/s) and an ETA of 6 s.
        h.advance(10_000_000_001)
        let stalled = try #require(h.core.status(now: h.now).jobs.first { $0.id == job })
        #expect(stalled.recentRate == 0 && stalled.eta == nil, "no progress for 10 s: \(stalled.rate) items/s, ETA \(stalled.secondsLeft)")
    }

    /// A shard whose result is too large for one frame fails its job at once (no re-run, no hour-long wait), naming
    /// the shard, its rows, its size and the limit.
    @Test func aShardResultTooLargeForAFrameFailsItsJobAtOnce() throws {
        var worker = WorkerCore(config: {
            var c = WorkerCore.Config(hello: Hello(cores: 1, slots: 1, memory: 1 << 30, host: "h", name: "w", instance: "i", features: ""))
            c.maxResultBytes = 8
            return c
        }())
        _ = worker.handle(.connected, now: 0)
        _ = worker.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 1_000_000_000, liveness: 3, build: "", features: ""))), now: 0)
        let spec = MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum], sharding: .count(2))
        let assign = Assign(job: 1, shard: 0, attempt: 1, start: 0, count: 2, round: 0, spec: .mapReduce(spec))
        _ = worker.handle(.received(.assign(assign)), now: 0)
        let out = worker.handle(.computed(ShardResult(job: 1, shard: 0, attempt: 1, status: .ok, payload: Frame([UInt8](repeating: 1, count: 9)))), now: 1)
        let sent = out.compactMap { if case .send(.result(let r)) = $0 { r } else { nil } }
        #expect(sent.count == 1 && sent.first?.status == .tooLarge && sent.first?.error.contains("9 bytes, over the 8-byte frame limit") == true, "\(out)")

        var h = Harness()
        h.hello(w1)
        h.hello(w2)
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec)))))
        let (holder, a) = try #require(h.takeAssigns(w1).map { (w1, $0) }.first ?? h.takeAssigns(w2).map { (w2, $0) }.first)
        h.event(.received(holder, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .tooLarge, error: sent.first?.error ?? ""))))
        #expect(!(h.takeAssigns(w1) + h.takeAssigns(w2)).contains { $0.shard == a.shard }, "not run again")
        let o = h.outbox.compactMap { if case .jobResult(let o) = $0.1 { o } else { nil } }.first
        #expect(o?.state == .failed, "failed at once, not run again")
        #expect(o?.error.contains("shard \(a.shard)") == true && o?.error.contains("over the 8-byte frame limit") == true, "\(o?.error ?? "")")
    }

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
            if case .resolveInput(let p, let s, _) = a { resolve.append(.inputResolved(p, s, .success(TwoStepDriver()))) }
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
        h.event(.tick)   // (a completed job's release goes out at the next tick)
        for p in paramsTo {
            let told = h.outbox.contains { q, m in
                if q == p, case .cancel(let c) = m { return c.shard == Cancel.allShards }
                return false
            }
            #expect(told, "worker \(p) holds the job's parameters but was not told the job ended")
        }
    }

    /// An ended training job frees its driver — the job's data, model, optimizer state and parameter payload (a
    /// coordinator that kept them grew by tens of megabytes per job, and its shared-memory segments ran out) —
    /// while its status still shows the steps and loss it reached.
    @Test func anEndedJobFreesItsDriverAndKeepsItsProgress() throws {
        var h = Harness()
        h.hello(w1)
        let spec = try JobSpec.parse("kind: train\nname: t\nmodel: {mlp: [4, 2]}\ndata: {x: /nonexistent/x.npy, y: /nonexistent/y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 2\nbatch_size: 1\nmicro_batch: 1\n")
        weak var freed: TwoStepDriver?
        do {
            let driver = TwoStepDriver()
            freed = driver
            var resolve: [CoordinatorEvent] = []
            for a in h.core.handle(.received(client, .submit(Submit(request: 1, options: [], spec: spec))), now: h.now) {
                if case .resolveInput(let p, let s, _) = a { resolve.append(.inputResolved(p, s, .success(driver))) }
            }
            try #require(resolve.count == 1)
            h.event(resolve[0])
        }
        for _ in 0..<2 {
            let a = try #require(h.takeAssigns(w1).first)
            h.advance(1_000_000)
            h.event(.received(w1, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1000, payload: Frame([1])))))
        }
        #expect(h.logs.contains { $0.contains("completed") }, "\(h.logs)")
        #expect(freed == nil, "the ended job still holds its driver")
        let job = try #require(h.core.status(now: h.now).jobs.first)
        #expect(job.state == .completed && job.step == 2 && job.steps == 2, "\(job)")
    }

    /// FILE-GET: a registered worker gets pieces of the files its running job's spec names (by index) when the
    /// job ships its inputs — and an ERROR echoing its request for anything else: an unknown job, a job that reads
    /// a shared path, an index past the job's files, an offset past the file's end, a request too large, a job that
    /// has ended, a peer that is not a registered worker, or a worker that runs none of the job's shards.
    @Test func fileGetServesOnlyTheRunningJobsOwnFiles() throws {
        var h = Harness()
        h.hello(w1)
        func submit(_ transport: String) throws -> JobID {
            let spec = try JobSpec.parse("kind: train\nname: t\nmodel: {mlp: [4, 2]}\ndata: {x: /data/x.npy, y: /data/y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 2\nbatch_size: 1\nmicro_batch: 1\ninput_transport: \(transport)\n")
            var resolve: [CoordinatorEvent] = []
            for a in h.core.handle(.received(client, .submit(Submit(request: 1, options: [], spec: spec))), now: h.now) {
                if case .resolveInput(let p, let s, _) = a {
                    resolve.append(.inputResolved(p, s, .success(TwoStepDriver()), digests: InputDigests(files: transport == "coordinator" ? [
                        InputFile(path: "/data/x.npy", size: 1000, sha256: String(repeating: "a", count: 64)),
                        InputFile(path: "/data/y.npy", size: 10, sha256: String(repeating: "b", count: 64)),
                    ] : [])))
                }
            }
            try #require(resolve.count == 1)
            h.event(resolve[0])
            let accepted = h.outbox.compactMap { _, m -> JobID? in if case .accept(let a) = m { return a.job }; return nil }
            return try #require(accepted.last)
        }
        let shipped = try submit("coordinator"), shared = try submit("shared")
        func ask(_ peer: PeerID, _ g: FileGet) -> String? {
            h.served = []
            let sent = h.event(.received(peer, .fileGet(g)))
            if let e = sent.compactMap({ p, m -> ErrorReply? in if p == peer, case .error(let e) = m { return e }; return nil }).first {
                #expect(e.request == g.request, "the ERROR does not echo the request")
                return e.message
            }
            return nil
        }
        #expect(ask(w1, FileGet(request: 7, job: shipped, index: 1, offset: 4, length: 6)) == nil)
        try #require(h.served.count == 1)
        #expect(h.served[0].0 == w1 && h.served[0].2.path == "/data/y.npy" && h.served[0].3 == 2 && h.served[0].1.offset == 4)
        let refusals: [(PeerID, FileGet, String)] = [
            (w1, FileGet(request: 8, job: 999, index: 0, offset: 0, length: 1), "no such job"),
            (w1, FileGet(request: 9, job: shared, index: 0, offset: 0, length: 1), "shared path"),
            (w1, FileGet(request: 10, job: shipped, index: 2, offset: 0, length: 1), "has 2 input files"),
            (w1, FileGet(request: 11, job: shipped, index: 0, offset: 1001, length: 1), "past the end"),
            (w1, FileGet(request: 12, job: shipped, index: 0, offset: 0, length: FileGet.maxLength + 1), "at most"),
            (w2, FileGet(request: 13, job: shipped, index: 0, offset: 0, length: 1), "unregistered worker"),
        ]
        for (peer, g, problem) in refusals {
            let m = ask(peer, g)
            #expect(m?.contains(problem) == true && h.served.isEmpty, "request \(g.request): \(m ?? "served")")
        }
        // A registered worker that runs none of the job's shards gets none of its files (the files of a job go only
        // to the workers it was given to).
        h.hello(w3)
        #expect(ask(w3, FileGet(request: 15, job: shipped, index: 0, offset: 0, length: 1))?.contains("runs no shard of the job") == true && h.served.isEmpty)
        h.event(.received(client, .cancelJob(request: 2, job: shipped)))
        #expect(ask(w1, FileGet(request: 14, job: shipped, index: 0, offset: 0, length: 1))?.contains("has ended") == true)
    }
}

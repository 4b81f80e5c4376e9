import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// A coordinator core driven by hand: simulated workers answer ASSIGNs by running the real kernel.
struct Harness {
    var core: CoordinatorCore
    var now: Nanos = 1_000_000_000
    var outbox: [(PeerID, Message)] = []
    var logs: [String] = []
    var files: [OutputFile] = []
    var served: [(PeerID, FileGet, InputFile, Int)] = []
    var resolvedRows: UInt64 = 0
    var journal: [JournalEntry] = []
    /// Results the shell keeps on disk (`storeResult`); with `holdStores`, the writes not yet reported (`storing`).
    var stored: [JobID: [UInt8]] = [:]
    var holdStores = false
    var storing: [JobID] = []

    /// The spec limits the stand-in shell prepares jobs within (the coordinator's).
    let limits: SpecLimits

    init(_ config: CoordinatorConfig = CoordinatorConfig()) {
        core = CoordinatorCore(config: config, now: now)
        limits = config.specLimits
    }

    /// A journaled coordinator that keeps results over 40 bytes on disk, its writes held (`holdStores`), with w1
    /// registered; `configure` changes the rest.
    static func storingResults(_ configure: (inout CoordinatorConfig) -> Void = { _ in }) -> Harness {
        var config = CoordinatorConfig()
        config.storeResultsOver = 40
        config.journal = true
        configure(&config)
        var h = Harness(config)
        h.holdStores = true
        h.hello(w1)
        return h
    }

    @discardableResult
    mutating func event(_ e: CoordinatorEvent) -> [(PeerID, Message)] {
        var sent: [(PeerID, Message)] = []
        var pending = [e]
        while !pending.isEmpty {
            let ev = pending.removeFirst()
            for a in core.handle(ev, now: now) {
                switch a {
                case .send(let p, let m): sent.append((p, m))
                case .log(_, let s, _): logs.append(s)
                case .resolveInput(let p, let s, let who): pending.append(.inputResolved(p, s, shellPrepare(s, rows: resolvedRows, limits: limits), from: who))
                case .writeFile(let f): files.append(f)
                case .serveFile(let p, let g, let f, let n): served.append((p, g, f, n))
                case .journal(let e): journal.append(e)
                case .storeResult(let job, let bytes):
                    stored[job] = bytes
                    if holdStores { storing.append(job) } else { pending.append(.resultStored(job: job, error: nil)) }
                case .discardResult(let job): stored[job] = nil
                case .serveResult(let p, let g, let size):
                    // (what the shell's file server reads off the disk)
                    let bytes = stored[g.job] ?? []
                    let end = Int(min(g.offset + UInt64(g.length), size))
                    sent.append((p, .resultData(ResultData(request: g.request, job: g.job, size: size, offset: g.offset,
                                                           payload: Frame(Array(bytes[Int(g.offset)..<end]))))))
                }
            }
        }
        outbox += sent
        return sent
    }

    @discardableResult
    mutating func hello(_ peer: PeerID, slots: UInt32 = 1, instance: String? = nil, host: String = "host", features: String = "") -> [(PeerID, Message)] {
        event(.received(peer, .hello(Hello(cores: 2, slots: slots, memory: 1 << 30, host: host, name: "n",
                                           instance: instance ?? peer.description, features: features))))
    }

    mutating func advance(_ ns: Nanos) { now += ns }

    /// ASSIGNs sent to `peer` and not yet answered (as seen in the outbox).
    mutating func takeAssigns(_ peer: PeerID) -> [Assign] {
        var out: [Assign] = []
        outbox.removeAll { p, m in
            if p == peer, case .assign(let a) = m { out.append(a); return true }
            return false
        }
        return out
    }

    mutating func answer(_ peer: PeerID, _ a: Assign, spec: MapReduceSpec) throws -> [(PeerID, Message)] {
        let p = try MapReduceKernel.run(spec, start: a.start, count: a.count)
        return event(.received(peer, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok,
                                                         computeTime: 1000, payload: Frame(p.encoded)))))
    }
}

let w1 = PeerID([0, 0, 0, 0, 1]), w2 = PeerID([0, 0, 0, 0, 2]), w3 = PeerID([0, 0, 0, 0, 3]), client = PeerID([0, 0, 0, 0, 9])
let spec = MapReduceSpec(name: "t", input: .uniform(count: 10_000, seed: 4, low: -1, high: 1), map: .square,
                         reduce: [.sum, .count, .histogram(bins: 4, low: 0, high: 1)], sharding: .count(20))

func outcome(_ sent: [(PeerID, Message)]) -> JobOutcome? {
    for (_, m) in sent { if case .jobResult(let o) = m { return o } }
    return nil
}

@Suite struct CoordinatorCoreTests {
    @Test func handshakeAssignsIdAndHeartbeatContract() {
        var h = Harness()
        let sent = h.hello(w1)
        #expect(sent.count == 1)
        guard case .ready(let r) = sent[0].1 else { Issue.record("expected READY"); return }
        #expect(r.workerID == "w1" && r.heartbeatInterval == 1000 && r.liveness == 3)
        // A second HELLO from the same process instance on a new connection retires the old session.
        _ = h.hello(w2, instance: w1.description)
        #expect(h.core.liveWorkers == 1)
    }

    @Test func runsAJobToTheSameResultAsOneProcess() throws {
        var h = Harness()
        _ = h.hello(w1, slots: 2)
        _ = h.hello(w2, slots: 1)
        h.event(.received(client, .submit(Submit(request: 5, options: [.pushResult, .watch], spec: .mapReduce(spec)))))
        #expect(h.outbox.contains { $0.0 == client && $0.1 == .accept(Accept(request: 5, job: 1, shards: 20)) })
        var final: JobOutcome? = nil
        var rounds = 0
        while final == nil && rounds < 100 {
            rounds += 1
            for w in [w1, w2] {
                for a in h.takeAssigns(w) { final = outcome(try h.answer(w, a, spec: spec)) ?? final }
            }
        }
        let o = try #require(final)
        #expect(o.state == .completed && o.shards == 20 && o.duplicates == 0 && o.reruns == 0)
        let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
        let local = try MapReduceKernel.runLocal(spec)
        #expect(r.total.total == local.total)   // combined in shard order: bitwise equal to a sharded reference
        #expect(r.total.count == 10_000 && r.total.histogram == local.histogram)
        // Watchers saw progress ending in `completed`.
        let last = h.outbox.last { if case .progress = $0.1 { true } else { false } }
        if case .progress(let p)? = last?.1 { #expect(p.state == .completed && p.done == 20) } else { Issue.record("no progress") }
    }

    @Test func firstResultCountsDuplicatesAreDroppedAndCounted() throws {
        var h = Harness()
        _ = h.hello(w1, slots: 1)
        let one = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum], sharding: .count(2))
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(one)))))
        var assigns = h.takeAssigns(w1)
        #expect(assigns.count == 2)   // window: 1 slot + 1 prefetched
        _ = try h.answer(w1, assigns[0], spec: one)
        _ = try h.answer(w1, assigns[0], spec: one)   // duplicate of the same attempt
        #expect(h.core.job(1)?.duplicates == 1)
        assigns = h.takeAssigns(w1)
        let done = outcome(try h.answer(w1, assigns.isEmpty ? Assign(job: 1, shard: 1, attempt: 1, start: 5, count: 5) : assigns[0], spec: one))
        #expect(done?.state == .completed)
        #expect(done?.duplicates == 1)
        let r = try done!.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
        #expect(r.total.total == 45)
        // A result for a shard attempt never handed out is refused.
        let bogus = h.event(.received(w1, .result(ShardResult(job: 1, shard: 7, attempt: 1, status: .ok))))
        #expect(bogus.isEmpty || bogus.allSatisfy { if case .error = $0.1 { true } else { false } })
    }

    @Test func silentWorkerIsDeclaredDeadAndItsShardsRunElsewhere() throws {
        var h = Harness()
        _ = h.hello(w1, slots: 1)
        _ = h.hello(w2, slots: 1)
        h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec)))))
        let lost = h.takeAssigns(w1)
        #expect(!lost.isEmpty)
        // w2 keeps heartbeating, w1 goes silent.
        var final: JobOutcome? = nil
        for _ in 0..<80 {
            h.advance(100_000_000)
            h.event(.received(w2, .heartbeat(Heartbeat(sent: h.now))))
            h.event(.tick)
            for a in h.takeAssigns(w2) { final = outcome(try h.answer(w2, a, spec: spec)) ?? final }
            _ = h.takeAssigns(w1)
        }
        let o = try #require(final)
        #expect(o.state == .completed)
        #expect(o.reruns >= UInt32(lost.count))
        #expect(h.logs.contains { $0.contains("w1") && $0.contains("missed 3 heartbeats") && $0.contains("queued again") })
        let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
        #expect(r.total.total == (try MapReduceKernel.runLocal(spec)).total)
        // A late answer from the dead worker is refused as unregistered.
        let late = h.event(.received(w1, .heartbeat(Heartbeat(sent: 1))))
        #expect(late.contains { if case .error(let e) = $0.1 { e.code == 425 } else { false } })
    }

    @Test func lateJoinerGetsShardsAtOnce() {
        var h = Harness()
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))
        #expect(h.outbox.allSatisfy { if case .assign = $0.1 { false } else { true } })
        let sent = h.hello(w3, slots: 2)
        #expect(sent.contains { if case .assign(let a) = $0.1 { a.spec != nil } else { false } })   // first carries the spec
        #expect(sent.filter { if case .assign = $0.1 { true } else { false } }.count == 4)       // 2 slots × (1 + prefetch)
    }

    @Test func shardFailingTwiceFailsTheJobNamingShardWorkerAndHost() throws {
        var h = Harness()
        _ = h.hello(w1, slots: 1, host: "alpha")
        _ = h.hello(w2, slots: 1, host: "beta")
        let one = MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        h.event(.received(client, .submit(Submit(request: 3, options: [.pushResult], spec: .mapReduce(one)))))
        var final: JobOutcome? = nil
        for _ in 0..<4 {
            for w in [w1, w2] {
                for a in h.takeAssigns(w) {
                    final = outcome(h.event(.received(w, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt,
                                                                             status: .failed, error: "disk on fire"))))) ?? final
                }
            }
        }
        let o = try #require(final)
        #expect(o.state == .failed)
        #expect(o.error.contains("shard 0") && o.error.contains("disk on fire") && o.error.contains("alpha") && o.error.contains("beta"))
    }

    @Test func unknownJobReplyResendsTheSpec() {
        var h = Harness()
        _ = h.hello(w1, slots: 1)
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))
        let a = h.takeAssigns(w1)
        h.event(.received(w1, .result(ShardResult(job: a[0].job, shard: a[0].shard, attempt: a[0].attempt, status: .unknownJob))))
        let again = h.takeAssigns(w1)
        #expect(again.contains { $0.shard == a[0].shard && $0.spec != nil })
    }

    @Test func clientRequestsAnswerWithErrorsNamingTheJob() {
        var h = Harness()
        let f = h.event(.received(client, .fetch(request: 4, job: 77)))
        #expect(f.contains { if case .error(let e) = $0.1 { e.code == 404 && e.request == 4 && e.message.contains("77") } else { false } })
        h.event(.received(client, .submit(Submit(request: 5, options: [], spec: .mapReduce(spec)))))
        let early = h.event(.received(client, .fetch(request: 6, job: 1)))
        #expect(early.contains { if case .error(let e) = $0.1 { e.code == 425 && e.message.contains("job 1") } else { false } })
        let st = h.event(.received(client, .status(request: 7)))
        guard case .statusReply(7, let s)? = st.first?.1 else { Issue.record("no status"); return }
        #expect(s.jobs.count == 1 && s.queuedShards == 20)
        // npy inputs are resolved by the shell; a failure comes back as 422 naming the file.
        let npy = MapReduceSpec(input: .npy(path: "/nope.npy"), reduce: [.sum])
        let r = h.core.handle(.inputResolved(client, Submit(request: 8, options: [], spec: .mapReduce(npy)),
                                             .failure(JobError("/nope.npy: cannot open"))), now: h.now)
        #expect(r.contains { if case .send(_, .error(let e)) = $0 { e.code == 422 && e.message.contains("/nope.npy") } else { false } })
    }

    @Test func heartbeatsMeasureRoundTrip() {
        var h = Harness()
        _ = h.hello(w1)
        h.advance(1_000_000_000)
        let sent = h.event(.tick)
        guard case .heartbeat(let hb)? = sent.first(where: { $0.0 == w1 })?.1 else { Issue.record("no heartbeat"); return }
        h.advance(300_000)   // 0.3 ms later the worker answers, having held it 100 µs
        h.event(.received(w1, .heartbeat(Heartbeat(sent: 5, echo: hb.sent, held: 100_000))))
        let w = h.core.status(now: h.now).workers[0]
        #expect(w.rtt == 200_000)
    }

    /// The status carries each worker's BLAS kernel set from its HELLO features; a worker that names none shows "".
    @Test func statusCarriesTheWorkersBLASKernelSet() {
        var h = Harness()
        h.event(.received(w1, .hello(Hello(cores: 2, slots: 1, memory: 1 << 30, host: "h", name: "n", instance: "a",
                                           features: "map-reduce,lz4,blas=Prescott,blas-choice=openblas,blas-best=Cooperlake,shm=k"))))
        h.event(.received(w2, .hello(Hello(cores: 2, slots: 1, memory: 1 << 30, host: "h", name: "m", instance: "b", features: "map-reduce"))))
        let ws = h.core.status(now: h.now).workers
        let a = ws.first { $0.name == "n" }!, b = ws.first { $0.name == "m" }!
        #expect(a.blas == "Prescott" && a.blasChoice == "openblas" && a.blasBest == "Cooperlake" && a.blasBelowBest)
        #expect(a.blasLabel() == "Prescott!" && a.blasLabel(long: true) == "Prescott! (best: Cooperlake)")
        #expect(b.blas == "" && !b.blasBelowBest && b.blasLabel() == "-")
    }

    /// READY and STATUS carry the coordinator's build; a worker whose HELLO names another build (its build id
    /// differs) is warned about by name when it joins, one of the same build is not.
    @Test func aWorkerOfAnotherBuildIsWarnedAbout() {
        var config = CoordinatorConfig()
        config.build = "sigma 0.1.0 (build aaaaaaaaaaaa)"
        var h = Harness(config)
        let ready = h.event(.received(w1, .hello(Hello(build: "sigma 0.1.0 (build aaaaaaaaaaaa)", cores: 2, slots: 1, memory: 1 << 30,
                                                       host: "h", name: "same", instance: "a", features: ""))))
        guard case .ready(let r)? = ready.first(where: { $0.0 == w1 })?.1 else { Issue.record("no READY: \(ready)"); return }
        #expect(r.build == config.build)
        #expect(!h.logs.contains { $0.contains("runs sigma") })
        h.event(.received(w2, .hello(Hello(build: "sigma 0.1.0 (build bbbbbbbbbbbb)", cores: 2, slots: 1, memory: 1 << 30,
                                           host: "h2", name: "other", instance: "b", features: ""))))
        let warning = h.logs.first { $0.contains("runs sigma 0.1.0 (build bbbbbbbbbbbb)") }
        #expect(warning?.contains("(other@h2)") == true && warning?.contains("this coordinator sigma 0.1.0 (build aaaaaaaaaaaa)") == true
                && warning?.contains("run one build on every host") == true, "\(h.logs)")
        #expect(h.core.status(now: h.now).build == config.build)
    }

    /// A worker whose OpenBLAS kernel set differs from a live worker's is warned about, naming both sets; workers of
    /// one set are not.
    @Test func workersOfDifferentKernelSetsAreWarnedAbout() {
        var h = Harness()
        func join(_ p: PeerID, _ name: String, _ blas: String) {
            h.event(.received(p, .hello(Hello(cores: 2, slots: 1, memory: 1 << 30, host: "h", name: name, instance: name,
                                              features: "map-reduce,blas=\(blas),blas-choice=auto,blas-best=Cooperlake"))))
        }
        join(w1, "a", "Cooperlake")
        join(w2, "b", "Cooperlake")
        #expect(!h.logs.contains { $0.contains("kernels, worker") }, "\(h.logs)")
        join(w3, "c", "Prescott")
        let warning = h.logs.first { $0.contains("runs OpenBLAS Prescott kernels, worker") }
        #expect(warning?.contains("(c@h)") == true && warning?.contains("Cooperlake: a job's results then depend on which worker computed what") == true,
                "\(h.logs)")
    }
}

@Suite struct DeferredAcceptTests {
    @Test func deferredAcceptIsDroppedForJobsThatEndBeforeTheTickAndSentOtherwise() throws {
        var h = Harness()
        _ = h.hello(w1, slots: 1)
        let one = MapReduceSpec(input: .range(count: 3, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        let sent = h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult, .deferAccept], spec: .mapReduce(one)))))
        #expect(!sent.contains { if case .accept = $0.1 { true } else { false } })
        let a = h.takeAssigns(w1)[0]
        let done = try h.answer(w1, a, spec: one)
        #expect(outcome(done)?.state == .completed)
        #expect(!h.event(.tick).contains { if case .accept = $0.1 { true } else { false } })
        // A job still running at the next tick gets its ACCEPT then.
        h.event(.received(client, .submit(Submit(request: 2, options: [.pushResult, .deferAccept], spec: .mapReduce(spec)))))
        let tick = h.event(.tick)
        #expect(tick.contains { $0.0 == client && $0.1 == .accept(Accept(request: 2, job: 2, shards: 20)) })
    }
}

/// A small job's end, as a round trip sees it: the JOB-RESULT goes out at once, the worker hears that the job ended
/// at the next tick (the client waits on the one, nobody on the other), and the log gives the job's time with three
/// decimals.
@Suite struct JobEndOrderTests {
    @Test func theReplyGoesOutBeforeTheWorkerIsToldAndTheLogGivesMilliseconds() throws {
        var h = Harness()
        _ = h.hello(w1, slots: 1)
        let one = MapReduceSpec(input: .range(count: 3, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        for (request, nanos, text) in [(UInt64(1), Nanos(1_234_600_000), "job 1 completed in 1.235 s"), (2, 2_000_400, "job 2 completed in 0.002 s"),
                                       (3, 61_000_000_000, "job 3 completed in 61.000 s")] {
            h.event(.received(client, .submit(Submit(request: request, options: [.pushResult, .deferAccept], spec: .mapReduce(one)))))
            let a = try #require(h.takeAssigns(w1).first)
            h.advance(nanos)
            let sent = try h.answer(w1, a, spec: one)
            #expect(sent.contains { $0.0 == client && { if case .jobResult = $0 { true } else { false } }($0.1) }, "\(sent.map(\.1))")
            let release = Message.cancel(Cancel(job: JobID(request), shard: Cancel.allShards, attempt: 0))
            #expect(!sent.contains { $0.1 == release }, "\(sent.map(\.1))")
            #expect(h.event(.tick).contains { $0.0 == w1 && $0.1 == release })
            #expect(h.logs.contains(text), "\(h.logs)")
            // (its spec digest, computed when first asked for, is the digest of the spec as submitted)
            let spec = JobSpec.mapReduce(one)
            #expect(h.core.detail(job: JobID(request), attempts: false, now: h.now)?.specDigest == Digest.fnv1a64(spec.encoded))
        }
    }
}

/// The shell reads a submission's input on another thread; a second submission with the same client id that
/// arrives meanwhile must not start a second job: it is answered with the first one's job once that is accepted.
@Suite struct KeyedSubmitWhileResolvingTests {
    @Test func sameKeyDuringResolveGetsTheSameJob() {
        var core = CoordinatorCore(config: CoordinatorConfig(), now: 0)
        let file = MapReduceSpec(name: "k", input: .npy(path: "/data/x.npy"), map: .square, reduce: [.sum], sharding: .count(4))
        let a = core.handle(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(file), key: "K"))), now: 1)
        let resolves = a.compactMap { act -> Submit? in if case .resolveInput(_, let s, _) = act { return s } else { return nil } }
        #expect(resolves.count == 1)
        // The same key again, and once more from another client, before the input is read: no second read.
        let other = PeerID([0, 0, 0, 0, 8])
        let b = core.handle(.received(client, .submit(Submit(request: 2, options: [], spec: .mapReduce(file), key: "K"))), now: 2)
        let c = core.handle(.received(other, .submit(Submit(request: 7, options: [], spec: .mapReduce(file), key: "K"))), now: 3)
        #expect(!(b + c).contains { if case .resolveInput = $0 { return true } else { return false } })
        #expect(!(b + c).contains { if case .send = $0 { return true } else { return false } }, "answered before the first was accepted")
        let d = core.handle(.inputResolved(client, resolves[0], shellPrepare(resolves[0], rows: 100)), now: 4)
        let accepts = d.compactMap { act -> (PeerID, Accept)? in
            if case .send(let p, .accept(let acc)) = act { return (p, acc) } else { return nil }
        }
        #expect(accepts.map(\.1.request).sorted() == [1, 2, 7])
        #expect(Set(accepts.map(\.1.job)).count == 1, "one job for one key: \(accepts)")
        #expect(accepts.contains { $0.0 == other && $0.1.request == 7 })
        // A key whose first submission was refused is free again: the next submission is read afresh.
        let e = core.handle(.received(client, .submit(Submit(request: 3, options: [], spec: .mapReduce(file), key: "L"))), now: 5)
        let again = core.handle(.received(client, .submit(Submit(request: 4, options: [], spec: .mapReduce(file), key: "L"))), now: 6)
        #expect(again.isEmpty)
        let s3 = e.compactMap { act -> Submit? in if case .resolveInput(_, let s, _) = act { return s } else { return nil } }
        let f = core.handle(.inputResolved(client, s3[0], .failure(JobError("input: cannot read '/data/x.npy'"))), now: 7)
        #expect(f.contains { if case .send(client, .error(let er)) = $0 { return er.request == 3 } else { return false } })
        #expect(f.contains { if case .resolveInput(_, let s, _) = $0 { return s.request == 4 } else { return false } })
    }
}

@Suite struct PolicyNamesTests {
    /// One list of policies (SigmaModel's `SchedulingPolicy`): a spec file may name exactly those, and each travels
    /// in SUBMIT's option bits and back to the same policy.
    @Test func specPoliciesAreTheSchedulers() throws {
        for p in SchedulingPolicy.allCases {
            let file = try JobSpec.parseFile("kind: map-reduce\ninput: {generate: range, count: 10}\nreduce: [sum]\npolicy: \(p.rawValue)\n")
            #expect(file.policy == p.rawValue)
            #expect(SchedulingPolicy(code: p.submitOption.policyCode) == p)
        }
        #expect(throws: SpecError.self) { _ = try JobSpec.parseFile("kind: map-reduce\ninput: {generate: range, count: 10}\nreduce: [sum]\npolicy: fastest\n") }
        #expect(SchedulingPolicy(code: 0) == nil)
    }
}

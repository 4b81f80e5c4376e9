import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// Roles and authentic results in the coordinator core (docs/security.md): every message is checked against the
/// role of the key its connection was admitted with; a client sees only its own jobs; a RESULT counts only from the
/// worker holding that attempt. Each of these was possible before roles (issue 17, holes 1 and 2).
@Suite struct RolesTests {
    let alice = Principal(name: "alice", key: "A", role: .client)
    let bob = Principal(name: "bob", key: "B", role: .client)
    let admin = Principal(name: "root-admin", key: "R", role: .admin)
    let workerKey = Principal(name: "w-key", key: "W", role: .worker)
    let pA = PeerID([0, 0, 0, 1, 0xA]), pB = PeerID([0, 0, 0, 1, 0xB]), pR = PeerID([0, 0, 0, 1, 0xC])

    func errors(_ sent: [(PeerID, Message)], to peer: PeerID) -> [ErrorReply] {
        sent.compactMap { p, m in if p == peer, case .error(let e) = m { return e }; return nil }
    }

    func hello(_ h: inout Harness, _ peer: PeerID, as who: Principal) -> [(PeerID, Message)] {
        h.event(.received(peer, .hello(Hello(cores: 2, slots: 1, memory: 1 << 30, host: "h", name: who.name, instance: peer.description,
                                             features: "")), from: who))
    }

    /// Alice's job, accepted (generated input: no file to read).
    func submit(_ h: inout Harness, _ peer: PeerID, as who: Principal, key: String = "") throws -> JobID {
        let sent = h.event(.received(peer, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec), key: key)), from: who))
        return try #require(sent.compactMap { p, m -> JobID? in if p == peer, case .accept(let a) = m { return a.job }; return nil }.first)
    }

    @Test func aClientKeyCannotJoinAsAWorkerNorAWorkerKeySubmit() throws {
        var h = Harness()
        let sent = hello(&h, w1, as: alice)
        let e = try #require(errors(sent, to: w1).first)
        #expect(e.code == ErrorReply.Code.forbidden.rawValue && e.message.contains("HELLO needs the worker role") && e.message.contains("--role worker"))
        #expect(!sent.contains { if case .ready = $0.1 { return true } else { return false } })
        #expect(h.core.status(now: h.now).workers.isEmpty)
        // Nor may it answer for shards or fetch files.
        let r = h.event(.received(w1, .result(ShardResult(job: 1, shard: 0, attempt: 1, status: .failed, computeTime: 0, payload: Frame([]))), from: alice))
        #expect(errors(r, to: w1).first?.code == ErrorReply.Code.forbidden.rawValue)
        let f = h.event(.received(w1, .fileGet(FileGet(request: 4, job: 1, index: 0, offset: 0, length: 1)), from: alice))
        #expect(errors(f, to: w1).first.map { $0.code == ErrorReply.Code.forbidden.rawValue && $0.request == 4 } == true)

        // A worker key joins, but may not submit, list jobs or drain.
        #expect(hello(&h, w2, as: workerKey).contains { if case .ready = $0.1 { return true } else { return false } })
        let s = h.event(.received(w2, .submit(Submit(request: 9, options: [], spec: .mapReduce(spec))), from: workerKey))
        let se = try #require(errors(s, to: w2).first)
        #expect(se.request == 9 && se.message.contains("SUBMIT needs the client or admin role"))
        #expect(h.core.status(now: h.now).jobs.isEmpty)
        #expect(errors(h.event(.received(w2, .status(request: 3), from: workerKey)), to: w2).first?.code == ErrorReply.Code.forbidden.rawValue)
        #expect(h.core.refused == 5)
    }

    @Test func clientsSeeFollowFetchAndCancelOnlyTheirOwnJobsAndAdminsAll() throws {
        var h = Harness()
        let job = try submit(&h, pA, as: alice)
        // Bob does not see it in STATUS and is refused every way of reaching it.
        func statusJobs(_ peer: PeerID, _ who: Principal) -> [JobID] {
            for (p, m) in h.event(.received(peer, .status(request: 2), from: who)) where p == peer {
                if case .statusReply(_, let st) = m { return st.jobs.map(\.id) }
            }
            return [JobID.max]
        }
        #expect(statusJobs(pB, bob) == [])
        #expect(statusJobs(pA, alice) == [job])
        #expect(statusJobs(pR, admin) == [job])
        let asks: [Message] = [.watch(request: 3, job: job), .fetch(request: 4, job: job), .detail(request: 5, job: job, logFrom: 0, attempts: true),
                               .cancelJob(request: 6, job: job)]
        for m in asks {
            let sent = h.event(.received(pB, m, from: bob))
            let e = try #require(errors(sent, to: pB).first, "\(m.type.name) from bob was answered")
            #expect(e.code == ErrorReply.Code.forbidden.rawValue && e.request == m.request && e.message.contains("another client"))
            #expect(sent.count == 1, "\(m.type.name): \(sent)")
        }
        #expect(h.core.status(now: h.now).jobs.first?.state == .queued)
        // Bob may not drain workers either; an admin may.
        h.hello(w1)
        let d = h.event(.received(pB, .drainWorker(request: 7, worker: "w1"), from: bob))
        #expect(errors(d, to: pB).first?.message.contains("DRAIN-WORKER needs the admin role") == true)
        // The admin sees the job in depth and cancels it.
        let detail = h.event(.received(pR, .detail(request: 8, job: job, logFrom: 0, attempts: false), from: admin))
        #expect(detail.contains { if case .detailReply = $0.1 { return true } else { return false } })
        h.event(.received(pR, .cancelJob(request: 9, job: job), from: admin))
        #expect(h.core.status(now: h.now).jobs.first?.state == .cancelled)
        #expect(h.core.detail(job: job, attempts: false, now: h.now)?.job.error.contains("admin root-admin") == true)
        // The job's own log: lines the core logged about it (`.log(…, job:)`) and what it logged to it directly.
        let lines = h.core.detail(job: job, attempts: false, now: h.now)?.logs.map(\.text) ?? []
        #expect(lines.contains { $0.contains("accepted") } && lines.contains { $0.contains("cancelled by admin root-admin") }, "\(lines)")
        // Alice fetches her own (cancelled) job's outcome.
        let fetched = h.event(.received(pA, .fetch(request: 10, job: job), from: alice))
        #expect(fetched.contains { if case .jobResult = $0.1 { return true } else { return false } })
        let drained = h.event(.received(pR, .drainWorker(request: 11, worker: "w1"), from: admin))
        #expect(errors(drained, to: pR).isEmpty)
    }

    /// A client-chosen id names a job per client: Bob submitting Alice's id gets a job of his own, not hers.
    @Test func theSameIdFromAnotherClientIsAnotherJob() throws {
        var h = Harness()
        let a = try submit(&h, pA, as: alice, key: "nightly")
        #expect(try submit(&h, pA, as: alice, key: "nightly") == a)
        let b = try submit(&h, pB, as: bob, key: "nightly")
        #expect(b != a)
        #expect(h.core.status(now: h.now).jobs.count == 2)
    }

    /// A worker can answer only for the attempts it holds: another worker's forged results — a partial with other
    /// numbers, or two `failed` results — commit nothing and fail nothing; the job ends with the holder's answers,
    /// bitwise equal to a run without the forger.
    @Test func aResultCountsOnlyFromTheWorkerHoldingThatAttempt() throws {
        func run(forge: Bool) throws -> JobOutcome {
            var h = Harness(CoordinatorConfig())
            h.hello(w1)
            let one = MapReduceSpec(name: "one", input: .uniform(count: 1_000, seed: 7, low: 0, high: 1), map: .square,
                                    reduce: [.sum, .count], sharding: .count(2))
            h.event(.received(client, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(one)))))
            h.hello(w2)   // registered after the job was placed: it holds nothing
            let assigns = h.takeAssigns(w1)
            try #require(assigns.count == 2)
            if forge {
                let fake = try MapReduceKernel.run(one, start: 0, count: 7)   // wrong numbers for shard 0
                for a in assigns {
                    let sent = h.event(.received(w2, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1,
                                                                         payload: Frame(fake.encoded)))))
                    #expect(outcome(sent) == nil)
                    for _ in 0..<2 {
                        h.event(.received(w2, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .failed, computeTime: 1,
                                                                  error: "forged"))))
                    }
                }
                #expect(h.core.status(now: h.now).jobs.first?.state == .running)
                #expect(h.core.status(now: h.now).jobs.first?.done == 0)
                #expect(h.logs.contains { $0.contains("which does not hold that attempt") })
            }
            var last: JobOutcome? = nil
            for a in assigns { last = outcome(try h.answer(w1, a, spec: one)) ?? last }
            return try #require(last)
        }
        let honest = try run(forge: false), forged = try run(forge: true)
        #expect(forged.state == .completed && Array(forged.payload.bytes) == Array(honest.payload.bytes) && honest.payload.count > 0)
    }
}

/// Everything a peer can make the coordinator hold is bounded (issue 17, hole 6): followers per job and per
/// connection, submissions being read per connection and in all, same-id submissions parked behind the first.
/// Past each limit the request is refused with 429 naming the limit; nothing grows.
@Suite struct BoundsTests {
    func refusals(_ sent: [(PeerID, Message)]) -> [ErrorReply] {
        sent.compactMap { _, m in if case .error(let e) = m, e.code == ErrorReply.Code.tooManyRequests.rawValue { return e }; return nil }
    }

    @Test func followersPerJobAndPerConnectionAreBounded() throws {
        var config = CoordinatorConfig()
        config.maxWatchersPerJob = 3
        config.maxWatchesPerPeer = 2
        var h = Harness(config)
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))
        let job = try #require(h.core.status(now: h.now).jobs.first?.id)
        let peers = (0..<6).map { PeerID([9, 9, UInt8($0)]) }
        var refused = 0
        for p in peers { refused += refusals(h.event(.received(p, .watch(request: 5, job: job)))).count }
        #expect(refused == 3)   // 3 followers at most
        // One connection following many jobs: two at most.
        for i in 0..<4 {
            h.event(.received(client, .submit(Submit(request: UInt64(10 + i), options: [], spec: .mapReduce(spec)))))
        }
        let ids = h.core.status(now: h.now).jobs.map(\.id).filter { $0 != job }
        let one = PeerID([7, 7, 7])
        let answers = ids.map { refusals(h.event(.received(one, .watch(request: 20, job: $0)))).count }
        #expect(answers == [0, 0, 1, 1])
        #expect(refusals(h.event(.received(one, .submit(Submit(request: 30, options: [.watch], spec: .mapReduce(spec)))))).first?
            .message.contains("already follows 2 running jobs") == true)
        // A job that ends frees its followers' places.
        h.event(.received(client, .cancelJob(request: 40, job: ids[0])))
        #expect(refusals(h.event(.received(one, .watch(request: 41, job: ids[2])))).isEmpty)
    }

    @Test func submissionsBeingReadAndParkedSameIdSubmissionsAreBounded() throws {
        var config = CoordinatorConfig()
        config.maxResolvingPerPeer = 2
        config.maxResolving = 3
        config.maxParkedPerKey = 2
        var core = CoordinatorCore(config: config, now: 0)
        let fileSpec = try JobSpec.parse("kind: map-reduce\ninput: {npy: /data/v.npy}\nmap: identity\nreduce: [sum]\n")
        func submit(_ peer: PeerID, key: String = "", request: UInt64 = 1) -> [CoordinatorAction] {
            core.handle(.received(peer, .submit(Submit(request: request, options: [], spec: fileSpec, key: key))), now: 1)
        }
        func reads(_ a: [CoordinatorAction]) -> Int { a.filter { if case .resolveInput = $0 { return true } else { return false } }.count }
        func refused(_ a: [CoordinatorAction]) -> Bool {
            a.contains { if case .send(_, .error(let e)) = $0 { return e.code == ErrorReply.Code.tooManyRequests.rawValue }; return false }
        }
        let a = PeerID([1]), b = PeerID([2])
        #expect(reads(submit(a)) == 1 && reads(submit(a)) == 1)
        #expect(refused(submit(a)))               // 2 per connection
        #expect(reads(submit(b)) == 1)
        #expect(refused(submit(b)))               // 3 in all
        // Once read, a place is free again.
        let pending = submit(PeerID([3]), key: "k")
        #expect(refused(pending))
        _ = core.handle(.inputResolved(a, Submit(request: 1, options: [], spec: fileSpec), shellPrepare(Submit(request: 1, options: [], spec: fileSpec), rows: 10)), now: 2)
        let keyed = submit(PeerID([3]), key: "k")
        #expect(reads(keyed) == 1)
        // Same-id submissions wait behind the first: two at most.
        #expect(submit(PeerID([4]), key: "k").isEmpty && submit(PeerID([4]), key: "k").isEmpty)
        #expect(refused(submit(PeerID([4]), key: "k")))
    }
}

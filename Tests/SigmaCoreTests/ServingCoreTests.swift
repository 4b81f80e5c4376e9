import SigmaCoordinatorCore
import SigmaModel
import SigmaProtocol
import Testing

/// The coordinator core's deployments (docs/serving.md), driven event by event: replicas placed, batches formed and
/// routed, a dead worker's requests answered once elsewhere, 429 / 503 / 504.
@Suite struct ServingCoreTests {
    static func config(_ name: String = "m", replicas: Int = 0, maxBatch: Int = 4, queueLimit: Int = 100, timeout: Nanos = 10_000_000_000) -> DeploymentConfig {
        DeploymentConfig(name: name, model: "mlp", inputs: 2, spec: JobSpec(kind: "serve", name: name, body: [1]), replicas: replicas,
                         maxBatch: maxBatch, maxWait: 5_000_000, queueLimit: queueLimit, timeout: timeout)
    }

    static func row(_ v: Float) -> ServeInput { .rows(width: 2, values: [v, v]) }

    /// Deploys `config` on the harness's workers and has each load it.
    static func deployed(_ h: inout Harness, _ c: DeploymentConfig, workers: [PeerID]) {
        for w in workers { h.hello(w) }
        let sent = h.event(.deploy(client, request: 1, .success(c)))
        for w in workers where sent.contains(where: { $0.0 == w && $0.1.type == .load }) {
            h.event(.received(w, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))))
        }
    }

    /// BATCHes sent to `peer` and not yet answered.
    static func batches(_ h: inout Harness, _ peer: PeerID) -> [ServeBatch] {
        var out: [ServeBatch] = []
        h.outbox.removeAll { p, m in
            if p == peer, case .batch(let b) = m { out.append(b); return true }
            return false
        }
        return out
    }

    /// The worker's answer: one output per row, the row's first value plus 100.
    static func answer(_ h: inout Harness, _ peer: PeerID, _ b: ServeBatch) -> [(PeerID, Message)] {
        guard case .rows(let w, let v) = b.input else { return [] }
        let out = stride(from: 0, to: v.count, by: w).map { v[$0] + 100 }
        return h.event(.received(peer, .batchResult(ServeBatchResult(batch: b.batch, ok: true, computeNanos: 1000, rows: UInt32(out.count), width: 1, values: out))))
    }

    static func predictions(_ sent: [(PeerID, Message)]) -> [UInt64: [Float]] {
        var out: [UInt64: [Float]] = [:]
        for (_, m) in sent { if case .prediction(let p) = m { out[p.request] = p.values } }
        return out
    }

    @Test func replicasGoOnEveryWorkerAndOnWorkersThatJoinLater() {
        var h = Harness()
        h.hello(w1)
        let sent = h.event(.deploy(client, request: 1, .success(Self.config(replicas: 0))))
        #expect(sent.contains { $0.0 == w1 && $0.1.type == .load })
        #expect(sent.contains { if case .deployments(1, let l) = $0.1 { l.first?.replicas.count == 1 } else { false } })
        #expect(h.hello(w2).contains { $0.0 == w2 && $0.1.type == .load }, "a worker that joins later gets a replica")
        // The same spec again changes nothing; another spec under the name is refused.
        #expect(h.event(.deploy(client, request: 2, .success(Self.config(replicas: 0)))).allSatisfy { $0.1.type == .deployments })
        let other = h.event(.deploy(client, request: 3, .success(Self.config(replicas: 1))))
        #expect(other.contains { if case .error(let e) = $0.1 { e.code == 422 && e.message.contains("sigma undeploy m") } else { false } })
    }

    @Test func requestsAreBatchedAndAnsweredInOrderWithTheirOwnRows() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 1, maxBatch: 4), workers: [w1])
        // Idle replica: the first request leaves at once, alone.
        h.event(.received(client, .predict(PredictRequest(request: 10, name: "m", input: Self.row(1)))))
        let first = Self.batches(&h, w1)
        #expect(first.count == 1 && first[0].input.count == 1)
        // While it computes, five more gather: a full batch of 4 goes behind it (depth 2), one waits.
        for r in 11...15 { h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(Float(r)))))) }
        let second = Self.batches(&h, w1)
        #expect(second.count == 1 && second[0].input == .rows(width: 2, values: [11, 11, 12, 12, 13, 13, 14, 14]))
        var answers = Self.predictions(Self.answer(&h, w1, first[0]))
        answers.merge(Self.predictions(Self.answer(&h, w1, second[0]))) { $1 }
        // The five clients just answered are expected back: the idle replica waits for them, at most max_wait.
        #expect(Self.batches(&h, w1).isEmpty)
        h.advance(5_000_000)
        h.event(.serveDue)
        let third = Self.batches(&h, w1)
        #expect(third.count == 1 && third[0].input.count == 1)
        answers.merge(Self.predictions(Self.answer(&h, w1, third[0]))) { $1 }
        #expect(answers == [10: [101], 11: [111], 12: [112], 13: [113], 14: [114], 15: [115]])
        let d = h.core.deploymentList(now: h.now)[0]
        #expect(d.requests == 6 && d.answered == 6 && d.meanBatch == 2)
    }

    @Test func aLoneClientNeverWaitsAndReturningClientsAreBatchedTogether() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 1, maxBatch: 8), workers: [w1])
        // One client, one request after another: each leaves at once.
        for r in 1...3 {
            h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(Float(r))))))
            let b = Self.batches(&h, w1)
            #expect(b.count == 1 && b[0].input.count == 1, "request \(r)")
            _ = Self.answer(&h, w1, b[0])
        }
        // Under load: requests that gather while the replica computes go together, and once it is idle again it waits
        // for the client it just answered instead of taking the next request alone.
        for r in 4...6 { h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(Float(r)))))) }
        var b = Self.batches(&h, w1)
        #expect(b.count == 1 && b[0].input.count == 1)
        _ = Self.answer(&h, w1, b[0])
        for r in 7...9 { h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(Float(r)))))) }
        b = Self.batches(&h, w1)
        #expect(b.count == 1 && b[0].input.count == 3, "\(b.map(\.input.count))")
    }

    @Test func aDeadWorkersRequestsAreAnsweredOnceElsewhere() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 0, maxBatch: 2), workers: [w1, w2])
        for r in 1...4 { h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(Float(r)))))) }
        let on1 = Self.batches(&h, w1), on2 = Self.batches(&h, w2)
        #expect(on1.count + on2.count >= 2)
        // w1 falls silent: declared dead, its batches' requests go to w2.
        for b in on2 { _ = Self.answer(&h, w2, b) }
        h.advance(4_000_000_000)
        h.event(.received(w2, .heartbeat(Heartbeat(sent: 1, echo: 0))))
        h.event(.tick)
        var answers = Self.predictions(h.outbox)
        for _ in 0..<4 {
            for b in Self.batches(&h, w2) { answers.merge(Self.predictions(Self.answer(&h, w2, b))) { $1 } }
        }
        // w1's late answer is dropped: nothing is answered twice.
        for b in on1 { #expect(Self.predictions(Self.answer(&h, w1, b)).isEmpty) }
        #expect(answers == [1: [101], 2: [102], 3: [103], 4: [104]])
        let count = h.outbox.filter { if case .prediction = $0.1 { true } else { false } }.count
        #expect(count == 4, "each request answered once")
    }

    @Test func overTheQueueLimitIs429NotReadyIs503TooLateIs504() {
        var h = Harness()
        h.hello(w1)
        h.event(.deploy(client, request: 1, .success(Self.config(replicas: 1, maxBatch: 1, queueLimit: 2, timeout: 1_000_000_000))))
        func code(_ sent: [(PeerID, Message)]) -> UInt16? { sent.compactMap { if case .error(let e) = $0.1 { e.code } else { nil } }.first }
        let loading = h.event(.received(client, .predict(PredictRequest(request: 2, name: "m", input: Self.row(1)))))
        #expect(code(loading) == 503 && loading.contains { if case .error(let e) = $0.1 { e.message.contains("no replica loaded yet") } else { false } })
        h.event(.received(w1, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))))
        // Two in flight (depth 2 once the queue is full), two queued, then 429.
        var codes: [UInt16?] = []
        for r in 3...8 { codes.append(code(h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(1))))))) }
        #expect(codes == [nil, nil, nil, nil, 429, 429])
        #expect(code(h.event(.received(client, .predict(PredictRequest(request: 9, name: "m", input: .texts(["a"])))))) == 422)
        #expect(code(h.event(.received(client, .predict(PredictRequest(request: 10, name: "nope", input: Self.row(1)))))) == 404)
        // The queued ones time out: 504 before any batch takes them.
        h.advance(2_000_000_000)
        let late = h.event(.serveDue)
        #expect(late.filter { if case .error(let e) = $0.1 { e.code == 504 } else { false } }.count == 4)
        let d = h.core.deploymentList(now: h.now)[0]
        #expect(d.tooBusy == 2 && d.unavailable == 1 && d.timedOut == 4)
    }

    /// A request that times out while its batch is on a worker gets its 504 at once; when the batch's answer comes,
    /// the requests beside it in the batch still get their own rows (the answer's rows follow the batch's order).
    @Test func aRequestThatTimesOutInABatchLeavesTheOthersTheirOwnRows() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 1, maxBatch: 4), workers: [w1])
        h.event(.received(client, .predict(PredictRequest(request: 1, name: "m", input: Self.row(1)))))
        let first = Self.batches(&h, w1)
        // Behind it, a full batch of four: the second of them with a 1 ms timeout of its own.
        for r in 2...5 {
            h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", timeoutMs: r == 3 ? 1 : 0, input: Self.row(Float(r))))))
        }
        let second = Self.batches(&h, w1)
        #expect(second.count == 1 && second[0].input.count == 4, "\(second.map(\.input.count))")
        h.advance(2_000_000)
        let late = h.event(.serveDue)
        #expect(late.contains { if case .error(let e) = $0.1 { e.code == 504 && e.request == 3 } else { false } })
        var answers = Self.predictions(Self.answer(&h, w1, first[0]))
        answers.merge(Self.predictions(Self.answer(&h, w1, second[0]))) { $1 }
        #expect(answers == [1: [101], 2: [102], 4: [104], 5: [105]])
    }

    /// WITHDRAW: a queued request leaves the queue (never batched), one in a batch on a worker gets no answer while
    /// the others in that batch get their own rows; only the peer that sent a request can withdraw it; none is
    /// answered twice or lost.
    @Test func aWithdrawnRequestIsNeitherBatchedNorAnswered() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 1, maxBatch: 2), workers: [w1])
        let other = PeerID([0, 0, 0, 0, 8])
        func predict(_ r: UInt64, from peer: PeerID = client) { h.event(.received(peer, .predict(PredictRequest(request: r, name: "m", input: Self.row(Float(r)))))) }
        // One batch computing, a full batch of two behind it (the replica's depth), then three queued.
        predict(1)
        for r in 2...6 { predict(UInt64(r)) }
        var sent = Self.batches(&h, w1)
        #expect(sent.map(\.input.count) == [1, 2], "\(sent.map(\.input.count))")
        #expect(h.core.deploymentList(now: h.now)[0].queued == 3)
        // Request 2 (in the second batch) and 5 (queued) withdrawn; another peer's WITHDRAW of 4 changes nothing.
        #expect(h.event(.received(client, .withdraw(request: 2))).isEmpty, "a WITHDRAW is not answered")
        h.event(.received(client, .withdraw(request: 5)))
        h.event(.received(other, .withdraw(request: 4)))
        h.event(.received(client, .withdraw(request: 99)))
        #expect(h.core.deploymentList(now: h.now)[0].queued == 2)
        var answers: [UInt64: [Float]] = [:]
        while !sent.isEmpty {
            for b in sent { answers.merge(Self.predictions(Self.answer(&h, w1, b))) { $1 } }
            h.advance(5_000_000)
            h.event(.serveDue)
            sent = Self.batches(&h, w1)
        }
        #expect(answers == [1: [101], 3: [103], 4: [104], 6: [106]])
        let d = h.core.deploymentList(now: h.now)[0]
        #expect(d.withdrawn == 2 && d.answered == 4 && d.queued == 0 && d.batchedRows == 5, "\(d)")
        // The same request id again from its client is a new request.
        predict(5)
        h.advance(5_000_000)
        h.event(.serveDue)
        let last = Self.batches(&h, w1)
        #expect(last.count == 1)
        #expect(last.first.map { Self.predictions(Self.answer(&h, w1, $0)) } == [5: [105]])
    }

    /// Whether `sent` answers request `id` of `client` (a PREDICTION or an ERROR).
    static func answers(_ sent: [(PeerID, Message)], _ id: UInt64) -> Bool {
        sent.contains { p, m in
            guard p == client else { return false }
            switch m {
            case .prediction(let x): return x.request == id
            case .error(let e): return e.request == id
            default: return false
            }
        }
    }

    /// Undeployed while its only replica computes a batch, then that worker dies: the batch's requests are answered
    /// (503) — they were queued again into the draining deployment, which then went, and were never answered.
    @Test func aDrainingDeploymentsLostBatchIsStillAnswered() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 1), workers: [w1])
        h.event(.received(client, .predict(PredictRequest(request: 10, name: "m", input: Self.row(1)))))
        #expect(Self.batches(&h, w1).count == 1)
        h.event(.received(client, .undeploy(request: 11, name: "m")))
        #expect(h.core.deploymentList(now: h.now).map(\.draining) == [true], "shown draining while its batch is out")
        h.advance(4_000_000_000)
        h.event(.tick)                       // w1 declared dead
        #expect(h.outbox.contains { if case .error(let e) = $0.1 { e.request == 10 && e.code == 503 } else { false } }, "request 10 answered 503")
        #expect(h.core.deploymentList(now: h.now).isEmpty, "the undeployed deployment is gone")
    }

    /// A rows input whose values are not whole rows is refused (422), never batched: a worker cannot decode such a
    /// BATCH, never answers it, and two of them held a one-replica deployment's slots for good.
    @Test func rowsThatAreNotWholeRowsAreRefusedNotBatched() throws {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 1, timeout: 1_000_000_000), workers: [w1])
        for (r, input) in [(10, ServeInput.rows(width: 2, values: [1, 2, 3])), (11, .rows(width: 0, values: [1]))] {
            let sent = h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: input))))
            #expect(sent.contains { if case .error(let e) = $0.1 { e.request == UInt64(r) && e.code == 422 } else { false } }, "\(sent)")
        }
        #expect(Self.batches(&h, w1).isEmpty, "a malformed input reached a worker")
        h.event(.received(client, .predict(PredictRequest(request: 12, name: "m", input: Self.row(5)))))
        #expect(Self.batches(&h, w1).count == 1)
    }

    /// One request whose inputs alone exceed the queue's byte bound can never fit: 413, not 429 "retry later".
    @Test func aRequestLargerThanTheQueuesByteBoundIs413Not429() {
        var h = Harness()
        let c = DeploymentConfig(name: "e", model: "embed", spec: JobSpec(kind: "serve", name: "e", body: [1]), replicas: 1, maxBatch: 8)
        h.hello(w1)
        h.event(.deploy(client, request: 1, .success(c)))
        h.event(.received(w1, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))))
        let big = String(repeating: "a", count: 1 << 20)   // (300 copies share one buffer)
        let sent = h.event(.received(client, .predict(PredictRequest(request: 10, name: "e", input: .texts(Array(repeating: big, count: 300))))))
        let code = sent.compactMap { if case .error(let e) = $0.1 { e.code } else { nil } }.first
        #expect(code == 413, "got \(String(describing: code))")
    }

    /// A draining worker takes no new batches; it leaves once the batches it holds are answered (they were queued
    /// again and computed twice when it left with them).
    @Test func aDrainingWorkerTakesNoBatchesAndLeavesOnceItsBatchesAreAnswered() {
        var h = Harness()
        Self.deployed(&h, Self.config(replicas: 0, maxBatch: 1), workers: [w1, w2])
        h.event(.received(client, .predict(PredictRequest(request: 1, name: "m", input: Self.row(1)))))
        let on1 = Self.batches(&h, w1), on2 = Self.batches(&h, w2)
        let (busy, busyID, other) = on1.isEmpty ? (w2, "w2", w1) : (w1, "w1", w2)
        let held = on1 + on2
        #expect(held.count == 1)
        h.event(.received(client, .drainWorker(request: 2, worker: busyID)))
        #expect(!h.outbox.contains { $0.0 == busy && $0.1.type == .disconnect }, "it still holds a batch")
        for r in 3...6 { h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: Self.row(Float(r)))))) }
        #expect(Self.batches(&h, busy).isEmpty, "no new batch for a draining worker")
        var answers = Self.predictions(Self.answer(&h, busy, held[0]))
        #expect(h.outbox.contains { $0.0 == busy && $0.1.type == .disconnect }, "drained once its batch is answered")
        for _ in 0..<8 {
            for b in Self.batches(&h, other) { answers.merge(Self.predictions(Self.answer(&h, other, b))) { $1 } }
            h.advance(5_000_000)
            h.event(.serveDue)
        }
        #expect(answers == [1: [101], 3: [103], 4: [104], 5: [105], 6: [106]])
        #expect(h.core.deploymentList(now: h.now)[0].answered == 5)
    }

    /// A deployment is controlled by the client that made it: another client may call it, not undeploy or replace
    /// it; an admin may. The coordinator holds at most `maxDeployments` (each may queue 256 MiB and loads a model).
    @Test func onlyItsOwnerOrAnAdminUndeploysADeploymentAndTheirNumberIsBounded() {
        var config = CoordinatorConfig()
        config.maxDeployments = 3
        var h = Harness(config)
        let alice = Principal(name: "alice", key: "A", role: .client), bob = Principal(name: "bob", key: "B", role: .client)
        let admin = Principal(name: "root", key: "R", role: .admin)
        let pA = PeerID([0, 0, 0, 1, 0xA]), pB = PeerID([0, 0, 0, 1, 0xB])
        h.hello(w1)
        func code(_ sent: [(PeerID, Message)]) -> UInt16? { sent.compactMap { if case .error(let e) = $0.1 { e.code } else { nil } }.first }
        #expect(code(h.event(.deploy(pA, request: 1, .success(Self.config("alice-model", replicas: 1)), from: alice))) == nil)
        #expect(code(h.event(.received(pB, .undeploy(request: 2, name: "alice-model"), from: bob))) == 403)
        #expect(code(h.event(.deploy(pB, request: 3, .success(Self.config("alice-model", replicas: 2)), from: bob))) == 403, "nor replaced")
        h.event(.received(w1, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))))
        let call = h.event(.received(pB, .predict(PredictRequest(request: 4, name: "alice-model", input: Self.row(1))), from: bob))
        #expect(code(call) == nil, "bob may call it")
        #expect(h.core.deploymentList(now: h.now).map(\.draining) == [false])
        #expect(code(h.event(.deploy(pB, request: 5, .success(Self.config("b1", replicas: 1)), from: bob))) == nil)
        #expect(code(h.event(.deploy(pB, request: 6, .success(Self.config("b2", replicas: 1)), from: bob))) == nil)
        #expect(code(h.event(.deploy(pB, request: 7, .success(Self.config("b3", replicas: 1)), from: bob))) == 503, "past maxDeployments")
        #expect(code(h.event(.received(pB, .undeploy(request: 8, name: "alice-model"), from: admin))) == nil, "an admin may")
    }

    /// Over ZeroMQ the key's role decides: clients and admins deploy and predict; a worker key may not, and a client
    /// key may not answer batches.
    @Test func rolesDecideWhoDeploysPredictsAndAnswers() {
        var h = Harness()
        let worker = Principal(name: "w", key: "W", role: .worker), alice = Principal(name: "alice", key: "A", role: .client)
        h.hello(w1)
        func refused(_ sent: [(PeerID, Message)]) -> Bool { sent.contains { if case .error(let e) = $0.1 { e.code == 403 } else { false } } }
        #expect(refused(h.event(.deploy(w2, request: 1, .success(Self.config(replicas: 1)), from: worker))))
        #expect(!refused(h.event(.deploy(client, request: 2, .success(Self.config(replicas: 1)), from: alice))))
        #expect(refused(h.event(.received(w2, .predict(PredictRequest(request: 3, name: "m", input: Self.row(1))), from: worker))))
        #expect(refused(h.event(.received(client, .batchResult(ServeBatchResult(batch: 1, ok: true)), from: alice))))
        #expect(refused(h.event(.received(client, .loaded(ModelLoaded(deployment: 1, ok: true)), from: alice))))
    }
}

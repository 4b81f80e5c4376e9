@testable import SigmaCoordinatorCore
import SigmaEngine
import SigmaModel
import SigmaProtocol
import Testing

/// A deployment's queue keeps its totals and its deadline bound as requests come and go, so a dispatch reads them
/// instead of recounting the queue (docs/performance.md, "A deep queue").
@Suite struct RequestQueueTests {
    /// Random appends, prepends, pops, withdrawals and expiries: rows, tokens and bytes always equal a recount; the
    /// deadline bound is never later than a queued deadline, and exact after an expiry that was due; an expiry takes
    /// exactly the late requests, in queue order; a withdrawn request is never popped or expired.
    @Test func totalsAndTheDeadlineBoundFollowEveryChange() {
        var rng = SeededRandom(seed: 7)
        var q = RequestQueue()
        var mirror: [PendingRequest] = []
        var now: Nanos = 1_000
        for i in 0..<20_000 {
            let op = rng.next() % 10
            if op < 5 {
                let r = PendingRequest(peer: PeerID([UInt8(i % 7)]), request: UInt64(i), input: .rows(width: 1, values: [1]),
                                       rows: Int(1 + rng.next() % 9), tokens: Int(1 + rng.next() % 50), bytes: Int(4 + rng.next() % 400),
                                       arrived: now, deadline: now + 1 + rng.next() % 5_000)
                if op < 4 { q.append(r); mirror.append(r) } else { q.prepend(r); mirror.insert(r, at: 0) }
            } else if op == 7, let pick = mirror.isEmpty ? nil : mirror[Int(rng.next() % UInt64(mirror.count))] {
                // A client withdraws a queued request; withdrawing it again finds nothing.
                let found = q.withdraw(pick.peer, request: pick.request)
                #expect(found)
                mirror.removeAll { $0.peer == pick.peer && $0.request == pick.request }
                let again = q.withdraw(pick.peer, request: pick.request)
                #expect(!again)
            } else if op < 8 {
                let got = q.popFirst()
                #expect(got?.request == mirror.first?.request)
                if !mirror.isEmpty { mirror.removeFirst() }
            } else {
                now += rng.next() % 1_500
                let due = now >= q.earliestDeadline
                let late = q.removeExpired(now: now)
                #expect(late.map(\.request) == mirror.filter { $0.deadline <= now }.map(\.request))
                mirror.removeAll { $0.deadline <= now }
                if due { #expect(q.earliestDeadline == (mirror.map(\.deadline).min() ?? .max), "exact after an expiry that was due") }
            }
            #expect(q.count == mirror.count && q.first?.request == mirror.first?.request)
            #expect(q.rows == mirror.reduce(0) { $0 + $1.rows } && q.tokens == mirror.reduce(0) { $0 + $1.tokens }
                    && q.bytes == mirror.reduce(0) { $0 + $1.bytes })
            #expect(q.earliestDeadline <= (mirror.map(\.deadline).min() ?? .max), "a bound on every queued deadline")
            if q.count != mirror.count { break }
        }
    }

    /// A request with a short timeout behind requests with long ones gets its 504 on time, the others stay queued.
    @Test func aShortTimeoutBehindLongOnesExpiresOnTime() {
        var h = Harness()
        h.hello(w1)
        h.event(.deploy(client, request: 1, .success(ServingCoreTests.config(replicas: 1, maxBatch: 1, queueLimit: 100, timeout: 10_000_000_000))))
        h.event(.received(w1, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))))
        func codes(_ sent: [(PeerID, Message)]) -> [UInt16] { sent.compactMap { if case .error(let e) = $0.1 { e.code } else { nil } } }
        // Two batches in flight on the one replica (its depth), three requests queued behind them, then a short one.
        for r in 2...6 { #expect(codes(h.event(.received(client, .predict(PredictRequest(request: UInt64(r), name: "m", input: ServingCoreTests.row(1)))))).isEmpty) }
        #expect(codes(h.event(.received(client, .predict(PredictRequest(request: 7, name: "m", timeoutMs: 100, input: ServingCoreTests.row(1)))))).isEmpty)
        #expect(h.core.deploymentList(now: h.now)[0].queued == 4)
        #expect(h.core.serveWake.map { $0 <= h.now + 100_000_000 } == true, "woken by the short deadline, not the long ones")
        h.advance(200_000_000)
        let late = h.event(.serveDue)
        let answered = late.compactMap { m -> (UInt64, UInt16)? in if case .error(let e) = m.1 { (e.request, e.code) } else { nil } }
        #expect(answered.map(\.0) == [7] && answered.map(\.1) == [504], "\(answered)")
        #expect(h.core.deploymentList(now: h.now)[0].queued == 3)
    }

    /// A request already in a batch on a worker times out on time too: the core asks to be woken at its deadline
    /// (it was answered at the next 50 ms tick, and a batch answered meanwhile could still answer it late).
    @Test func aRequestOnAWorkerTimesOutOnTime() {
        var h = Harness()
        h.hello(w1)
        h.event(.deploy(client, request: 1, .success(ServingCoreTests.config(replicas: 1, maxBatch: 1, queueLimit: 100, timeout: 10_000_000_000))))
        h.event(.received(w1, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))))
        h.event(.received(client, .predict(PredictRequest(request: 2, name: "m", timeoutMs: 100, input: ServingCoreTests.row(1)))))
        #expect(ServingCoreTests.batches(&h, w1).count == 1, "sent at once to the idle replica")
        #expect(h.core.serveWake.map { $0 <= h.now + 100_000_000 } == true, "woken by its deadline")
        h.advance(100_000_000)
        let late = h.event(.serveDue)
        #expect(late.contains { if case .error(let e) = $0.1 { e.request == 2 && e.code == 504 } else { false } })
    }
}


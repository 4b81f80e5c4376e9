import Foundation
import SigmaModel
import SigmaProtocol
import SigmaTransport
import SigmaWorker
import Synchronization
import Testing

/// Runs blocking `body` on an OS thread of its own (as a compute thread would), so the test's task waits without
/// holding a thread of the cooperative pool.
func onComputeThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        Thread { c.resume(with: Result { try body() }) }.start()
    }
}

/// Waits (polling, at most `seconds`) until `condition` holds; false if it never did.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = monotonicNanos() + UInt64(seconds * 1e9)
    while monotonicNanos() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

private func tag(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct PeerMeshTests {
    /// Generous for a message over loopback on a loaded 2-core machine; only reached when a test fails.
    static let arrival = 10.0

    @Test func threeMeshesExchangeAllToAll() async throws {
        let meshes = try (0..<3).map { _ in try PeerMesh(host: "127.0.0.1", security: .none) }
        defer { meshes.forEach { $0.close() } }
        #expect(meshes.allSatisfy { $0.endpoint.hasPrefix("tcp://127.0.0.1:") && !$0.endpoint.hasSuffix(":0") })
        #expect(Set(meshes.map(\.endpoint)).count == 3)
        // Each sends to each other one: one message under a tag of its own pair, and one under the receiver's tag.
        for (i, from) in meshes.enumerated() {
            for (j, to) in meshes.enumerated() where j != i {
                from.send(to: to.endpoint, serverKey: nil, tag: tag("pair/\(i)->\(j)"), frames: [Frame([UInt8(i), UInt8(j)])])
                from.send(to: to.endpoint, serverKey: nil, tag: tag("to/\(j)"), frames: [Frame([UInt8(i)]), Frame(tag("second"))])
            }
        }
        for (j, mesh) in meshes.enumerated() {
            let got = try await onComputeThread { try mesh.receive(tag: tag("to/\(j)"), count: 2, timeout: Self.arrival) { false } }
            #expect(got.count == 2 && got.allSatisfy { $0.count == 2 && $0[1].bytes == tag("second") })
            #expect(Set(got.map { $0[0].bytes }) == Set((0..<3).filter { $0 != j }.map { [UInt8($0)] }))
            for i in 0..<3 where i != j {
                let pair = try await onComputeThread { try mesh.receive(tag: tag("pair/\(i)->\(j)"), count: 1, timeout: Self.arrival) { false } }
                #expect(pair.map { $0.map(\.bytes) } == [[[UInt8(i), UInt8(j)]]])
            }
            #expect(mesh.bufferedBytes == 0)
        }
    }

    @Test func aFiveMegabyteFrameArrivesIntact() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none), b = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close(); b.close() }
        let big = Frame(count: 5_000_000) { buf in for i in 0..<buf.count { buf[i] = UInt8(truncatingIfNeeded: i &* 131 &+ i >> 13) } }
        b.send(to: a.endpoint, serverKey: nil, tag: tag("big"), frames: [Frame([7]), big, Frame.empty])
        let got = try await onComputeThread { try a.receive(tag: tag("big"), count: 1, timeout: Self.arrival) { false } }
        #expect(got.count == 1 && got[0].count == 3)
        #expect(got[0][0].bytes == [7] && got[0][1] == big && got[0][2].isEmpty)
    }

    @Test func messagesSentBeforeTheReceiverWaitsAreBufferedInOrder() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none), b = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close(); b.close() }
        for k in 0..<3 { b.send(to: a.endpoint, serverKey: nil, tag: tag("early"), frames: [Frame([UInt8(k)])]) }
        #expect(await eventually { a.buffered(tag: tag("early")) == 3 })
        #expect(a.bufferedBytes == 3 * (5 + 1))
        // (no time to wait: they are all here)
        let got = try await onComputeThread { try a.receive(tag: tag("early"), count: 3, timeout: 0) { false } }
        #expect(got.map { $0[0].bytes } == [[0], [1], [2]])
        #expect(a.buffered(tag: tag("early")) == 0 && a.bufferedBytes == 0 && a.dropped == 0)
    }

    @Test func aFullBufferDropsTheOldest() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none, maxBufferedBytes: 1000)
        let b = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close(); b.close() }
        // 300 bytes each (a 1-byte tag): three fit. The oldest goes first, whatever its tag; one larger than the whole
        // buffer is not kept at all.
        for k in 0..<5 { b.send(to: a.endpoint, serverKey: nil, tag: tag(k == 0 ? "a" : "b"), frames: [Frame([UInt8](repeating: UInt8(k), count: 299))]) }
        b.send(to: a.endpoint, serverKey: nil, tag: tag("huge"), frames: [Frame([UInt8](repeating: 9, count: 1000))])
        #expect(await eventually { a.dropped + a.buffered(tag: tag("a")) + a.buffered(tag: tag("b")) == 6 })
        #expect(a.dropped == 3 && a.bufferedBytes == 900 && a.buffered(tag: tag("a")) == 0 && a.buffered(tag: tag("huge")) == 0)
        let got = try await onComputeThread { try a.receive(tag: tag("b"), count: 3, timeout: 0) { false } }
        #expect(got.map { $0[0].bytes[0] } == [2, 3, 4])
    }

    @Test func receiveTimesOutKeepingWhatArrived() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none), b = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close(); b.close() }
        // (timed on the waiting thread itself: the test's task resumes on the cooperative pool, late on a loaded machine)
        let (error, waited) = try await onComputeThread { () -> (PeerMeshError?, Double) in
            let started = monotonicNanos()
            do { _ = try a.receive(tag: tag("never"), count: 1, timeout: 0.2) { false } } catch { return (error as? PeerMeshError, Double(monotonicNanos() - started) / 1e9) }
            return (nil, Double(monotonicNanos() - started) / 1e9)
        }
        #expect(error == .timedOut(tag: tag("never"), arrived: 0, wanted: 1))
        #expect(waited >= 0.2 && waited < 3)
        b.send(to: a.endpoint, serverKey: nil, tag: tag("half"), frames: [])
        #expect(await eventually { a.buffered(tag: tag("half")) == 1 })
        await #expect(throws: PeerMeshError.timedOut(tag: tag("half"), arrived: 1, wanted: 2)) {
            try await onComputeThread { try a.receive(tag: tag("half"), count: 2, timeout: 0.05) { false } }
        }
        let one = try await onComputeThread { try a.receive(tag: tag("half"), count: 1, timeout: 0) { false } }
        #expect(one.count == 1 && one[0].isEmpty)
    }

    @Test func cancellationAndCloseEndAWaitAtOnce() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close() }
        let cancelAt = monotonicNanos() + 100_000_000
        let late = try await onComputeThread { () -> Double in
            do {
                _ = try a.receive(tag: tag("x"), count: 1, timeout: 5) { monotonicNanos() >= cancelAt }
            } catch PeerMeshError.cancelled {
                return Double(monotonicNanos() - cancelAt) / 1e9
            }
            return .infinity
        }
        #expect(late < 0.1, "cancelled \(late) s after it was asked")
        // close() wakes a waiting receive, which says why.
        let waiting = Task { try await onComputeThread { () -> (PeerMeshError?, UInt64) in
            do { _ = try a.receive(tag: tag("x"), count: 1, timeout: 30) { false } } catch { return (error as? PeerMeshError, monotonicNanos()) }
            return (nil, monotonicNanos())
        } }
        try await Task.sleep(nanoseconds: 50_000_000)
        let closedAt = monotonicNanos()
        a.close()
        let (closed, wokenAt) = try await waiting.value
        #expect(closed == .closed)
        #expect(wokenAt - min(wokenAt, closedAt) < 1_000_000_000, "woken \(Double(wokenAt &- closedAt) / 1e9) s after close")
        #expect(throws: PeerMeshError.closed) { try a.receive(tag: tag("x"), count: 1, timeout: 1) { false } }
    }

    @Test func discardDropsBufferedAndLaterMessagesOfThatTag() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none), b = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close(); b.close() }
        for t in ["step-1", "step-1", "step-2"] { b.send(to: a.endpoint, serverKey: nil, tag: tag(t), frames: [Frame([1])]) }
        #expect(await eventually { a.buffered(tag: tag("step-1")) == 2 && a.buffered(tag: tag("step-2")) == 1 })
        a.discard { $0 == tag("step-1") }
        #expect(a.buffered(tag: tag("step-1")) == 0 && a.buffered(tag: tag("step-2")) == 1 && a.bufferedBytes == 7)
        // Later ones are dropped on arrival: the marker after them comes over the same connection, so they came first.
        b.send(to: a.endpoint, serverKey: nil, tag: tag("step-1"), frames: [Frame([2])])
        b.send(to: a.endpoint, serverKey: nil, tag: tag("marker"), frames: [])
        _ = try await onComputeThread { try a.receive(tag: tag("marker"), count: 1, timeout: Self.arrival) { false } }
        #expect(a.buffered(tag: tag("step-1")) == 0)
        #expect(throws: PeerMeshError.timedOut(tag: tag("step-1"), arrived: 0, wanted: 1)) {
            try a.receive(tag: tag("step-1"), count: 1, timeout: 0) { false }
        }
        #expect(try a.receive(tag: tag("step-2"), count: 1, timeout: 0) { false }.count == 1)
    }

    @Test func malformedMessagesFromTheNetworkAreDropped() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .none)
        defer { a.close() }
        let endpoint = a.endpoint
        let got = try await onComputeThread {
            let raw = try ZmqLink.connect(endpoint)
            defer { raw.close() }
            raw.send(Envelope(frames: [Frame.empty, Frame([0]), Frame([1])]))                                       // empty tag
            raw.send(Envelope(frames: [Frame(tag("many")), Frame([0])] + (0..<5).map { Frame([UInt8($0)]) }))       // 5 frames
            raw.send(Envelope(frames: [Frame([UInt8](repeating: 65, count: PeerMesh.maxTag + 1)), Frame([0])]))      // tag too long
            raw.send(Envelope(frames: [Frame(tag("many"))]))                                                         // no flags
            raw.send(Envelope(frames: [Frame(tag("many")), Frame([0, 0]), Frame([1])]))                              // 2-byte flags
            raw.send(Envelope(frames: [Frame(tag("many")), Frame([2]), Frame([1])]))                                 // flag past the frames
            raw.send(Envelope(frames: [Frame(tag("ok")), Frame([0]), Frame([1]), Frame([2]), Frame([3]), Frame([4])]))
            // (the socket stays open until the last message is in: closing drops what is still queued)
            return try a.receive(tag: tag("ok"), count: 1, timeout: Self.arrival) { false }
        }
        #expect(got[0].map(\.bytes) == [[1], [2], [3], [4]])
        #expect(a.buffered(tag: tag("many")) == 0 && a.bufferedBytes == 0)
    }

    @Test func curveAdmitsExactlyTheKeysGiven() async throws {
        let ka = try Curve.newKeyPair(), kb = try Curve.newKeyPair(), kc = try Curve.newKeyPair()
        func mesh(_ k: (publicKey: String, secretKey: String), onRefusal: (@Sendable (String, String) -> Void)? = nil) throws -> PeerMesh {
            try PeerMesh(host: "127.0.0.1", security: .curve(publicKey: k.publicKey, secretKey: k.secretKey), onRefusal: onRefusal)
        }
        let refusals = Mutex<[String]>([])
        let a = try mesh(ka), b = try mesh(kb), c = try mesh(kc) { _, why in refusals.withLock { $0.append(why) } }
        defer { a.close(); b.close(); c.close() }
        a.admit(keys: [kb.publicKey])
        b.send(to: a.endpoint, serverKey: ka.publicKey, tag: tag("from-b"), frames: [Frame([1])])
        c.send(to: a.endpoint, serverKey: ka.publicKey, tag: tag("from-c"), frames: [Frame([2])])
        let fromB = try await onComputeThread { try a.receive(tag: tag("from-b"), count: 1, timeout: Self.arrival) { false } }
        #expect(fromB[0][0].bytes == [1])
        // c is refused (the handler said no at least once) and its message never arrives.
        #expect(await eventually { a.handshakes.refused >= 1 })
        await #expect(throws: PeerMeshError.self) {
            try await onComputeThread { try a.receive(tag: tag("from-c"), count: 1, timeout: 0.3) { false } }
        }
        #expect(await eventually { !refusals.withLock { $0 }.isEmpty })
        #expect(refusals.withLock { $0 }.first?.contains("refused this worker's key") == true)
        #expect(c.undeliverable == 0)

        // A new set replaces the old one: c gets in when it tries again (its message was kept), a new connection with
        // b's key does not.
        a.admit(keys: [kc.publicKey])
        let fromC = try await onComputeThread { try a.receive(tag: tag("from-c"), count: 1, timeout: Self.arrival) { false } }
        #expect(fromC[0][0].bytes == [2])
        let b2 = try mesh(kb)
        defer { b2.close() }
        let refusedBefore = a.handshakes.refused
        b2.send(to: a.endpoint, serverKey: ka.publicKey, tag: tag("from-b2"), frames: [])
        #expect(await eventually { a.handshakes.refused > refusedBefore })
        await #expect(throws: PeerMeshError.self) {
            try await onComputeThread { try a.receive(tag: tag("from-b2"), count: 1, timeout: 0.2) { false } }
        }
        // b's connection, admitted under the old set, stays.
        b.send(to: a.endpoint, serverKey: ka.publicKey, tag: tag("from-b"), frames: [Frame([3])])
        let again = try await onComputeThread { try a.receive(tag: tag("from-b"), count: 1, timeout: Self.arrival) { false } }
        #expect(again[0][0].bytes == [3])
    }

    @Test func theLocalTokenAdmitsItsHoldersOnly() async throws {
        let a = try PeerMesh(host: "127.0.0.1", security: .local(token: "token-of-this-user"))
        let b = try PeerMesh(host: "127.0.0.1", security: .local(token: "token-of-this-user"))
        let c = try PeerMesh(host: "127.0.0.1", security: .local(token: "token-of-another-user"))
        let mismatch = Mutex<[String]>([])
        let plain = try PeerMesh(host: "127.0.0.1", security: .none) { _, why in mismatch.withLock { $0.append(why) } }
        defer { a.close(); b.close(); c.close(); plain.close() }
        b.send(to: a.endpoint, serverKey: nil, tag: tag("b"), frames: [Frame([1])])
        c.send(to: a.endpoint, serverKey: nil, tag: tag("c"), frames: [Frame([2])])
        plain.send(to: a.endpoint, serverKey: nil, tag: tag("plain"), frames: [Frame([3])])
        let got = try await onComputeThread { try a.receive(tag: tag("b"), count: 1, timeout: Self.arrival) { false } }
        #expect(got[0][0].bytes == [1])
        #expect(await eventually { a.handshakes.refused >= 1 })
        await #expect(throws: PeerMeshError.self) {
            try await onComputeThread { try a.receive(tag: tag("c"), count: 1, timeout: 0.3) { false } }
        }
        // Without authentication, a peer that wants the token is not reached at all.
        #expect(await eventually { mismatch.withLock { $0 }.first?.contains("authenticates another way") == true })
        #expect(a.buffered(tag: tag("plain")) == 0)
    }

    @Test func theLocalAddressOfALoopbackCoordinatorIsLoopback() {
        #expect(PeerMesh.localAddress(reaching: "tcp://127.0.0.1:7700") == "127.0.0.1")
        #expect(PeerMesh.localAddress(reaching: "tcp://localhost:7700") == "127.0.0.1")
    }
}

@Suite struct WorkerShellPeerMeshTests {
    /// Starts a worker against a stand-in coordinator (a ROUTER with `server` security) and returns the features of
    /// its HELLO and its mesh, once the worker has stopped.
    func hello(server: LinkSecurity?, client: LinkSecurity?, peerHost: String? = nil) async throws -> (features: String, mesh: PeerMesh?) {
        try await onComputeThread {
            var o = LinkOptions()
            o.security = server
            let router = try ZmqLink.bind("tcp://127.0.0.1:0", options: o)
            defer { router.close() }
            var c = LinkOptions()
            c.security = client
            var options = WorkerShell.Options(slots: 1, name: "peer-test")
            options.peerHost = peerHost
            let shell = WorkerShell(.zmqConnect(router.endpoint, c), options: options)
            defer { shell.stop() }
            let e = try #require(try receive(router))
            guard case .hello(let h) = try Codec.decode(e.frames) else { throw PeerMeshError.closed }
            return (h.features, shell.mesh)
        }
    }

    @Test func aCurveWorkerOffersItsMeshAndKeyInHello() async throws {
        let coordinator = try Curve.newKeyPair(), worker = try Curve.newKeyPair()
        let domain = try ZAPService.shared.register(.peers([worker.publicKey])) { _ in }
        defer { ZAPService.shared.unregister(domain) }
        let (features, mesh) = try await hello(server: .server(secretKey: coordinator.secretKey, domain: domain),
                                               client: .client(serverKey: coordinator.publicKey, publicKey: worker.publicKey, secretKey: worker.secretKey))
        let m = try #require(mesh)
        #expect(m.endpoint.hasPrefix("tcp://127.0.0.1:"))
        let fields = features.split(separator: ",").map(String.init)
        #expect(fields.contains("peer=" + m.endpoint) && fields.contains("peer-key=" + worker.publicKey))
        // Stopping the worker closed it.
        #expect(throws: PeerMeshError.closed) { try m.receive(tag: [1], count: 1, timeout: 0) { false } }
    }

    @Test func aWorkerWithoutKeysOffersItsMeshWithoutAKey() async throws {
        let (features, mesh) = try await hello(server: nil, client: nil)
        let m = try #require(mesh)
        #expect(features.split(separator: ",").contains { $0 == "peer=" + m.endpoint })
        #expect(!features.contains("peer-key="))
    }

    @Test func aWorkerWhoseAddressCannotBeBoundRunsWithoutAMesh() async throws {
        // (192.0.2.1 is a documentation address: no interface of this host has it)
        let (features, mesh) = try await hello(server: nil, client: nil, peerHost: "192.0.2.1")
        #expect(mesh == nil)
        #expect(!features.contains("peer="))
    }
}

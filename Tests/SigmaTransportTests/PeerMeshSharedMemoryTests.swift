import Foundation
import SigmaModel
import SigmaProtocol
@testable import SigmaTransport
import Testing

private func tag(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Collective messages between workers of one machine (docs/protocol.md §3.4, §6.1): a large frame sent with
/// `sharedMemory` goes through a segment the sender owns and arrives intact; segments are reused once the receiver
/// lets go; a message dropped before it was sent gives its segment back; a reference the receiver cannot read fails
/// its receive with the reason (never a crash, never a hang until the timeout).
@Suite struct PeerMeshSharedMemoryTests {
    // (the same payloads and scratch directories as the carrier's own tests)
    func payload(_ n: Int, seed: UInt8) -> Frame { SharedMemoryTests().payload(n, seed: seed) }
    func scratch() throws -> String { try SharedMemoryTests().scratch() }

    /// A mesh on loopback without authentication, its segments in `dir` (nil: shared memory off).
    func mesh(_ dir: String?) throws -> PeerMesh { try PeerMesh(host: "127.0.0.1", security: .none, sharedMemory: dir) }

    func segments(_ dir: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix("sigma-shm-") }.count
    }

    @Test func largeFramesGoThroughSharedMemoryAndItsSegmentsAreReused() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try mesh(dir)
        let b = try mesh(dir)
        defer { a.close(); b.close() }
        for round in 0..<6 {
            let big = payload(3 << 20, seed: UInt8(round))
            b.send(to: a.endpoint, serverKey: nil, tag: tag("r\(round)"), frames: [Frame([UInt8(round)]), big], sharedMemory: true)
            let got = try await onComputeThread { try a.receive(tag: tag("r\(round)"), count: 1, timeout: PeerMeshTests.arrival) { false } }
            #expect(got.count == 1 && got[0].count == 2 && got[0][0].bytes == [UInt8(round)])
            #expect(got[0][1] == big, "round \(round): the payload changed on its way")
        }
        // Every large frame went through shared memory, and one segment served them all (each was let go before the
        // next was sent).
        #expect(b.sharedMemoryCounts == (6, 0))
        #expect(segments(dir) == 1)
        // Without `sharedMemory` (a peer on another machine) the same frame goes through the socket.
        b.send(to: a.endpoint, serverKey: nil, tag: tag("socket"), frames: [payload(3 << 20, seed: 9)])
        let got = try await onComputeThread { try a.receive(tag: tag("socket"), count: 1, timeout: PeerMeshTests.arrival) { false } }
        #expect(got[0][0] == payload(3 << 20, seed: 9))
        #expect(b.sharedMemoryCounts == (6, 0))
    }

    /// A frame its producer made in a pool segment (`Frame(shareable:)`) goes to two peers by reference.
    @Test func aPoolFrameGoesToTwoPeersWithoutACopy() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = SharedMemoryPool(directory: dir, maxSegments: 2)
        let meshes = try (0..<3).map { _ in try mesh(dir) }
        defer { meshes.forEach { $0.close() } }
        let frame = Frame(shareable: 2 << 20, in: pool) { b in for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i &* 7) } }
        #expect(frame.retainedStorage.shared != nil)
        for to in meshes.dropFirst() { meshes[0].send(to: to.endpoint, serverKey: nil, tag: tag("w"), frames: [frame], sharedMemory: true) }
        for to in meshes.dropFirst() {
            let got = try await onComputeThread { try to.receive(tag: tag("w"), count: 1, timeout: PeerMeshTests.arrival) { false } }
            #expect(got[0][0] == frame)
        }
        #expect(segments(dir) == 1, "the pool frame was copied into segments of the links")
    }

    /// Messages discarded before their peer took them (a stale step's) give their segments back: the next ones
    /// still go through shared memory, not the socket.
    @Test func discardedMessagesGiveTheirSegmentsBack() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try mesh(dir)
        defer { a.close() }
        // (nothing listens there: the messages wait for a handshake that never comes)
        let nobody = "tcp://127.0.0.1:\(try #require(freeLoopbackPort()))"
        for k in 0..<5 { a.send(to: nobody, serverKey: nil, tag: tag("old"), frames: [payload(2 << 20, seed: UInt8(k))], sharedMemory: true) }
        #expect(a.sharedMemoryCounts == (4, 1), "a link has 4 segments: the fifth frame goes through the socket")
        a.discard { $0 == tag("old") }
        // (the discard is applied on the mesh's thread)
        #expect(await eventually {
            a.send(to: nobody, serverKey: nil, tag: tag("probe"), frames: [payload(2 << 20, seed: 0)], sharedMemory: true)
            a.discard { $0 == tag("probe") }
            return a.sharedMemoryCounts.carried > 4
        }, "the discarded messages kept their segments busy")
        #expect(segments(dir) == 4)
    }

    @Test func aReferenceTheReceiverCannotReadFailsItsReceiveNamingWhy() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A receiver with shared memory off.
        let off = try mesh(nil)
        let on = try mesh(dir)
        defer { off.close(); on.close() }
        on.send(to: off.endpoint, serverKey: nil, tag: tag("x"), frames: [Frame([1]), payload(2 << 20, seed: 1)], sharedMemory: true)
        await #expect(throws: PeerMeshError.unreadable("a peer sent a payload through shared memory, but shared memory is off on this worker")) {
            try await onComputeThread { try off.receive(tag: tag("x"), count: 1, timeout: PeerMeshTests.arrival) { false } }
        }
        #expect(off.buffered(tag: tag("x")) == 0)
        // A forged reference: refused with the carrier's reason.
        let endpoint = on.endpoint
        let error = try await onComputeThread { () -> String in
            let raw = try ZmqLink.connect(endpoint)
            defer { raw.close() }
            var w = ByteWriter(capacity: 64)
            w.u32(0x314D_4853); w.string("sigma-shm-1-1"); w.u64(1); w.u64(16); w.u64(1)
            raw.send(Envelope(frames: [Frame(tag("forged")), Frame([1]), Frame(w.bytes)]))
            do {
                _ = try on.receive(tag: tag("forged"), count: 1, timeout: PeerMeshTests.arrival) { false }
                return "received"
            } catch PeerMeshError.unreadable(let why) { return why }
        }
        #expect(error.hasPrefix("a peer's payload in shared memory cannot be read: segment sigma-shm-1-1: cannot open"), "\(error)")
    }
}

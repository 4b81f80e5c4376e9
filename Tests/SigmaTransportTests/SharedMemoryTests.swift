import Foundation
import SigmaModel
import SigmaProtocol
@testable import SigmaTransport
import Testing

/// Same-host shared memory (docs/protocol.md §6): payloads arrive intact, segments are reused once released,
/// the sender falls back to the socket when every segment is busy, and a bad reference is refused with an
/// error naming the problem — never a crash, never a read outside a segment.
@Suite struct SharedMemoryTests {
    func payload(_ n: Int, seed: UInt8) -> Frame {
        Frame(count: n) { b in for i in 0..<n { b[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)) } }
    }

    /// A directory of this test's own on /dev/shm (other tests, and the process's pool, make segments too).
    func scratch() throws -> String {
        let dir = "/dev/shm/sigma-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        return dir
    }

    func segments(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix("sigma-shm-\(getpid())-") }
    }

    @Test func thisHostOffersSharedMemory() throws {
        let feature = try #require(SharedMemory.feature, "/dev/shm is not usable here")
        #expect(SharedMemory.offered(in: "map-reduce,lz4,\(feature)"))
        #expect(!SharedMemory.offered(in: "map-reduce,lz4,shm=another-host"))
        #expect(!SharedMemory.offered(in: "map-reduce,lz4"))
    }

    /// A frame its producer wrote into a pool segment goes to several peers by reference (no copy): each reader
    /// sees the bytes, the segment stays busy until every reader and the producer are done, is then reused (an
    /// old reference to it is refused), and a full pool means a normal allocation.
    @Test func poolFramesGoByReferenceToSeveralReadersAndAreReusedWhenAllAreDone() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = SharedMemoryPool(directory: dir, maxSegments: 2)
        func make(_ seed: UInt8) -> Frame {
            Frame(shareable: 2 << 20, in: pool) { b in for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)) } }
        }
        var frame: Frame? = make(1)
        #expect(frame!.retainedStorage.shared != nil, "the pool did not provide the frame")
        let toA = SharedMemoryCarrier(directory: dir), toB = SharedMemoryCarrier(directory: dir)
        let atA = SharedMemoryCarrier(directory: dir), atB = SharedMemoryCarrier(directory: dir)
        let refA = try #require(toA.carry(frame!)), refB = try #require(toB.carry(frame!))
        #expect(toA.counts.byReference == 1 && toB.counts.byReference == 1)
        var readA: Frame? = try atA.resolve(refA, limit: 1 << 30), readB: Frame? = try atB.resolve(refB, limit: 1 << 30)
        #expect(readA == payload(2 << 20, seed: 1) && readB == payload(2 << 20, seed: 1))
        // The producer lets go; two readers still hold it: the next frame gets the other segment.
        frame = nil
        let second = make(2)
        #expect(pool.counts == (2, 2))
        readA = nil
        #expect(pool.counts.inUse == 2, "reused while a reader still held it")
        readB = nil
        #expect(pool.counts.inUse == 1)
        // Free again: reused for the next frame; the old reference now names a past generation.
        let third = make(3)
        #expect(pool.counts == (2, 2))
        #expect(throws: SharedMemoryError.self) { _ = try atA.resolve(refA, limit: 1 << 30) }
        // Both segments in use: a normal allocation, carried by copy as before.
        let fourth = make(4)
        #expect(fourth.retainedStorage.shared == nil)
        #expect(second == payload(2 << 20, seed: 2) && third == payload(2 << 20, seed: 3) && fourth == payload(2 << 20, seed: 4))
    }

    /// The pool keeps to its byte budget: a frame that would go over it while the others are held is allocated
    /// normally, and a free segment too small for the next frame makes room for it. Frames from 64 KiB — a collective
    /// member's slices at many members — are pooled (in 64 KiB steps below 1 MiB), smaller ones are not.
    @Test func thePoolKeepsToItsByteBudget() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = SharedMemoryPool(directory: dir, maxBytes: 3 << 20)
        #expect(Frame(shareable: SharedMemory.meshThreshold - 1, in: pool) { _ in }.retainedStorage.shared == nil)
        var small: Frame? = Frame(shareable: 100_000, in: pool) { _ in }
        #expect(small!.retainedStorage.shared != nil, "a 100 KB frame was not pooled")
        let big = Frame(shareable: 2 << 20, in: pool) { _ in }
        #expect(big.retainedStorage.shared != nil)
        #expect(pool.counts == (2, 2))
        // 128 KiB + 2 MiB held: 1 MiB more would pass 3 MiB.
        #expect(Frame(shareable: 1 << 20, in: pool) { _ in }.retainedStorage.shared == nil, "over the pool's byte budget")
        small = nil
        let third = Frame(shareable: 1 << 20, in: pool) { b in b.initializeMemory(as: UInt8.self, repeating: 5) }
        #expect(third.retainedStorage.shared != nil, "the free 128 KiB segment did not make room")
        #expect(pool.counts == (2, 2))
        #expect(third == Frame([UInt8](repeating: 5, count: 1 << 20)))
    }

    /// A peer that dies holding a reference must not keep a pool segment busy for good: when its link (carrier)
    /// ends, the link's reader bit is cleared and the segment can be reused.
    @Test func aDeadReadersLinkGivesItsPoolSegmentsBack() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = SharedMemoryPool(directory: dir, maxSegments: 1)
        var frame: Frame? = Frame(shareable: 2 << 20, in: pool) { $0.initializeMemory(as: UInt8.self, repeating: 7) }
        var link: SharedMemoryCarrier? = SharedMemoryCarrier(directory: dir)
        let peer = SharedMemoryCarrier(directory: dir)
        let held = try peer.resolve(try #require(link!.carry(frame!)), limit: 1 << 30)   // the peer never lets go
        frame = nil
        #expect(Frame(shareable: 2 << 20, in: pool) { _ in }.retainedStorage.shared == nil, "reused while a reader held it")
        let bit = link!.readerBit
        link = nil   // the peer is gone: its link ends
        #expect(Frame(shareable: 2 << 20, in: pool) { _ in }.retainedStorage.shared != nil, "the dead reader's segment was not given back")
        // Its bit is retired: were the peer alive after all, its late release must not clear another link's bit.
        let next = SharedMemoryCarrier(directory: dir)
        #expect(next.readerBit != bit && next.readerBit != 0)
        withExtendedLifetime(held) {}
    }

    @Test func payloadsRoundTripThroughTheCodecAndSegmentsAreReused() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sender = SharedMemoryCarrier(maxSegments: 2, directory: dir), receiver = SharedMemoryCarrier(directory: dir)
        let big = payload(3 << 20, seed: 7)
        let r = ShardResult(job: 4, shard: 2, attempt: 1, status: .ok, payload: big)
        let frames = Codec.encode(.result(r), carrier: sender)
        #expect(frames.count == 2 && frames[1].count < 100, "the payload went through the socket")
        #expect(frames[0].bytes[3] & Codec.flagShared != 0)
        do {
            guard case .result(let got) = try Codec.decode(frames, carrier: receiver) else { Issue.record("not a result"); return }
            #expect(got == r, "payload changed on the way")
            // Held by the receiver: a second payload needs a second segment; a third falls back to the socket.
            let second = Codec.encode(.result(ShardResult(job: 4, shard: 3, attempt: 1, status: .ok, payload: payload(2 << 20, seed: 9))), carrier: sender)
            let held2 = try Codec.decode(second, carrier: receiver)
            #expect(segments(dir).count >= 2)
            let third = Codec.encode(.result(ShardResult(job: 4, shard: 4, attempt: 1, status: .ok, payload: payload(2 << 20, seed: 1))), carrier: sender)
            #expect(third[1].count == 2 << 20 && third[0].bytes[3] & Codec.flagShared == 0, "all segments busy: the bytes must go through the socket")
            #expect(sender.counts.carried == 2 && sender.counts.fellBack == 1)
            _ = held2
        }
        // Released (the frames above are gone): a segment is free again and reused, no new segment.
        let before = Set(segments(dir))
        let fourth = Codec.encode(.result(ShardResult(job: 4, shard: 5, attempt: 1, status: .ok, payload: payload(3 << 20, seed: 3))), carrier: sender)
        #expect(fourth[0].bytes[3] & Codec.flagShared != 0)
        #expect(Set(segments(dir)) == before, "a released segment was not reused")
        guard case .result(let again) = try Codec.decode(fourth, carrier: receiver) else { Issue.record("not a result"); return }
        #expect(again.payload == payload(3 << 20, seed: 3))
        // Small payloads stay in the message.
        let small = Codec.encode(.result(ShardResult(job: 4, shard: 6, attempt: 1, status: .ok, payload: payload(5000, seed: 1))), carrier: sender)
        #expect(small[1].count == 5000)
    }

    @Test func segmentsAreUnlinkedWithTheirCarrier() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var sender: SharedMemoryCarrier? = SharedMemoryCarrier(directory: dir)
        _ = sender!.carry(payload(2 << 20, seed: 1))
        #expect(segments(dir).count == 1)
        sender = nil
        #expect(segments(dir).isEmpty, "segments outlived their carrier")
    }

    @Test func badReferencesAreRefusedNamingTheProblem() throws {
        let sender = SharedMemoryCarrier(), receiver = SharedMemoryCarrier()
        let good = try #require(sender.carry(payload(2 << 20, seed: 5)))
        let (name, generation) = try good.read { r -> (String, UInt64) in
            _ = try r.u32("m")
            return (try r.string("n"), try r.u64("g"))
        }
        func reference(_ n: String, _ g: UInt64, _ size: UInt64, reader: UInt64 = 1) -> Frame {
            var w = ByteWriter(capacity: 64)
            w.u32(SharedMemory.referenceMagic); w.string(n); w.u64(g); w.u64(size); w.u64(reader)
            return Frame(w.bytes)
        }
        func refusal(_ f: Frame, limit: Int = 1 << 30) -> String {
            do { _ = try receiver.resolve(f, limit: limit); return "accepted" } catch { return "\(error)" }
        }
        #expect(refusal(reference("../../etc/passwd", 1, 10)).contains("bad segment name"))
        #expect(refusal(reference("sigma-shm-1/x", 1, 10)).contains("bad segment name"))
        #expect(refusal(reference("sigma-shm-999999999-1", 1, 10)).contains("cannot open"))
        #expect(refusal(reference(name, generation + 1, 2 << 20)).contains("generation"))
        #expect(refusal(reference(name, generation, 64 << 20)).contains("do not fit"))
        #expect(refusal(reference(name, generation, 2 << 20), limit: 1 << 20).contains("exceeds the limit"))
        #expect(refusal(reference(name, generation, 2 << 20, reader: 0)).contains("not a single bit"))
        #expect(refusal(reference(name, generation, 2 << 20, reader: 3)).contains("not a single bit"))
        #expect(refusal(reference(name, generation, 2 << 20, reader: 2)).contains("generation"), "a reader bit the segment does not have")
        #expect(refusal(Frame([1, 2, 3])).contains("truncated") || refusal(Frame([1, 2, 3])).contains("magic"))
        // Through the codec: a shared-memory payload on a link that did not agree to it is a decode error.
        var header = Codec.encode(.result(ShardResult(job: 1, shard: 0, attempt: 1, status: .ok)))[0].bytes
        header[3] |= Codec.flagShared
        #expect(throws: DecodeError.self) { try Codec.decode([Frame(header), good]) }
        // The good reference still resolves, intact.
        #expect(try receiver.resolve(good, limit: 1 << 30) == payload(2 << 20, seed: 5))
    }
}

/// A full /dev/shm (a container's default is 64 MiB) must mean "send through the socket", never a SIGBUS from
/// writing into a segment the filesystem cannot back.
@Suite struct SharedMemoryFullTests {
    @Test func aFullSharedMemoryFilesystemFallsBackToTheSocket() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-tinyshm-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func run(_ tool: String, _ args: [String]) throws -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tool)
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            return p.terminationStatus
        }
        guard getuid() == 0, (try? run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", dir])) == 0 else {
            print("SharedMemoryFullTests: cannot mount a 2 MiB tmpfs here (needs root): the full-/dev/shm fallback was not exercised")
            return
        }
        defer { _ = try? run("/bin/umount", [dir]) }
        let sender = SharedMemoryCarrier(directory: dir), receiver = SharedMemoryCarrier(directory: dir)
        let small = Frame(count: 1 << 20) { b in for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i) } }
        let ref = try #require(sender.carry(small), "1 MiB fits in a 2 MiB tmpfs")
        #expect(try receiver.resolve(ref, limit: 1 << 30) == small)
        let big = Frame(count: 3 << 20) { b in for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i &* 7) } }
        #expect(sender.carry(big) == nil, "a 3 MiB payload cannot have a segment in a 2 MiB tmpfs")
        #expect(sender.counts.fellBack == 1)
    }
}

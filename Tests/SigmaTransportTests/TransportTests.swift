import Foundation
import SigmaModel
import SigmaTransport
import Synchronization
import Testing

/// Runs `body` on a fresh OS thread (sockets are created and used on one thread) and waits for it.
func onOwnThread(_ body: @escaping @Sendable () throws -> Void) throws {
    let failure = Mutex<String?>(nil)
    let t = OSThread(name: "test") {
        do { try body() } catch { failure.withLock { $0 = "\(error)" } }
    }
    t.join()
    if let f = failure.withLock({ $0 }) { Issue.record(Comment(rawValue: f)) }
}

func receive(_ link: MessageLink, timeoutMs: Int32 = 5000) throws -> Envelope? {
    let deadline = monotonicNanos() + UInt64(timeoutMs) * 1_000_000
    while monotonicNanos() < deadline {
        if let e = try link.receive() { return e }
        try link.wait(timeoutMs: 50)
    }
    return nil
}

@Suite struct TransportTests {
    /// Router and dealer over TCP loopback: routing ids, multipart, a 4 MiB zero-copy frame intact both ways.
    @Test func zmqRouterDealerMovesLargeFramesIntact() throws {
        try onOwnThread {
            let router = try ZmqLink.bind("tcp://127.0.0.1:0")
            defer { router.close() }
            #expect(router.endpoint.hasPrefix("tcp://127.0.0.1:") && !router.endpoint.hasSuffix(":0"))
            let dealer = try ZmqLink.connect(router.endpoint)
            defer { dealer.close() }
            let big = Frame(count: 4 << 20) { buf in for i in 0..<buf.count { buf[i] = UInt8(truncatingIfNeeded: i &* 31) } }
            #expect(dealer.send(Envelope(frames: [Frame([1, 2, 3]), big])))
            let got = try #require(try receive(router))
            #expect(got.frames.count == 2)
            #expect(got.frames[0].bytes == [1, 2, 3])
            #expect(got.frames[1] == big)
            let peer = try #require(got.peer)
            #expect(router.send(Envelope(peer: peer, frames: [big, Frame([9])])))
            let back = try #require(try receive(dealer))
            #expect(back.frames[0] == big && back.frames[1].bytes == [9])
            // Unknown peer: the router drops instead of blocking.
            #expect(!router.send(Envelope(peer: PeerID([0, 1, 2, 3, 4]), frames: [Frame([1])])))
        }
    }

    @Test func bindFailureIsAClearError() throws {
        try onOwnThread {
            let a = try ZmqLink.bind("tcp://127.0.0.1:0")
            defer { a.close() }
            #expect { _ = try ZmqLink.bind(a.endpoint) } throws: { "\($0)".contains("cannot bind") }
            #expect(throws: TransportError.self) { _ = try ZmqLink.bind("nonsense://x") }
        }
    }

    /// The ports tests and benches name before a process binds them lie below the kernel's ephemeral range (where a
    /// worker's peer port, bound to port 0, or any outgoing socket could be handed them meanwhile) and bind.
    @Test func freeLoopbackPortsLieBelowTheEphemeralRangeAndBind() throws {
        let text = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        let floor = try #require(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) })
        try onOwnThread {
            for _ in 0..<20 {
                let port = try #require(freeLoopbackPort())
                #expect(port >= 10_000 && port < floor, "port \(port), ephemeral range from \(floor)")
                let link = try ZmqLink.bind("tcp://127.0.0.1:\(port)")
                #expect(link.endpoint == "tcp://127.0.0.1:\(port)")
                link.close()
            }
        }
    }

    @Test func inMemoryTwinBehavesLikeRouterDealer() throws {
        let net = InMemoryNetwork()
        try onOwnThread {
            let r = try net.bind("coord")
            let d1 = net.connect("coord"), d2 = net.connect("coord")
            #expect(d1.send(Envelope(frames: [Frame([1])])))
            #expect(d2.send(Envelope(frames: [Frame([2])])))
            let a = try #require(try receive(r)), b = try #require(try receive(r))
            #expect(a.frames[0].bytes == [1] && b.frames[0].bytes == [2] && a.peer != b.peer)
            #expect(r.send(Envelope(peer: b.peer, frames: [Frame([7])])))
            #expect(try receive(d2)?.frames[0].bytes == [7])
            #expect(try d1.receive() == nil)
            #expect(throws: TransportError.self) { _ = try net.bind("coord") }
        }
    }

    @Test func lz4RoundTripsAndRejectsCorruptInput() throws {
        let c = LZ4Compressor()
        let sparse = Frame(count: 1 << 16) { b in for i in 0..<b.count { b[i] = i % 8 == 0 ? UInt8(i & 0xFF) : 0 } }
        let z = try #require(c.compress(sparse))
        #expect(z.count < sparse.count / 2)
        #expect(try c.decompress(z, limit: 1 << 20) == sparse)
        // Random bytes do not compress: sent raw.
        var rng = SystemRandomNumberGenerator()
        let noise = Frame((0..<65536).map { _ in UInt8.random(in: 0...255, using: &rng) })
        #expect(c.compress(noise) == nil)
        // Corrupt, truncated, or too-large declared sizes are errors, not crashes.
        #expect(throws: LZ4Compressor.Failure.self) { _ = try c.decompress(z, limit: 1000) }
        #expect(throws: LZ4Compressor.Failure.self) { _ = try c.decompress(Frame(Array(z.bytes.prefix(z.count / 2))), limit: 1 << 20) }
        #expect(throws: LZ4Compressor.Failure.self) { _ = try c.decompress(Frame([1, 2]), limit: 1 << 20) }
        for _ in 0..<500 {
            var b = z.bytes
            for _ in 0..<3 { b[Int.random(in: 4..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? c.decompress(Frame(b), limit: 1 << 20)
        }
    }

    @Test func bridgedLinkServesAsyncCallers() async throws {
        let net = InMemoryNetwork()
        let routerBox = Mutex<MessageLink?>(nil)
        try onOwnThread { routerBox.withLock { $0 = try? net.bind("echo") } }
        let router = try #require(routerBox.withLock { $0 })
        let client = BridgedLink(.memoryConnect(net, "echo"))
        defer { client.close() }
        for i in 0..<100 { client.send(Envelope(frames: [Frame([UInt8(i)])])) }
        var seen = 0
        while seen < 100, let e = try receive(router) {
            #expect(e.frames[0].bytes == [UInt8(seen)])
            router.send(Envelope(peer: e.peer, frames: e.frames))
            seen += 1
        }
        var echoed = 0
        for await e in client.inbound {
            #expect(e.frames[0].bytes == [UInt8(echoed)])
            echoed += 1
            if echoed == 100 { break }
        }
        #expect(echoed == 100)
    }
}

@Suite struct ProcessLoadTests {
    /// What heartbeats report: this process's CPU and memory, and the host's available memory — read from /proc,
    /// plausible against the host's physical memory.
    @Test func loadAndAvailableMemoryAreReadFromProc() throws {
        var s = ProcessLoadSampler()
        _ = s.sample()
        var x = 0.0
        for i in 0..<2_000_000 { x += Double(i).squareRoot() }   // some CPU between samples
        let (cpu, rss) = s.sample()
        #expect(x > 0 && cpu >= 0 && rss > 1 << 20)
        let physical = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let available = try #require(ProcessLoadSampler.availableMemory(), "no MemAvailable in /proc/meminfo")
        #expect(available > 16 << 20 && available <= physical, "available \(available) of \(physical) bytes")
    }
}

import Foundation
import Logging
import SigmaClient
import SigmaCoordinator
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import SigmaWorker
import Testing

/// The same cluster test body, run over the in-process twin and over TCP loopback.
enum Wiring: String, CaseIterable, Sendable {
    case inMemory, tcp
}

struct TestCluster {
    let coordinator: CoordinatorShell
    let workers: [WorkerShell]
    let client: SigmaClient

    init(_ wiring: Wiring, workers n: Int, options: CoordinatorShell.Options = .init(), worker: WorkerShell.Options = .init(slots: 1)) throws {
        func named(_ name: String) -> WorkerShell.Options {
            var o = worker
            o.name = name
            return o
        }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        switch wiring {
        case .inMemory:
            let net = InMemoryNetwork()
            let name = "coord-\(UUID().uuidString)"
            coordinator = try CoordinatorShell(.memoryBind(net, name), options: options, logger: logger)
            workers = (0..<n).map { i in WorkerShell(.memoryConnect(net, name), options: named("m\(i)"), logger: logger) }
            client = try SigmaClient(factory: .memoryConnect(net, name), endpoint: name)
        case .tcp:
            let c = try CoordinatorShell(.bind("tcp://127.0.0.1:0"), options: options, logger: logger)
            coordinator = c
            workers = (0..<n).map { i in WorkerShell(.connect(c.endpoint), options: named("t\(i)"), logger: logger) }
            client = try SigmaClient(endpoint: c.endpoint)
        }
    }

    func waitForWorkers(_ n: Int) async throws {
        for _ in 0..<500 {
            if try await client.status().workers.filter({ $0.state != "dead" }).count >= n { return }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        Issue.record("workers did not register")
    }

    func stop() {
        client.close()
        for w in workers { w.stop() }
        coordinator.stop()
    }
}

@Suite(.serialized) struct ClusterTests {
    @Test(arguments: Wiring.allCases)
    func distributedEqualsSingleProcess(_ wiring: Wiring) async throws {
        let cluster = try TestCluster(wiring, workers: 2)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(2)
        let spec = MapReduceSpec(name: "eq", input: .normal(count: 300_000, seed: 11, mean: 2, std: 3), map: .abs,
                                 reduce: [.sum, .mean, .min, .max, .count, .histogram(bins: 12, low: 0, high: 12)],
                                 sharding: .count(24))
        var progressSeen = 0
        var outcome: JobOutcome? = nil
        for try await e in cluster.client.run(.mapReduce(spec)) {
            switch e {
            case .accepted(let a): #expect(a.shards == 24)
            case .progress: progressSeen += 1
            case .finished(let o): outcome = o
            }
        }
        let o = try #require(outcome)
        #expect(o.state == .completed && o.shards == 24)
        #expect(progressSeen >= 1)
        let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
        let parts = try spec.sharding.ranges(rows: 300_000).map { try MapReduceKernel.run(spec, start: $0.start, count: $0.count) }
        let reference = MapReduceResult.reduce(spec, partials: parts)
        #expect(r == reference)   // bitwise: combined in shard order whatever worker ran what
        let single = try MapReduceKernel.runLocal(spec)
        #expect(abs(r.total.total - single.total) <= 1e-12 * abs(single.total))
        #expect(r.total.histogram == single.histogram && r.total.min == single.min && r.total.max == single.max)
        // Both workers took part, and FETCH returns the same outcome later.
        let status = try await cluster.client.status()
        #expect(status.workers.filter { $0.shardsDone > 0 }.count == 2)
        let fetched = try await cluster.client.fetch(job: o.job)
        #expect(fetched.payload == o.payload)
    }

    @Test(arguments: Wiring.allCases)
    func badSubmissionsGetClearErrors(_ wiring: Wiring) async throws {
        let cluster = try TestCluster(wiring, workers: 1)
        defer { cluster.stop() }
        let missing = MapReduceSpec(input: .npy(path: "/definitely/not/here.npy"), reduce: [.sum])
        await #expect {
            _ = try await cluster.client.submit(.mapReduce(missing))
        } throws: { e in
            guard case ClientError.refused(let r) = e else { return false }
            return r.code == 422 && r.message.contains("/definitely/not/here.npy")
        }
        await #expect {
            _ = try await cluster.client.fetch(job: 4242)
        } throws: { e in
            guard case ClientError.refused(let r) = e else { return false }
            return r.code == 404 && r.message.contains("4242")
        }
    }

    /// ≥ 100,000 random frames sent over TCP never crash the coordinator; it keeps serving afterwards.
    /// The core plans collective segment starts within the payload limit the link enforces (one value: setting the
    /// shell's limits sets the core's).
    @Test func theCoresPayloadLimitIsTheLinks() {
        var o = CoordinatorShell.Options()
        #expect(o.core.maxPayload == ProtocolLimits.standard.maxPayload)
        o.limits.maxPayload = 123_456
        #expect(o.core.maxPayload == 123_456)
    }

    @Test func randomFramesOverTCPNeverCrashTheCoordinator() async throws {
        let cluster = try TestCluster(.tcp, workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let endpoint = cluster.coordinator.endpoint
        try onOwnThread {
            let link = try ZmqLink.connect(endpoint)
            defer { link.close() }
            var rng = SystemRandomNumberGenerator()
            var replies = 0
            for i in 0..<100_000 {
                var b = (0..<Int.random(in: 0...48, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if i % 2 == 0, b.count >= 4 { b[0] = 0x53; b[1] = UInt8.random(in: 0...2, using: &rng); b[2] = UInt8.random(in: 0...0x18, using: &rng) }
                var frames = [Frame(b)]
                if i % 7 == 0 { frames.append(Frame((0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })) }
                if i % 1000 == 999 { frames += [Frame([1]), Frame([2]), Frame([3])] }
                _ = link.send(Envelope(frames: frames))
                while try link.receive() != nil { replies += 1 }
            }
            let deadline = monotonicNanos() + 5_000_000_000
            while replies < 90_000 && monotonicNanos() < deadline {
                try link.wait(timeoutMs: 50)
                while try link.receive() != nil { replies += 1 }
            }
            #expect(replies >= 90_000)   // nearly every bad frame earns an ERROR reply
        }
        // (the count is published at the coordinator's next tick: a busy machine may delay it)
        for _ in 0..<100 where cluster.coordinator.rejectedMessages < 90_000 { try await Task.sleep(nanoseconds: 20_000_000) }
        #expect(cluster.coordinator.rejectedMessages >= 90_000)
        let spec = MapReduceSpec(input: .range(count: 1000, start: 1, step: 1), reduce: [.sum], sharding: .count(4))
        let o = try await cluster.client.runToEnd(.mapReduce(spec))
        #expect(o.state == .completed)
        let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
        #expect(r.total.total == 500_500)
    }
}

@Suite(.serialized) struct HandshakeTests {
    /// §2: an incompatible peer is refused with both versions in the error, over a real socket.
    @Test func incompatibleWorkerIsRefusedNamingBothVersions() async throws {
        let cluster = try TestCluster(.tcp, workers: 0)
        defer { cluster.stop() }
        let endpoint = cluster.coordinator.endpoint
        try onOwnThread {
            let link = try ZmqLink.connect(endpoint)
            defer { link.close() }
            var hello = Codec.encode(.hello(Hello(cores: 2, slots: 1, memory: 1, host: "old", name: "n", instance: "x", features: "")))[0].bytes
            hello[1] = 1   // a peer of the previous version
            link.send(Envelope(frames: [Frame(hello)]))
            let reply = try #require(try receive(link))
            guard case .error(let e) = try Codec.decode(reply.frames) else { Issue.record("expected ERROR"); return }
            #expect(e.code == 505)
            #expect(e.message.contains("version 1 is not supported") && e.message.contains("speaks version \(sigmaProtocolVersion)"))
        }
        #expect(try await cluster.client.status().workers.isEmpty)
    }

    /// Tasks run on the client's link thread (withLinkExecutor) get the same results.
    @Test(arguments: Wiring.allCases)
    func linkExecutorRunsJobs(_ wiring: Wiring) async throws {
        let cluster = try TestCluster(wiring, workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let client = cluster.client
        let sums = try await client.withLinkExecutor { () async throws -> [Double] in
            var out: [Double] = []
            for n in 1...20 {
                let spec = MapReduceSpec(input: .range(count: UInt64(n), start: 1, step: 1), reduce: [.sum], sharding: .count(1))
                let o = try await client.runToEnd(.mapReduce(spec))
                out.append(try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }.total.total)
            }
            return out
        }
        let expected: [Double] = (1...20).map { (n: Int) -> Double in Double(n * (n + 1) / 2) }
        #expect(sums == expected)
    }
}

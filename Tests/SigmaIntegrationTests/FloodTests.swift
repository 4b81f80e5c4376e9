import Foundation
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Testing

/// A coordinator process flooded by one peer over the wire (issue 17, hole 6) keeps its memory: FILE-GETs asking
/// 16 MiB each from a worker that never reads the answers, and thousands of WATCH and SUBMIT requests from a client.
/// Each flood is bounded by a limit (refused with 429) or by back-pressure; the coordinator's resident memory is
/// read from /proc as the flood goes, and the flood stops early — failing the test — if it passes 640 MiB
/// (before the limits, the FILE-GET flood alone asked for 32 GiB of replies).
@Suite(.serialized, .timeLimit(.minutes(3))) struct FloodTests {
    func rssMiB(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1) / 1024
    }

    /// A raw peer speaking the protocol with this user's local token (as `sigma worker` and clients do).
    func peer(_ endpoint: String) throws -> ZmqLink {
        var o = LinkOptions()
        o.security = .localClient(token: try LocalToken.load(create: false))
        return try ZmqLink.connect(endpoint, options: o)
    }

    func send(_ link: ZmqLink, _ m: Message) { link.send(Envelope(frames: Codec.encode(m))) }

    /// Reads messages until one matches (or the deadline passes).
    func await_<T>(_ link: ZmqLink, seconds: Double = 10, _ match: (Message) -> T?) throws -> T? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            try link.wait(timeoutMs: 100)
            while let e = try link.receive() {
                if let m = try? Codec.decode(e.frames), let t = match(m) { return t }
            }
        }
        return nil
    }

    @Test func floodsOfFileGetsWatchesAndSubmissionsDoNotGrowTheCoordinator() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-flood-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 64 MiB of input, shipped by the coordinator (input_transport: coordinator).
        try NpyFile.write(path: dir + "/big.npy", float64: [Double](repeating: 1.5, count: 8 << 20))
        let specPath = dir + "/job.yaml"
        try "kind: map-reduce\nname: flood\ninput: {npy: \(dir)/big.npy}\nmap: identity\nreduce: [sum]\nshards: 4\ninput_transport: coordinator\n"
            .write(toFile: specPath, atomically: true, encoding: .utf8)
        let coordinator = try SigmaProcess(["coordinator", "--port", "0", "--no-http", "--log-level", "warning"] + testDataRoots)
        defer { coordinator.kill() }
        let endpoint = String(try await coordinator.waitForLine("listening ").dropFirst("listening ".count))
        let pid = coordinator.pid
        let start = rssMiB(pid)
        var peak = start
        func check() -> Bool {
            peak = max(peak, rssMiB(pid))
            return peak < 640
        }

        // A client submits the job; a raw worker joins and is given its shards.
        let spec = try JobSpec.parse(try String(contentsOfFile: specPath, encoding: .utf8))
        let client = try peer(endpoint)
        defer { client.close() }
        send(client, .submit(Submit(request: 1, options: [], spec: spec)))
        let job = try #require(try await_(client) { m -> JobID? in if case .accept(let a) = m { return a.job }; return nil })
        let worker = try peer(endpoint)
        defer { worker.close() }
        send(worker, .hello(Hello(cores: 1, slots: 1, memory: 1 << 30, host: "flood", name: "flood", instance: "flood-1", features: "")))
        let assigned = try await_(worker) { m -> Bool? in if case .assign(let a) = m, a.job == job { return true }; return nil }
        #expect(assigned == true)

        // 2,000 FILE-GETs of 16 MiB each (32 GiB asked), never reading an answer.
        for i in 0..<2_000 {
            send(worker, .fileGet(FileGet(request: UInt64(i + 1), job: job, index: 0, offset: 0, length: FileGet.maxLength)))
            if i % 100 == 0 {
                send(worker, .heartbeat(Heartbeat(sent: UInt64(i))))
                guard check() else { break }
            }
        }
        for _ in 0..<20 {
            try await Task.sleep(nanoseconds: 100_000_000)
            guard check() else { break }
        }
        #expect(peak < 640, "coordinator RSS grew from \(start) MiB to \(peak) MiB under the FILE-GET flood")

        // 20,000 WATCHes of the job and 5,000 submissions whose input must be read, from one connection.
        for i in 0..<20_000 {
            send(client, .watch(request: UInt64(100 + i), job: job))
            if i % 1000 == 0 { guard check() else { break } }
        }
        for i in 0..<5_000 {
            send(client, .submit(Submit(request: UInt64(100_000 + i), options: [], spec: spec)))
            if i % 500 == 0 { guard check() else { break } }
        }
        // The client reads its answers: most are refusals naming a limit.
        var refused = 0, accepted = 0
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && refused + accepted < 24_000 {
            try client.wait(timeoutMs: 100)
            while let e = try client.receive() {
                switch try? Codec.decode(e.frames) {
                case .error(let r)? where r.code == ErrorReply.Code.tooManyRequests.rawValue: refused += 1
                case .accept?: accepted += 1
                default: break
                }
            }
            guard check() else { break }
        }
        #expect(refused >= 20_000, "refused \(refused), accepted \(accepted)")
        #expect(peak < 640, "coordinator RSS grew from \(start) MiB to \(peak) MiB")
        #expect(kill(pid, 0) == 0, "the coordinator died")
        print("FloodTests: coordinator RSS \(start) MiB at start, \(peak) MiB at most; \(refused) requests refused (429), \(accepted) accepted")
    }
}

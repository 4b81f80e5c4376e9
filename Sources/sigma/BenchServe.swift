import Foundation
import Logging
import SigmaClient
import SigmaCoordinator
import SigmaDashboard
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

/// `sigma bench serve`: a load generator in the style of Triton's perf_analyzer against deployments on an embedded
/// cluster — a concurrency sweep, each level measured in windows until three in a row agree within 10 % — over HTTP
/// and over ZeroMQ, for MiniLM embeddings of short sentences and the digits MLP; beside them, in the same run, the
/// batch job's throughput on the same workers (the ceiling) and one request at a time through the engine (the floor).
enum BenchServe {
    struct Level {
        var transport: String, concurrency: Int
        var rate: Double, p50: Double, p99: Double, errors: Int, windows: Int
        var queueP50: Double, computeP50: Double, meanBatch: Double
    }

    /// Completed requests: (finish time ns, latency ns), per load-generating user.
    final class Record: Sendable {
        let done = Mutex<[(at: UInt64, ns: UInt64)]>([])
        let errors = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        func add(_ at: UInt64, _ ns: UInt64) { done.withLock { $0.append((at, ns)) } }
    }

    static func run(window: Double, concurrency: [Int], maxWindows: Int, only: [String] = [], logger: Logger) async throws {
        let model = URL(fileURLWithPath: "models/all-MiniLM-L6-v2").standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: model + "/model.safetensors") else {
            throw CLIError.usage("sigma bench serve needs models/all-MiniLM-L6-v2 (make model)")
        }
        let dir = try BenchJobs.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let encoder = try BertEncoder(modelDirectory: model)
        let sentences = shortSentences(vocab: encoder.tokenizer.vocab)
        try sentences.joined(separator: "\n").write(toFile: dir + "/short.txt", atomically: true, encoding: .utf8)
        let weights = URL(fileURLWithPath: "Tests/SigmaIntegrationTests/Fixtures/torch-mlp/model.safetensors").standardizedFileURL.path
        let (x, _) = try BenchJobs.syntheticData(dir, rows: 20_000, features: 64, classes: 10)
        let rows = try NpyFile(path: x)
        var xs = [Double](repeating: 0, count: 20_000 * 64)
        try xs.withUnsafeMutableBufferPointer { try rows.readRows(start: 0, count: 20_000, into: $0) }
        let digitsRows = (0..<360).map { r in xs[(r * 64)..<((r + 1) * 64)].map(Float.init) }

        print("# sigma bench serve — 2 workers × 1 thread on this host, \(ProcessInfo.processInfo.activeProcessorCount) cores, \(BLASKernels.cpuModel(cpuinfo: BLASKernels.procCPUInfo)), OpenBLAS \(BLASInfo.coreName)")
        print("# windows of \(window) s until three in a row agree within 10 % (at most \(maxWindows)); latency from the client, median and 99th percentile")
        print("")
        let c = try await BenchJobs.cluster(workers: 2, logger: logger)
        defer { c.stop() }
        let port = try await startHTTP(c)
        let client = try c.client()
        defer { client.close() }
        let specs: [(String, String)] = [
            ("minilm", "kind: serve\nname: minilm\nmodel: {embed: \(model)}\nreplicas: all\nbatching: {max_batch: 32, max_wait_ms: 5}\n"),
            ("digits", "kind: serve\nname: digits\nmodel: {mlp: [64, 64, 10], activation: relu, weights: \(weights)}\nreplicas: all\nbatching: {max_batch: 64, max_wait_ms: 1}\n"),
        ]
        for (_, text) in specs { _ = try await client.deploy(try JobSpec.parse(text, limits: .standard), timeout: 30) }
        for _ in 0..<600 where (c.coordinator.deploymentsSnapshot.map(\.ready).min() ?? 0) < 2 { try await Task.sleep(nanoseconds: 100_000_000) }

        for (name, text) in specs where only.isEmpty || only.contains(name) {
            let spec = try ServeKind.spec(in: JobKinds.standard.open(try JobSpec.parse(text)).rooted(try DataRoots(c.dataRoots)).encoded)!
            let served = try ServedModel(spec)
            let embed = name == "minilm"
            // Floor: one request at a time through the engine, in this process.
            var one: [Double] = []
            let floorStart = monotonicNanos()
            var i = 0
            while Double(monotonicNanos() - floorStart) < 2e9 || one.count < 20 {
                let t = monotonicNanos()
                _ = try served.run(embed ? .texts([sentences[i % sentences.count]]) : .rows(width: 64, values: digitsRows[i % 360]))
                one.append(Double(monotonicNanos() - t) / 1e6)
                i += 1
            }
            let forward = percentile(one, 0.5)
            // Ceiling: the batch job over the same workers.
            let job = embed ? "kind: embed\nname: ceiling\nmodel: \(model)\ninput: \(dir)/short.txt\nbatch_size: 32\n"
                            : "kind: infer\nname: ceiling\nmodel: {mlp: [64, 64, 10], activation: relu, weights: \(weights)}\ndata: {x: \(x)}\nbatch_size: 256\n"
            let times = try await BenchJobs.runs(try JobSpec.parse(job), on: c, count: 3)
            let ceiling = Double(embed ? sentences.count : 20_000) / median(times)
            print("## \(embed ? "all-MiniLM-L6-v2, short sentences (4–12 words)" : "digits MLP 64-64-10, one row per request")")
            print("")
            print(String(format: "- floor: one request at a time through the engine: %.3f ms (p50), %.0f requests/s", forward, 1000 / forward))
            print(String(format: "- ceiling: the batch job (`%@`) on the same 2 workers: %.0f %@/s (median of 3)", embed ? "sigma embed" : "sigma submit infer", ceiling, embed ? "sentences" : "rows"))
            print("")
            print("| transport | concurrency | requests/s | % of ceiling | p50 ms | p99 ms | queue p50 ms | compute p50 ms | mean batch | windows | errors |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for transport in ["http", "zmq"] {
                for n in concurrency {
                    let body: @Sendable (Int) -> String = { k in
                        embed ? "{\"model\":\"minilm\",\"input\":\"\(sentences[k % sentences.count])\"}"
                              : "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[\(digitsRows[k % 360].map { "\($0)" }.joined(separator: ","))]}]}"
                    }
                    let path = embed ? "/v1/embeddings" : "/v2/models/digits/infer"
                    let input: @Sendable (Int) -> ServeInput = { k in embed ? .texts([sentences[k % sentences.count]]) : .rows(width: 64, values: digitsRows[k % 360]) }
                    let before = c.coordinator.deploymentsSnapshot.first { $0.name == name }
                    var l = try await level(transport: transport, users: n, window: window, maxWindows: maxWindows,
                                            http: { k in (path, body(k)) }, port: port, client: client, name: name, input: input)
                    if let d = c.coordinator.deploymentsSnapshot.first(where: { $0.name == name }) {
                        // (the mean batch of this level: batches sent during it)
                        let batches = d.batches - (before?.batches ?? 0), rows = d.batchedRows - (before?.batchedRows ?? 0)
                        (l.queueP50, l.computeP50, l.meanBatch) = (d.queueP50Ms, d.computeP50Ms, batches > 0 ? Double(rows) / Double(batches) : .nan)
                    }
                    print(String(format: "| %@ | %d | %.0f | %.0f %% | %.3f | %.3f | %.3f | %.3f | %.1f | %d | %d |", l.transport, l.concurrency, l.rate,
                                 100 * l.rate / ceiling, l.p50, l.p99, l.queueP50, l.computeP50, l.meanBatch, l.windows, l.errors))
                    fflush(nil)
                }
            }
            print("")
            print(String(format: "Targets: concurrency 1 p50 ≤ 1.5 × the engine's forward pass + 1 ms = %.3f ms%@.", 1.5 * forward + 1,
                         embed ? "; concurrency 16 ≥ 80 % of the ceiling" : "; over HTTP at concurrency 1, p50 ≤ 1 ms"))
            print("")
        }
    }

    /// `users` clients asking one request after another, measured in windows until three agree within 10 %.
    static func level(transport: String, users: Int, window: Double, maxWindows: Int, http: @escaping @Sendable (Int) -> (String, String), port: Int,
                      client: SigmaClient, name: String, input: @escaping @Sendable (Int) -> ServeInput) async throws -> Level {
        let record = Record()
        let start = monotonicNanos()
        var threads: [OSThread] = []
        var tasks: [Task<Void, Never>] = []
        for u in 0..<users {
            if transport == "http" {
                threads.append(OSThread(name: "bench-http-\(u)") {
                    guard let conn = try? HTTPConnection(port: port) else { record.errors.add(1, ordering: .relaxed); return }
                    var k = u * 7919
                    while !record.stop.load(ordering: .relaxed) {
                        let (path, body) = http(k)
                        let t = monotonicNanos()
                        if (try? conn.post(path, body)) == 200 { record.add(monotonicNanos(), monotonicNanos() - t) } else { record.errors.add(1, ordering: .relaxed) }
                        k += 1
                    }
                })
            } else {
                tasks.append(Task {
                    var k = u * 7919
                    while !record.stop.load(ordering: .relaxed) {
                        let t = monotonicNanos()
                        do {
                            _ = try await client.predict(name, input(k), timeout: 30)
                            record.add(monotonicNanos(), monotonicNanos() - t)
                        } catch { record.errors.add(1, ordering: .relaxed) }
                        k += 1
                    }
                })
            }
        }
        // (a first window warms up and is not counted)
        let w = UInt64(window * 1e9)
        try await Task.sleep(nanoseconds: w)
        var rates: [Double] = []
        var windows = 0
        while windows < maxWindows {
            try await Task.sleep(nanoseconds: w)
            windows += 1
            let from = start + w * UInt64(windows), to = from + w
            let n = record.done.withLock { d in d.filter { $0.at >= from && $0.at < to }.count }
            rates.append(Double(n) / window)
            if rates.count >= 3, let hi = rates.suffix(3).max(), let lo = rates.suffix(3).min(), lo > 0, hi / lo <= 1.1 { break }
        }
        record.stop.store(true, ordering: .relaxed)
        for t in threads { t.join() }
        for t in tasks { await t.value }
        let from = start + w * UInt64(windows - min(3, windows) + 1), to = start + w * UInt64(windows + 1)
        let lat = record.done.withLock { d in d.filter { $0.at >= from && $0.at < to }.map { Double($0.ns) / 1e6 } }
        return Level(transport: transport, concurrency: users, rate: rates.suffix(3).reduce(0, +) / Double(min(3, rates.count)),
                     p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), errors: record.errors.load(ordering: .relaxed), windows: windows,
                     queueP50: .nan, computeP50: .nan, meanBatch: .nan)
    }

    /// The embedded coordinator's HTTP API on a free loopback port.
    static func startHTTP(_ c: LocalCluster) async throws -> Int {
        let bound = Mutex<Int?>(nil)
        let shell = c.coordinator
        Task.detached {
            try? await Dashboard(source: shell).run(host: "127.0.0.1", port: 0) { p in bound.withLock { $0 = p } }
        }
        for _ in 0..<200 {
            if let p = bound.withLock({ $0 }) { return p }
            try await Task.sleep(nanoseconds: 25_000_000)
        }
        throw CLIError.unreachable("the bench's HTTP listener did not start")
    }

    /// 2,000 short sentences (4–12 words), seeded.
    static func shortSentences(vocab: [String: Int32]) -> [String] {
        let words = vocab.keys.filter { $0.count >= 3 && $0.allSatisfy(\.isLetter) && !$0.hasPrefix("[") }.sorted()
        var rng = SeededRandom(seed: 21)
        return (0..<2000).map { _ in
            (0..<(4 + Int(rng.next() % 9))).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") + "."
        }
    }

    static func percentile(_ v: [Double], _ p: Double) -> Double {
        guard !v.isEmpty else { return .nan }
        let s = v.sorted()
        return s[min(s.count - 1, Int(Double(s.count - 1) * p + 0.5))]
    }
}

/// One keep-alive HTTP/1.1 connection on a blocking socket (a load generator's client: no framework in the way).
final class HTTPConnection {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 1 << 20)

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else {
            close(fd)
            throw CLIError.unreachable("bench HTTP client: cannot connect to 127.0.0.1:\(port)")
        }
    }

    deinit { close(fd) }

    /// POSTs `body` to `path`; returns the status (the body is read and dropped).
    func post(_ path: String, _ body: String) throws -> Int {
        let request = Array("POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, request.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw CLIError.unreachable("bench HTTP client: send failed") }
            sent += n
        }
        var have = 0
        var headerEnd = -1
        while headerEnd < 0 {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + have, $0.count - have, 0) }
            guard n > 0 else { throw CLIError.unreachable("bench HTTP client: connection closed") }
            have += n
            if have >= 4 { for i in 0...(have - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { headerEnd = i + 4; break } }
        }
        let head = String(decoding: buffer[0..<headerEnd], as: UTF8.self)
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
        var body = have - headerEnd
        while body < length {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, min($0.count, length - body), 0) }
            guard n > 0 else { throw CLIError.unreachable("bench HTTP client: connection closed") }
            body += n
        }
        return status
    }
}

import Foundation
import Testing

/// Every command names the coordinator one way — `--coordinator tcp://HOST:PORT` (a worker's `--join` is the same),
/// `SIGMA_COORDINATOR`, or cluster.yaml — and takes `HOST:PORT`, `HOST` or a port too; the coordinator's `--listen`
/// takes an endpoint; mistakes are told apart (issue 20, point 1).
@Suite(.serialized) struct EndpointCommandTests {
    @Test func oneEndpointFormEverywhere() async throws {
        // The coordinator binds an endpoint given to --listen (port 0: a free one).
        let coordinator = try SigmaProcess(["coordinator", "--listen", "tcp://127.0.0.1:0", "--no-http", "--no-journal"] + testDataRoots)
        defer { coordinator.kill(SIGTERM) }
        let endpoint = String(try await coordinator.waitForLine("listening ").dropFirst("listening ".count))
        let port = String(endpoint.split(separator: ":").last!)
        // A worker joins with --coordinator (and --join is the same option).
        let worker = try SigmaProcess(["worker", "--coordinator", "127.0.0.1:\(port)", "--threads", "1", "--name", "ep-worker", "--log-level", "warning"] + testDataRoots)
        defer { worker.kill(SIGTERM) }
        // Clients: HOST:PORT, a bare port, and SIGMA_COORDINATOR all reach it.
        for args in [["--coordinator", "127.0.0.1:\(port)"], ["--coordinator", port]] {
            let (s, out, e) = try await sigma(["workers", "--json"] + args)
            #expect(s == 0, "\(args): \(e)")
            #expect(s != 0 || out.contains("ep-worker") || out.contains("["), "\(out)")
        }
        let env = try SigmaProcess(["jobs"], environment: ["SIGMA_COORDINATOR": "127.0.0.1:\(port)"])
        #expect(try await env.wait() == 0, "SIGMA_COORDINATOR: \(env.stderr)")
        for _ in 0..<200 {
            let (_, out, _) = try await sigma(["workers", "--json", "--coordinator", endpoint])
            if out.contains("ep-worker") { break }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        // A worker is drained through the same option name.
        let drain = try SigmaProcess(["worker", "--drain", "ep-worker", "--coordinator", endpoint])
        #expect(try await drain.wait() == 0, "\(drain.stderr)")
        #expect(try await worker.wait(timeout: 30) == 0, "the drained worker leaves")

        // Mistakes, told apart, exit 2 (usage), naming the option.
        let cases: [([String], [String])] = [
            (["jobs", "--coordinator", "http://127.0.0.1:7701"], ["--coordinator", "web address", "tcp://HOST:PORT"]),
            (["jobs", "--coordinator", "tcp://tcp://127.0.0.1:\(port)"], ["two schemes"]),
            (["jobs", "--coordinator", "127.0.0.1:notaport"], ["port 'notaport'"]),
            (["coordinator", "--listen", "tcp://127.0.0.1:17711", "--port", "17712", "--no-http"], ["--listen says port 17711", "--port says 17712"]),
            (["coordinator", "--listen", "tcp://tcp://127.0.0.1:17710", "--no-http"], ["--listen", "two schemes"]),
        ]
        for (args, words) in cases {
            let (s, _, e) = try await sigma(args, timeout: 30)
            #expect(s == 2 && words.allSatisfy(e.contains), "\(args): exit \(s): \(e)")
        }
        // Hints repeat the endpoint the user gave, so the suggested command reaches the same coordinator.
        let (ms, _, me) = try await sigma(["job", "99999", "--coordinator", "127.0.0.1:\(port)"])
        #expect(ms == 2 && me.contains("sigma jobs --coordinator \(endpoint)"), "\(me)")
        // Wrong ports are told apart, at once: a closed port, the dashboard's (HTTP), another service's.
        let dashboard = try SigmaProcess(["coordinator", "--port", "0", "--http-port", "0", "--no-journal"] + testDataRoots)
        defer { dashboard.kill(SIGTERM) }
        _ = try await dashboard.waitForLine("listening ")
        let web = try await dashboard.waitForStderr("web dashboard on http://127.0.0.1:")
        let httpPort = try #require(web.components(separatedBy: "http://127.0.0.1:").last.flatMap { Int($0.prefix { $0.isNumber }) }, "\(web)")
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)   // (a TCP service that says nothing)
        defer { close(listener) }
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) } }
        listen(listener, 4)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        let silentPort = Int(UInt16(bigEndian: addr.sin_port))
        let started = Date()
        // (The request's timeout is long, so that a loaded machine's slow process start is never taken for it.)
        let closed = try await sigma(["jobs", "--coordinator", "127.0.0.1:1", "--timeout", "300"], timeout: 330)
        let took = Date().timeIntervalSince(started)
        #expect(closed.0 == 3 && closed.2.contains("nothing listens at tcp://127.0.0.1:1") && took < 150,
                "a closed port is told at once, not after the 300 s timeout (\(took) s): \(closed.2)")
        let http = try await sigma(["jobs", "--coordinator", "127.0.0.1:\(httpPort)", "--timeout", "1"], timeout: 30)
        #expect(http.0 == 3 && http.2.contains("is a web server"), "\(http.2)")
        let other = try await sigma(["jobs", "--coordinator", "127.0.0.1:\(silentPort)", "--timeout", "1"], timeout: 30)
        #expect(other.0 == 3 && other.2.contains("does not speak Sigma's protocol"), "\(other.2)")

        let bad = try SigmaProcess(["jobs"], environment: ["SIGMA_COORDINATOR": "http://x"])
        #expect(try await bad.wait() == 2 && bad.stderr.joined().contains("SIGMA_COORDINATOR"), "\(bad.stderr)")
    }
}

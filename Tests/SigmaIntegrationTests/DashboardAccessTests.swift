import Foundation
import Glibc
import SigmaDashboard
import SigmaModel
import SigmaProtocol
import Synchronization
import Testing

/// A coordinator stand-in for the dashboard: jobs 1…100, and a count of the detail requests that reached it.
final class CountingSource: DashboardSource {
    let detailCalls = Atomic<Int>(0)

    func snapshot() -> ClusterStatus? {
        let jobs = (1...100).map {
            ClusterStatus.Job(id: $0, name: "job-\($0)", kind: "map-reduce", state: .running, done: 1, total: 4, running: 1,
                              reruns: 0, duplicates: 0, elapsed: 1_000_000, error: "")
        }
        return ClusterStatus(uptime: 1_000_000_000, workers: [], jobs: jobs, queuedShards: 0)
    }

    func jobDetail(_ id: JobID) async -> JobDetail? {
        detailCalls.add(1, ordering: .relaxed)
        guard let job = snapshot()?.jobs.first(where: { $0.id == id }) else { return nil }
        return JobDetail(job: job, policy: "latency-aware", specDigest: "", inputDigest: "", modelDigest: "", logFrom: 0, logTotal: 0,
                         logs: [], attemptsDropped: 0, attempts: [])
    }

    func takeSamples() -> CoordinatorSamples { CoordinatorSamples() }
}

/// One HTTP/1.1 request over a plain socket (so the test chooses the Host header, as a rebinding page's browser
/// would send it): the status code, the head and the body. (On a thread of its own: a blocking read on one of the
/// few cooperative threads could starve the in-process server that is to answer it.)
func rawGet(port: Int, path: String, host: String?, headers: [String] = []) async throws -> (status: Int, head: String, body: String) {
    try await withCheckedThrowingContinuation { k in
        Thread { k.resume(with: Result { try blockingGet(port: port, path: path, host: host, headers: headers) }) }.start()
    }
}

func blockingGet(port: Int, path: String, host: String?, headers: [String]) throws -> (status: Int, head: String, body: String) {
    let c = try RawConnection(port: port, timeout: 30)
    defer { c.hangUp() }
    let fd = c.fd
    let request = "GET \(path) HTTP/1.1\r\n" + (host.map { "Host: \($0)\r\n" } ?? "") + headers.map { $0 + "\r\n" }.joined()
        + "Connection: close\r\n\r\n"
    _ = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, 0) }
    var data = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    let parts = text.components(separatedBy: "\r\n\r\n")
    let head = parts.first ?? ""
    guard let code = head.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { throw SigmaTestError("GET \(path) (Host \(host ?? "none")): no HTTP answer: '\(text)'") }
    return (code, head, parts.dropFirst().joined(separator: "\r\n\r\n"))
}

/// The dashboard's guards (docs/operations.md, "Web dashboard"): Host names, the bearer token, the bind refusal and
/// job ids checked before they reach the coordinator.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DashboardAccessTests {
    /// Serves `Dashboard(source:access:)` on 127.0.0.1 (a free port) while `body` runs.
    func serving(_ access: DashboardAccess, _ source: CountingSource = CountingSource(), gateWindow: UInt64? = nil,
                 _ body: (Int, CountingSource) async throws -> Void) async throws {
        let port = Mutex<Int?>(nil)
        var dashboard = Dashboard(source: source, access: access)
        if let gateWindow { dashboard.detailGate.window = gateWindow }
        let server = Task { [dashboard] in try await dashboard.run(host: "127.0.0.1", port: 0) { p in port.withLock { $0 = p } } }
        defer { server.cancel() }
        for _ in 0..<200 where port.withLock({ $0 }) == nil { try await Task.sleep(nanoseconds: 20_000_000) }
        try await body(try #require(port.withLock { $0 }, "the dashboard did not start"), source)
    }

    @Test func hostNamesAreCheckedAgainstTheAllowList() {
        let access = DashboardAccess(hosts: ["Sigma.Example.com"])
        func verdict(_ host: String?) -> DashboardAccess.Verdict {
            access.check(host: host, path: "/api/status", query: nil, authorization: nil, cookie: nil)
        }
        for host in ["localhost", "localhost:7701", "LOCALHOST.:80", "127.0.0.1:7701", "127.1.2.3", "[::1]:7701", "[::1]",
                     "10.0.0.5:7701", "[fe80::1]:7701", "sigma.example.com:7701", "sigma.example.com"] {
            #expect(verdict(host) == .allow, "\(host)")
        }
        for host in [nil, "", "evil.example", "evil.example:7701", "localhost.evil.example", "127.0.0.1.evil.example",
                     "sigma.example.com.evil.example", "::1", "[::1", "localhost:80x", "a b"] {
            guard case .refuse(403, let text) = verdict(host) else { Issue.record("\(host ?? "(none)") was let in"); continue }
            #expect(text.contains("--http-host") && text.contains("coordinator.http_hosts"), "\(text)")
        }
    }

    @Test func theTokenComesAsBearerCookieOrQueryOnce() {
        let access = DashboardAccess(token: "0123456789abcdef0123")
        func verdict(query: String? = nil, authorization: String? = nil, cookie: String? = nil) -> DashboardAccess.Verdict {
            access.check(host: "localhost:7701", path: "/job/3", query: query, authorization: authorization, cookie: cookie)
        }
        #expect(verdict(authorization: "Bearer 0123456789abcdef0123") == .allow)
        #expect(verdict(authorization: "bearer 0123456789abcdef0123") == .allow)
        #expect(verdict(cookie: "a=b; sigma_token=0123456789abcdef0123") == .allow)
        #expect(verdict(query: "token=0123456789abcdef0123") == .setCookie(location: "/job/3"))
        #expect(access.check(host: "localhost", path: "//evil.example/x", query: "token=0123456789abcdef0123", authorization: nil, cookie: nil)
                    == .setCookie(location: "/evil.example/x"), "an open redirect")
        for path in ["/\\evil.example/x", "\\/evil.example/x", "/a\\b"] {
            guard case .setCookie(let to) = access.check(host: "localhost", path: path, query: "token=0123456789abcdef0123", authorization: nil, cookie: nil) else {
                Issue.record("\(path): no redirect"); continue
            }
            #expect(to.hasPrefix("/") && !to.hasPrefix("//") && !to.contains("\\"), "\(path) → \(to): an open redirect")
        }
        for v in [verdict(), verdict(authorization: "Bearer 0123456789abcdef012"), verdict(authorization: "Bearer "),
                  verdict(authorization: "Basic MDEyMzQ1Njc4OWFiY2RlZjAxMjM="), verdict(cookie: "sigma_token=wrong"),
                  verdict(query: "token=wrong", cookie: "sigma_token=0123456789abcdef0123")] {
            guard case .refuse(401, let text) = v else { Issue.record("let in: \(v)"); continue }
            #expect(text.contains("Authorization: Bearer") && text.contains("?token="))
        }
        // The Host check comes first: the right token from a foreign name is still refused.
        #expect(access.check(host: "evil.example", path: "/", query: nil, authorization: "Bearer 0123456789abcdef0123", cookie: nil)
                    != .allow)
    }

    @Test func aNonLoopbackBindNeedsATokenOrInsecure() throws {
        for address in ["127.0.0.1", "localhost", "::1", "127.0.0.2"] {
            #expect(DashboardAccess.bindProblem(address: address, token: false, insecure: false) == nil, "\(address)")
        }
        let problem = try #require(DashboardAccess.bindProblem(address: "0.0.0.0", token: false, insecure: false))
        #expect(problem.contains("--http-token-file") && problem.contains("--insecure"), "\(problem)")
        #expect(DashboardAccess.bindProblem(address: "0.0.0.0", token: true, insecure: false) == nil)
        #expect(DashboardAccess.bindProblem(address: "10.0.0.5", token: false, insecure: true) == nil)

        // The same through the command: it exits 2 before binding anything, naming both fixes; a token file that
        // others can read is refused like a key file.
        let dir = try Scratch("http-token")
        defer { dir.remove() }
        let sigma = try sigmaBinary()
        let open = runTool(sigma, ["coordinator", "--port", "0", "--http-listen", "0.0.0.0"], timeout: 30)
        #expect(open.status == 2 && open.err.contains("--http-token-file") && open.err.contains("--insecure"), "\(open.status) \(open.err)")
        let token = try dir.write("token", "0123456789abcdef0123456789abcdef\n")
        _ = chmod(token, 0o644)
        let loose = runTool(sigma, ["coordinator", "--port", "0", "--http-listen", "0.0.0.0", "--http-token-file", token], timeout: 30)
        #expect(loose.status == 2 && loose.err.contains("chmod 600"), "\(loose.status) \(loose.err)")
        _ = chmod(token, 0o600)
        #expect(try DashboardAccess.token(file: token) == "0123456789abcdef0123456789abcdef")
        let short = try dir.write("short", "abc\n")
        _ = chmod(short, 0o600)
        #expect(throws: DashboardError.self) { try DashboardAccess.token(file: short) }
    }

    @Test func foreignHostsAndMissingTokensAreRefusedOverHTTP() async throws {
        try await serving(DashboardAccess(hosts: ["sigma.example.com"])) { port, source in
            for host in ["localhost:\(port)", "127.0.0.1:\(port)", "[::1]:\(port)", "sigma.example.com:\(port)"] {
                #expect(try await rawGet(port: port, path: "/api/status", host: host).status == 200, "\(host)")
            }
            for path in ["/", "/api/status", "/api/jobs/1", "/metrics", "/api/events"] {
                let r = try await rawGet(port: port, path: path, host: "rebound.evil.example:\(port)")
                #expect(r.status == 403 && r.body.contains("--http-host"), "\(path): \(r.status) \(r.body)")
            }
            #expect(source.detailCalls.load(ordering: .relaxed) == 0)
        }
        let token = "0123456789abcdef0123"
        try await serving(DashboardAccess(token: token)) { port, _ in
            let host = "localhost:\(port)"
            for path in ["/", "/api/status", "/metrics", "/job/1"] {
                #expect(try await rawGet(port: port, path: path, host: host).status == 401, "\(path) without a token")
                #expect(try await rawGet(port: port, path: path, host: host, headers: ["Authorization: Bearer nope-nope-nope-nope"]).status == 401)
                #expect(try await rawGet(port: port, path: path, host: host, headers: ["Authorization: Bearer \(token)"]).status == 200, "\(path)")
            }
            // The browser's way in: ?token= once, then the cookie it set.
            let first = try await rawGet(port: port, path: "/?token=\(token)", host: host)
            #expect(first.status == 303 && first.head.contains("sigma_token=\(token)") && first.head.contains("HttpOnly"), "\(first.head)")
            #expect(try await rawGet(port: port, path: "/api/status", host: host, headers: ["Cookie: sigma_token=\(token)"]).status == 200)
            #expect(try await rawGet(port: port, path: "/?token=wrong", host: host).status == 401)
        }
    }

    @Test func badJobIdsNeverReachTheCoordinator() async throws {
        // (a window of 10 minutes: the 45 requests below took more than the default 11 s once, under the whole suite)
        try await serving(DashboardAccess(), gateWindow: 600_000_000_000) { port, source in
            let host = "localhost:\(port)"
            for (path, status) in [("/api/jobs/abc", 400), ("/api/jobs/-1", 400), ("/api/jobs/1e3", 400), ("/api/jobs/+5", 400),
                                   ("/api/jobs/99999999999999999999999", 400), ("/api/jobs/0", 404), ("/api/jobs/101", 404),
                                   ("/api/jobs/18446744073709551615", 404), ("/job/abc", 400)] {
                let r = try await rawGet(port: port, path: path, host: host)
                #expect(r.status == status, "\(path): \(r.status) \(r.body)")
            }
            #expect(source.detailCalls.load(ordering: .relaxed) == 0, "a bad id reached the coordinator")
            // Asking again and again for one job is fine; a sweep over many ids stops at 16 different ones.
            for _ in 0..<5 { #expect(try await rawGet(port: port, path: "/api/jobs/1", host: host).status == 200) }
            var refused = 0
            for id in 2...40 {
                if try await rawGet(port: port, path: "/api/jobs/\(id)", host: host).status == 429 { refused += 1 }
            }
            #expect(refused == 40 - 16)
            #expect(source.detailCalls.load(ordering: .relaxed) == 5 + 15)
            #expect(try await rawGet(port: port, path: "/api/jobs/1", host: host).status == 200, "an id already asked about is still served")
        }
    }

    @Test func theGateBoundsDifferentIdsPerWindow() {
        var gate = JobDetailGate()
        for id in 1...16 { #expect(gate.admit("\(id)", newest: 50, now: 0) == .ask(JobID(id))) }
        guard case .refuse(429, _) = gate.admit("17", newest: 50, now: 1) else { Issue.record("17th id let through"); return }
        #expect(gate.admit("3", newest: 50, now: 2) == .ask(3))
        // After the window the old ids are forgotten.
        #expect(gate.admit("17", newest: 50, now: gate.window + 3) == .ask(17))
        guard case .refuse(404, _) = gate.admit("1", newest: nil, now: 0) else { Issue.record("a job on a coordinator with none"); return }
    }
}

extension DashboardAccessTests {
    @Test func clusterYamlNamesHostsAndTheTokenFile() throws {
        let c = try ClusterConfig.parse("coordinator: {http_hosts: [sigma.example.com, Other.Example], http_token_file: keys/http-token}\n",
                                        file: "/etc/sigma/cluster.yaml")
        #expect(c.httpHosts == ["sigma.example.com", "Other.Example"])
        #expect(c.httpTokenFile == "/etc/sigma/keys/http-token")
        #expect(DashboardAccess(hosts: c.httpHosts).hosts == ["sigma.example.com", "other.example"])
        #expect { _ = try ClusterConfig.parse("coordinator: {http_hosts: sigma.example.com}\n") } throws: { "\($0)".contains("http_hosts") }
    }
}

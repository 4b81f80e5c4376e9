import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Glibc
import SigmaJobs
import Synchronization
import Testing

/// A TCP relay on 127.0.0.1 that forwards every connection to `target` and keeps every byte it forwards, both
/// ways — what anyone on the path would see.
final class RecordingRelay: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32
    private let targetPort: UInt16
    private let seen = Mutex<[UInt8]>([])
    private let stopped = Atomic<Bool>(false)

    init(targetPort: UInt16) throws {
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Self.loopback(0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { close(fd); throw SigmaTestError("relay: cannot listen on 127.0.0.1") }
        listener = fd
        port = UInt16(bigEndian: addr.sin_port)
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    var bytes: [UInt8] { seen.withLock { $0 } }

    func contains(_ text: String) -> Bool {
        let needle = Array(text.utf8), hay = bytes
        guard needle.count <= hay.count else { return false }
        return (0...(hay.count - needle.count)).contains { i in hay[i..<(i + needle.count)].elementsEqual(needle) }
    }

    func stop() {
        stopped.store(true, ordering: .releasing)
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private static func loopback(_ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return a
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .acquiring) {
            let c = accept(listener, nil, nil)
            if c < 0 { return }
            let up = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = Self.loopback(targetPort)
            let connected = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(up, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            if !connected { close(c); close(up); continue }
            Thread.detachNewThread { [self] in pump(c, up) }
        }
    }

    private func pump(_ a: Int32, _ b: Int32) {
        defer { close(a); close(b) }
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        var buf = [UInt8](repeating: 0, count: 65536)
        while !stopped.load(ordering: .acquiring) {
            if poll(&fds, 2, 200) <= 0 { continue }
            for (i, f) in fds.enumerated() where f.revents != 0 {
                let n = read(f.fd, &buf, buf.count)
                if n <= 0 { return }
                seen.withLock { $0.append(contentsOf: buf[0..<n]) }
                let to = i == 0 ? b : a
                var off = 0
                while off < n {
                    let w = buf.withUnsafeBytes { write(to, $0.baseAddress! + off, n - off) }
                    if w <= 0 { return }
                    off += w
                }
            }
        }
    }
}

/// CurveZMQ end to end, as separate processes: keys made by `sigma keygen`, a coordinator that admits enrolled keys
/// only, workers and clients with and without keys.
@Suite(.serialized, .timeLimit(.minutes(5))) struct SecurityTests {
    struct Keys {
        let dir: String
        var allow: String { dir + "/allowed" }
        func key(_ n: String) -> String { dir + "/" + n + ".key" }
        func pub(_ n: String) -> String { dir + "/" + n + ".pub" }
    }

    func makeKeys() throws -> Keys {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-keys-\(UUID().uuidString)").path
        let k = Keys(dir: dir)
        try FileManager.default.createDirectory(atPath: k.allow, withIntermediateDirectories: true)
        let sigma = try sigmaBinary()
        #expect(runTool(sigma, ["keygen", "coordinator", "-o", dir]).status == 0)
        for (n, role) in [("w1", "worker"), ("client", "client"), ("stranger", "worker"), ("bob", "client"), ("boss", "admin")] {
            let r = runTool(sigma, ["keygen", n, "--role", role, "--coordinator-key", k.pub("coordinator"), "-o", dir])
            #expect(r.status == 0, "\(r.err)")
        }
        for n in ["w1", "client", "bob", "boss"] { try FileManager.default.copyItem(atPath: k.pub(n), toPath: k.allow + "/" + n + ".pub") }
        return k
    }

    func mode(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_mode & 0o777) : -1
    }

    /// A small map-reduce job (Σ of 1…1000 = 500500) whose spec carries a marker text.
    func job(marker: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-sec-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try NpyFile.write(path: dir + "/v.npy", float64: (1...1000).map(Double.init))
        let spec = dir + "/job.yaml"
        try "kind: map-reduce\nname: \(marker)\ninput: {npy: \(dir)/v.npy}\nmap: identity\nreduce: [sum, count]\nshards: 4\n"
            .write(toFile: spec, atomically: true, encoding: .utf8)
        return spec
    }

    func workerNames(_ endpoint: String, key: String) -> [String] {
        let r = runTool(try! sigmaBinary(), ["workers", "--json", "--coordinator", endpoint, "--key", key])
        guard r.status == 0, let a = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]] else { return [] }
        return a.filter { $0["state"] as? String != "dead" }.compactMap { $0["name"] as? String }.sorted()
    }

    @Test func onlyEnrolledKeysGetInAndTrafficIsEncrypted() async throws {
        let k = try makeKeys()
        defer { try? FileManager.default.removeItem(atPath: k.dir) }
        #expect(mode(k.key("w1")) == 0o600 && mode(k.key("coordinator")) == 0o600)
        #expect(mode(k.pub("w1")) & 0o044 == 0o044)

        let coordinator = try SigmaProcess(["coordinator", "--port", "0", "--http-port", "0", "--log-level", "info",
                                            "--key", k.key("coordinator"), "--allow", k.allow] + testDataRoots)
        defer { coordinator.kill() }
        let endpoint = String(try await coordinator.waitForLine("listening ").dropFirst("listening ".count))
        let dashboard = String(try await coordinator.waitForLine("dashboard ").dropFirst("dashboard ".count))
        func worker(_ name: String, key: String?) throws -> SigmaProcess {
            try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", name, "--log-level", "info"] + testDataRoots + (key.map { ["--key", $0] } ?? ["--insecure"]))
        }
        let w1 = try worker("w1", key: k.key("w1")), stranger = try worker("stranger", key: k.key("stranger")), plain = try worker("plain", key: nil)
        defer { for w in [w1, stranger, plain] { w.kill(SIGKILL) } }

        // The enrolled worker joins; the others are refused, each told why.
        var names: [String] = []
        for _ in 0..<100 where names != ["w1"] {
            try await Task.sleep(nanoseconds: 100_000_000)
            names = workerNames(endpoint, key: k.key("client"))
        }
        #expect(names == ["w1"])
        for _ in 0..<50 where !(stranger.stderr.joined().contains("not enrolled") && plain.stderr.joined().contains("requires authentication")) {
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        #expect(stranger.stderr.joined().contains("not enrolled"), "\(stranger.stderr.suffix(3))")
        #expect(plain.stderr.joined().contains("requires authentication"), "\(plain.stderr.suffix(3))")
        #expect(coordinator.stderr.joined().contains("refused CURVE key"))
        #expect(coordinator.stderr.joined().contains("admitted key \"w1\""))

        // Clients: an enrolled key runs a job through a relay that records the wire; the marker never shows.
        let marker = "marker-7f3a9c-curve"
        let spec = try job(marker: marker)
        let port = UInt16(endpoint.split(separator: ":").last!)!
        let relay = try RecordingRelay(targetPort: port)
        defer { relay.stop() }
        let run = runTool(try sigmaBinary(), ["submit", spec, "--follow", "--json", "--coordinator", "tcp://127.0.0.1:\(relay.port)", "--key", k.key("client")], timeout: 60)
        #expect(run.status == 0, "\(run.err)")
        let json = try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any]
        let result = json?["result"] as? [String: Any]
        #expect(result?["sum"] as? Double == 500_500 && result?["count"] as? Int == 1000, "\(run.out)")
        #expect(relay.bytes.count > 1000)
        #expect(!relay.contains(marker) && !relay.contains("map-reduce"), "the job spec crossed the wire in the clear")

        // Refused clients fail at once (exit 3), saying why — no waiting for a timeout. (The timeouts are long, so that
        // a loaded machine's slow process starts are never taken for them.)
        let t0 = Date()
        let noKey = runTool(try sigmaBinary(), ["status", "--coordinator", endpoint, "--insecure", "--timeout", "300"], timeout: 330)
        #expect(noKey.status == 3 && noKey.err.contains("requires authentication"), "\(noKey.err)")
        let strangerClient = runTool(try sigmaBinary(), ["status", "--coordinator", endpoint, "--key", k.key("stranger"), "--timeout", "300"], timeout: 330)
        #expect(strangerClient.status == 3 && strangerClient.err.contains("not enrolled"), "\(strangerClient.err)")
        #expect(Date().timeIntervalSince(t0) < 150, "the refusals were waited out, not told at once")

        // Enrolling a key is copying its .pub file: the waiting worker gets in without any restart.
        try FileManager.default.copyItem(atPath: k.pub("stranger"), toPath: k.allow + "/stranger.pub")
        for _ in 0..<100 where names != ["stranger", "w1"] {
            try await Task.sleep(nanoseconds: 100_000_000)
            names = workerNames(endpoint, key: k.key("client"))
        }
        #expect(names == ["stranger", "w1"])

        // Operators see the handshakes in /metrics: admitted ones and refusals (strangers, plain peers are refused
        // before ZAP and not counted there).
        var request = URLRequest(url: URL(string: dashboard + "metrics")!)
        request.timeoutInterval = 30
        let (body, _) = try await URLSession.shared.data(for: request)
        let text = String(decoding: body, as: UTF8.self)
        func value(_ outcome: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix("sigma_curve_handshakes_total{outcome=\"\(outcome)\"}") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect((value("admitted") ?? 0) >= 3, "\(text.split(separator: "\n").filter { $0.contains("curve") })")
        #expect((value("refused") ?? 0) >= 2)
    }

    /// The control for the test above: without keys, the same relay sees the job spec in the clear — so the
    /// recorder does see what crosses it.
    @Test func withoutKeysTheRelaySeesTheSpec() async throws {
        let cluster = try await ProcessCluster(workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let marker = "marker-7f3a9c-plain"
        let spec = try job(marker: marker)
        let relay = try RecordingRelay(targetPort: UInt16(cluster.endpoint.split(separator: ":").last!)!)
        defer { relay.stop() }
        let run = runTool(try sigmaBinary(), ["submit", spec, "--follow", "--json", "--coordinator", "tcp://127.0.0.1:\(relay.port)"], timeout: 60)
        #expect(run.status == 0, "\(run.err)")
        #expect(relay.contains(marker))
        // A client with keys against this coordinator without: refused, pointed at the keys (by the handshake event
        // or, failing that, by the timeout's hint).
        let k = try makeKeys()
        defer { try? FileManager.default.removeItem(atPath: k.dir) }
        let keyed = runTool(try sigmaBinary(), ["status", "--coordinator", cluster.endpoint, "--key", k.key("client"), "--timeout", "3"])
        #expect(keyed.status == 3 && keyed.err.contains("--key"), "\(keyed.err)")
        #expect(keyed.err.contains("does not use CURVE keys") || keyed.err.contains("--coordinator-key"), "\(keyed.err)")
    }

    /// Collective training steps between CURVE workers: each admits the other's key when the coordinator names it
    /// in a step's ASSIGN, the steps run over those encrypted links (no step fails over to the coordinator), and the
    /// model is bitwise `--local`'s.
    @Test func collectiveStepsRunBetweenCurveWorkers() async throws {
        let k = try makeKeys()
        defer { try? FileManager.default.removeItem(atPath: k.dir) }
        try FileManager.default.copyItem(atPath: k.pub("stranger"), toPath: k.allow + "/stranger.pub")
        let dir = try Scratch("collective-curve")
        defer { dir.remove() }
        let spec = try dir.write("train.yaml", sgdDigitsSpec(steps: 60))
        let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"])
        try #require(ls == 0, "\(le)")
        // (two workers of the coordinator's machine: collective from two, or the coordinator would reduce their steps)
        let coordinator = try SigmaProcess(["coordinator", "--port", "0", "--no-http", "--log-level", "info", "--same-machine-collective-from", "2",
                                            "--key", k.key("coordinator"), "--allow", k.allow] + testDataRoots)
        defer { coordinator.kill() }
        let endpoint = String(try await coordinator.waitForLine("listening ").dropFirst("listening ".count))
        let workers = try ["w1", "stranger"].map { n in
            try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", n, "--log-level", "info", "--key", k.key(n)] + testDataRoots)
        }
        defer { for w in workers { w.kill(SIGKILL) } }
        for _ in 0..<100 where workerNames(endpoint, key: k.key("client")) != ["stranger", "w1"] { try await Task.sleep(nanoseconds: 100_000_000) }
        let run = runTool(try sigmaBinary(), ["submit", spec, "--follow", "--coordinator", endpoint, "--key", k.key("client"), "-o", dir.path + "/cluster"], timeout: 120)
        #expect(run.status == 0, "\(run.err)")
        #expect(fileBytes(dir.path + "/cluster/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"), "CURVE workers' collective steps differ from --local")
        let log = coordinator.stderr.joined(separator: "\n")
        #expect(log.contains("2 workers reduce the steps among themselves"), "\(log.suffix(2000))")
        #expect(!log.contains("a collective step failed") && !log.contains(" stopped ("), "a step failed or was stopped: \(log.suffix(2000))")
    }

    /// Roles end to end, as separate processes with keys of each role (issue 17): a client key joining as a worker
    /// is refused and the worker exits saying so; a worker key cannot submit; client A cannot see, fetch, follow or
    /// cancel client B's job nor drain workers; an admin can do all of it.
    @Test func eachKeyMayDoOnlyWhatItsRoleAllows() async throws {
        let k = try makeKeys()
        defer { try? FileManager.default.removeItem(atPath: k.dir) }
        let sigma = try sigmaBinary()
        let coordinator = try SigmaProcess(["coordinator", "--port", "0", "--no-http", "--log-level", "info",
                                            "--key", k.key("coordinator"), "--allow", k.allow] + testDataRoots)
        defer { coordinator.kill() }
        let endpoint = String(try await coordinator.waitForLine("listening ").dropFirst("listening ".count))
        func as_(_ key: String, _ args: [String], timeout: Double = 30) -> (status: Int32, out: String, err: String) {
            runTool(sigma, args + [args[0] == "worker" ? "--join" : "--coordinator", endpoint, "--key", k.key(key)], timeout: timeout)
        }

        // A client key joining as a worker: refused, and the worker process ends naming the role it lacks.
        let impostor = try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", "impostor", "--key", k.key("client")])
        defer { impostor.kill(SIGKILL) }
        #expect(try await impostor.wait(timeout: 30) != 0)
        #expect(impostor.stderr.joined().contains("HELLO needs the worker role"), "\(impostor.stderr.suffix(3))")
        // A worker key submitting: refused.
        let spec = try job(marker: "roles")
        let byWorker = as_("w1", ["submit", spec])
        #expect(byWorker.status != 0 && byWorker.err.contains("SUBMIT needs the client or admin role"), "\(byWorker.err)")

        // Alice ("client") submits while no worker runs: her job waits, queued.
        let submitted = as_("client", ["submit", spec, "--json"])
        #expect(submitted.status == 0, "\(submitted.err)")
        let accepted = try JSONSerialization.jsonObject(with: Data(submitted.out.utf8)) as? [String: Any]
        let id = try #require((accepted?["job"] as? Int) ?? (accepted?["id"] as? Int), "\(submitted.out)")
        // Bob sees no job, and every way to reach Alice's is refused.
        let bobJobs = as_("bob", ["jobs", "--json"])
        #expect(bobJobs.status == 0 && !bobJobs.out.contains("\"roles\""), "\(bobJobs.out)")
        for args in [["job", "\(id)"], ["results", "\(id)"], ["logs", "\(id)"], ["logs", "-f", "\(id)"], ["cancel", "\(id)"], ["worker", "--drain", "w1"]] {
            let r = as_("bob", args)
            #expect(r.status != 0 && (r.err.contains("another client") || r.err.contains("needs the admin role")), "bob \(args): \(r.status) \(r.err)")
        }
        // The admin sees Alice's job and cancels it.
        let bossJobs = as_("boss", ["jobs", "--json"])
        #expect(bossJobs.status == 0 && bossJobs.out.contains("\"roles\""), "\(bossJobs.out)")
        let cancelled = as_("boss", ["cancel", "\(id)"])
        #expect(cancelled.status == 0, "\(cancelled.err)")
        let state = as_("client", ["job", "\(id)", "--json"])
        #expect(state.status == 0 && state.out.contains("cancelled"), "\(state.out) \(state.err)")

        // With a worker, Alice's next job runs; she and the admin fetch its result, Bob cannot.
        let w1 = try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", "w1", "--key", k.key("w1"), "--log-level", "warning"] + testDataRoots)
        defer { w1.kill(SIGKILL) }
        let run = as_("client", ["submit", spec, "--follow", "--json"], timeout: 60)
        #expect(run.status == 0, "\(run.err)")
        let second = try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any]
        let id2 = try #require((second?["job"] as? Int) ?? (second?["id"] as? Int), "\(run.out)")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-roles-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        #expect(as_("client", ["results", "\(id2)", "-o", out + "/a"]).status == 0)
        #expect(as_("boss", ["results", "\(id2)", "-o", out + "/r"]).status == 0)
        let bobResult = as_("bob", ["results", "\(id2)", "-o", out + "/b"])
        #expect(bobResult.status != 0 && bobResult.err.contains("another client"), "\(bobResult.err)")
        // The admin drains the worker.
        let drained = as_("boss", ["worker", "--drain", "w1"])
        #expect(drained.status == 0, "\(drained.err)")
        #expect(coordinator.stderr.joined().contains("refused HELLO from key 'client' (role client)"))
    }

    /// Loopback without keys: only processes of the coordinator's own user get in (they read its local token);
    /// a process with another token — another user's, or another state folder's — is refused at the handshake.
    @Test func loopbackWithoutKeysAdmitsOnlyTheCoordinatorsUser() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-state-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let coordinator = try SigmaProcess(["coordinator", "--port", "0", "--no-http", "--log-level", "info"],
                                           environment: ["SIGMA_STATE_DIR": base + "/mine"])
        defer { coordinator.kill() }
        let endpoint = String(try await coordinator.waitForLine("listening ").dropFirst("listening ".count))
        var st = stat()
        #expect(stat(base + "/mine", &st) == 0 && st.st_mode & 0o777 == 0o700)
        #expect(stat(base + "/mine/local.token", &st) == 0 && st.st_mode & 0o777 == 0o600)
        let sigma = try sigmaBinary()
        let mine = try SigmaProcess(["status", "--coordinator", endpoint], environment: ["SIGMA_STATE_DIR": base + "/mine"])
        #expect(try await mine.wait() == 0, "\(mine.stderr)")
        // Another state folder with a token of its own (what another user has): refused, saying why.
        let other = try SigmaProcess(["coordinator", "--port", "0", "--no-http"], environment: ["SIGMA_STATE_DIR": base + "/other"])
        _ = try await other.waitForLine("listening ")
        other.kill()
        let stranger = try SigmaProcess(["status", "--coordinator", endpoint, "--timeout", "10"], environment: ["SIGMA_STATE_DIR": base + "/other"])
        #expect(try await stranger.wait() == 3)
        #expect(stranger.stderr.joined().contains("refused this user's local token"), "\(stranger.stderr)")
        // No token at all, or no authentication: refused too.
        let none = try SigmaProcess(["status", "--coordinator", endpoint], environment: ["SIGMA_STATE_DIR": base + "/none"])
        #expect(try await none.wait() == 2 && none.stderr.joined().contains("no local token"))
        let plain = runTool(sigma, ["status", "--coordinator", endpoint, "--insecure", "--timeout", "10"])
        #expect(plain.status == 3 && plain.err.contains("requires authentication"), "\(plain.err)")
        #expect(coordinator.stderr.joined().contains("refused a loopback connection"))
    }

    /// Key and policy mistakes are refused before anything listens, naming the file or flag.
    @Test func badKeysAndBindsAreRefusedWithClearErrors() throws {
        let k = try makeKeys()
        defer { try? FileManager.default.removeItem(atPath: k.dir) }
        let sigma = try sigmaBinary()
        func coordinator(_ args: [String]) -> (status: Int32, out: String, err: String) {
            runTool(sigma, ["coordinator", "--port", "0", "--no-http"] + args, timeout: 20)
        }
        var r = coordinator(["--listen", "192.0.2.1"])
        #expect(r.status == 2 && r.err.contains("refusing to bind 192.0.2.1 without encryption"), "\(r.err)")
        r = coordinator(["--key", k.key("coordinator")])
        #expect(r.status == 2 && r.err.contains("--allow"), "\(r.err)")
        r = coordinator(["--key", k.pub("coordinator"), "--allow", k.allow])
        #expect(r.status == 2 && r.err.contains("holds no 'secret' key"), "\(r.err)")
        chmod(k.key("w1"), 0o644)
        r = coordinator(["--key", k.key("w1"), "--allow", k.allow])
        #expect(r.status == 2 && r.err.contains("readable by others") && r.err.contains("chmod 600"), "\(r.err)")
        r = coordinator(["--key", k.key("coordinator"), "--allow", k.dir + "/nowhere"])
        #expect(r.status == 2 && r.err.contains("no such folder"), "\(r.err)")
        // A client key that does not name the coordinator's key, and no --coordinator-key.
        #expect(runTool(sigma, ["keygen", "loose", "-o", k.dir]).status == 0)
        r = runTool(sigma, ["status", "--coordinator", "tcp://127.0.0.1:1", "--key", k.key("loose")])
        #expect(r.status == 2 && r.err.contains("--coordinator-key"), "\(r.err)")
        // keygen does not overwrite a key by accident.
        r = runTool(sigma, ["keygen", "w1", "-o", k.dir])
        #expect(r.status == 2 && r.err.contains("--force"), "\(r.err)")
    }
}

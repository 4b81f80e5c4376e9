import Foundation
import SigmaClient
import SigmaModel
import SigmaTransport
import Synchronization
import Testing

/// The `sigma` binary built next to this test bundle.
func sigmaBinary() throws -> String {
    let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
    let candidate = dir.appendingPathComponent("sigma").path
    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    if let env = ProcessInfo.processInfo.environment["SIGMA_BIN"] { return env }
    throw SigmaTestError("sigma binary not found next to \(exe); run `swift build` first or set SIGMA_BIN")
}

struct SigmaTestError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

/// A `sigma` child process whose output is collected line by line.
final class SigmaProcess: Sendable {
    let process: Process
    private let lines = Lines()
    private let errLines = Lines()

    final class Lines: Sendable {
        let m = Mutex<[String]>([])
        /// Set when the reader has seen the end of the stream (for a failure's message: a missing line that never came,
        /// or a reader that stopped early).
        let ended = Mutex<Bool>(false)
        func withLock<R>(_ body: (inout [String]) -> R) -> R { m.withLock { body(&$0) } }
    }

    /// `environment`: variables set for the child on top of this process's.
    /// `executable`: run it with `args` instead of `sigma ARGS` (e.g. a wrapper that execs sigma).
    /// `directory`: the child's current folder (default: this process's).
    init(_ args: [String], environment: [String: String] = [:], executable: String? = nil, directory: String? = nil) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try executable ?? sigmaBinary())
        p.arguments = args
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        process = p
        let collect: @Sendable (FileHandle, Bool) -> Void = { [lines, errLines] h, isErr in
            Thread.detachNewThread {
                var buffer = Data()
                while true {
                    let d = h.availableData
                    if d.isEmpty { (isErr ? errLines : lines).ended.withLock { $0 = true }; break }
                    buffer.append(d)
                    while let nl = buffer.firstIndex(of: 10) {
                        let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                        buffer = Data(buffer[(nl + 1)...])
                        if isErr { errLines.withLock { $0.append(line) } } else { lines.withLock { $0.append(line) } }
                    }
                }
            }
        }
        try p.run()
        collect(out.fileHandleForReading, false)
        collect(err.fileHandleForReading, true)
    }

    var stdout: [String] { lines.withLock { $0 } }
    var stderr: [String] { errLines.withLock { $0 } }
    var pid: Int32 { process.processIdentifier }

    /// Waits for a stdout line starting with `prefix`.
    func waitForLine(_ prefix: String, timeout: Double = 30) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let l = stdout.first(where: { $0.hasPrefix(prefix) }) { return l }
            if !process.isRunning && stdout.first(where: { $0.hasPrefix(prefix) }) == nil {
                throw SigmaTestError("process exited (\(process.terminationStatus)) before printing '\(prefix)': \(stderr.suffix(5))")
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        // (once more at the deadline: a poller starved past it under load had seen the line arrive — 1 stdout line,
        // "listening …", in a failure's own report — without looking)
        if let l = stdout.first(where: { $0.hasPrefix(prefix) }) { return l }
        let reader = lines.ended.withLock { $0 } ? "its stdout had ended" : "its stdout was still being read"
        throw SigmaTestError("no '\(prefix)' line within \(timeout) s (\(stdout.count) stdout lines; \(reader); process \(process.isRunning ? "running" : "exited")); stderr: \(stderr.suffix(5))")
    }

    /// Waits for a stderr line containing `text`.
    func waitForStderr(_ text: String, timeout: Double = 30) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let l = stderr.first(where: { $0.contains(text) }) { return l }
            if !process.isRunning { throw SigmaTestError("process exited (\(process.terminationStatus)) before saying '\(text)': \(stderr.suffix(5))") }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        if let l = stderr.first(where: { $0.contains(text) }) { return l }
        throw SigmaTestError("no stderr line with '\(text)' within \(timeout) s; stderr: \(stderr.suffix(5))")
    }

    /// Waits for exit; returns the status.
    func wait(timeout: Double = 60) async throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                kill(SIGKILL)
                throw SigmaTestError("process did not exit within \(timeout) s")
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        try await Task.sleep(nanoseconds: 50_000_000)   // let the output readers drain
        return process.terminationStatus
    }

    func kill(_ signal: Int32 = SIGTERM) {
        if process.isRunning { Foundation.kill(process.processIdentifier, signal) }
    }

    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

/// A coordinator process on a free loopback port plus worker processes.
/// The data roots of the test clusters' coordinators and workers: the tests' scratch folders lie under the temporary
/// folder, the fixtures and examples under the repository.
let testDataRoots = ["--data-root", FileManager.default.temporaryDirectory.path, "--data-root", repoRoot]

final class ProcessCluster: Sendable {
    let coordinator: SigmaProcess
    let endpoint: String
    let workers = Mutex<[SigmaProcess]>([])
    /// Names of the workers this cluster started (`workerName`): any other worker that joins its coordinator is a
    /// stranger — a worker left running by an earlier test or run whose own coordinator's port this one now has
    /// (workers reconnect forever) — and is drained before the cluster is used, so no shard runs on another build.
    let names = Mutex<Set<String>>([])
    private let tag = String(UUID().uuidString.prefix(4)).lowercased()

    /// The name a worker of this cluster registers under: `short` and the cluster's tag (w1 → w1-3fa2).
    func workerName(_ short: String) -> String { short + "-" + tag }

    /// Registers a worker started by hand under `name` as this cluster's own.
    func adopt(_ name: String) { names.withLock { _ = $0.insert(name) } }

    init(workers n: Int, coordinatorArgs: [String] = []) async throws {
        coordinator = try SigmaProcess(["coordinator", "--port", "0", "--log-level", "info"] + testDataRoots + coordinatorArgs)
        let line = try await coordinator.waitForLine("listening ")
        endpoint = String(line.dropFirst("listening ".count))
        for i in 0..<n { try addWorker("w\(i + 1)") }
    }

    @discardableResult
    func addWorker(_ name: String, threads: Int = 1, logLevel: String = "warning") throws -> SigmaProcess {
        adopt(workerName(name))
        let w = try SigmaProcess(["worker", "--join", endpoint, "--threads", "\(threads)", "--name", workerName(name), "--log-level", logLevel] + testDataRoots)
        workers.withLock { $0.append(w) }
        return w
    }

    /// Whether workers can be started in their own mount namespace (root with CAP_SYS_ADMIN and util-linux's
    /// unshare): tried once on a scratch folder.
    static let canHideFolders: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return false }
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-unshare-probe-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: probe) }
        return runTool("/usr/bin/unshare", ["--mount", "sh", "-c", "mount -t tmpfs sigma-probe '\(probe)'"]).status == 0
    }()

    /// A worker whose cache of shipped inputs is `cache` and which, where `canHideFolders`, runs in its own mount
    /// namespace with an empty tmpfs over `hidden`: the files there are not visible to it. Returns whether it is hidden.
    @discardableResult
    func addWorker(_ name: String, hiding hidden: String, cache: String) throws -> Bool {
        adopt(workerName(name))
        let args = ["worker", "--join", endpoint, "--threads", "1", "--name", workerName(name), "--cache-dir", cache, "--log-level", "warning"]
        guard Self.canHideFolders else {
            let w = try SigmaProcess(args)
            workers.withLock { $0.append(w) }
            return false
        }
        let command = "mount -t tmpfs sigma-hidden '\(hidden)' && exec '\(try sigmaBinary())' " + args.map { "'\($0)'" }.joined(separator: " ")
        let w = try SigmaProcess(["--mount", "sh", "-c", command], executable: "/usr/bin/unshare")
        workers.withLock { $0.append(w) }
        return true
    }

    func stop() {
        for w in workers.withLock({ $0 }) { w.kill(SIGTERM) }
        coordinator.kill(SIGTERM)
    }

    /// Waits until `n` of this cluster's workers are registered and alive (per `sigma status --json`), draining any
    /// stranger (a live worker this cluster did not start) on the way; a stranger is said on stderr.
    /// (60 s: under the whole suite's load three workers once took more than 30 s to register.) A timeout says what
    /// the last status showed and each worker this cluster started: running or not, and its last stderr lines.
    func waitForWorkers(_ n: Int, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        let ours = names.withLock { $0 }
        var seen = "no status answered"
        while Date() < deadline {
            let st = try SigmaProcess(["status", "--coordinator", endpoint, "--json"])
            let code = try await st.wait()
            if code != 0 { seen = "status exited \(code): \(st.stderr.suffix(2))" }
            if code == 0,
               let o = try? JSONSerialization.jsonObject(with: Data(st.stdout.joined(separator: "\n").utf8)) as? [String: Any],
               let ws = o["workers"] as? [[String: Any]] {
                let live = ws.filter { !["dead", "left"].contains($0["state"] as? String ?? "") }
                seen = "the last status listed \(ws.count) workers, \(live.count) live: \(live.map { $0["name"] as? String ?? "?" })"
                let strangers = live.filter { !ours.contains($0["name"] as? String ?? "") }
                for w in strangers {
                    let id = w["id"] as? String ?? "?"
                    FileHandle.standardError.write(Data("test cluster \(endpoint): draining stranger worker \(id) '\(w["name"] as? String ?? "?")' (not started by this cluster)\n".utf8))
                    _ = try? await SigmaProcess(["worker", "--drain", id, "--coordinator", endpoint]).wait()
                }
                if strangers.isEmpty && live.count >= n { return }
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let started = workers.withLock { $0 }.map { w in
            "pid \(w.pid) \(w.process.isRunning ? "running" : "exited \(w.process.terminationStatus)"), stderr \(w.stderr.suffix(3))"
        }
        throw SigmaTestError("\(n) workers did not register within \(timeout) s; \(seen); started: \(started)")
    }
}

/// A tool (ip, tc, tmux, chromium…) run to its end or to a deadline, with `posix_spawn` and `waitpid`.
/// Not Foundation's `Process`: it tells a child's end by a descriptor the child inherits, so a tool that leaves a
/// daemon behind (tmux starts its server, Chromium its crash handler) seems to run forever. Output goes to
/// files, not pipes, for the same reason.
struct ToolRun {
    let pid: pid_t
    let outPath: String, errPath: String
    let deadline: Date
    let timeout: Double
    private var raw: Int32 = 0
    private var killed = false

    init(_ path: String, _ args: [String], timeout: Double) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-tool-\(UUID().uuidString.prefix(8))").path
        outPath = base + ".out"
        errPath = base + ".err"
        self.timeout = timeout
        deadline = Date().addingTimeInterval(timeout)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw SigmaTestError("cannot start \(path): \(String(cString: strerror(rc)))") }
        pid = child
    }

    /// Whether the tool is still running; past the deadline it is killed (and reaped) instead.
    mutating func running() -> Bool {
        guard waitpid(pid, &raw, WNOHANG) == 0 else { return false }
        guard Date() >= deadline else { return true }
        kill(pid, SIGKILL)
        waitpid(pid, &raw, 0)
        killed = true
        return false
    }

    /// After `running()` said false: exit status (or 128 + signal), standard output and standard error.
    func result() -> (status: Int32, out: String, err: String) {
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        let out = String(decoding: FileManager.default.contents(atPath: outPath) ?? Data(), as: UTF8.self)
        var err = String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self)
        if killed { err += "\n(killed: still running after \(timeout) s)" }
        let signal = raw & 0x7f
        return (signal == 0 ? (raw >> 8) & 0xff : 128 + signal, out, err)
    }
}

/// Runs a tool to the end (at most `timeout` seconds, then it is killed): exit status, standard output and
/// standard error. Blocks the calling thread: for quick tools (ip, tc) in synchronous code.
func runTool(_ path: String, _ args: [String], timeout: Double = 60) -> (status: Int32, out: String, err: String) {
    guard var r = try? ToolRun(path, args, timeout: timeout) else { return (-1, "", "cannot start \(path)") }
    while r.running() { usleep(5_000) }
    return r.result()
}

/// `runTool` for async tests: waits with `Task.sleep`, never holding a cooperative thread.
func runToolAsync(_ path: String, _ args: [String], timeout: Double = 60) async -> (status: Int32, out: String, err: String) {
    guard var r = try? ToolRun(path, args, timeout: timeout) else { return (-1, "", "cannot start \(path)") }
    while r.running() { try? await Task.sleep(nanoseconds: 10_000_000) }
    return r.result()
}

/// An in-process client of a coordinator process started by this user on loopback: it presents this user's local
/// token, as every `sigma` command does (docs/security.md).
func localClient(_ endpoint: String) throws -> SigmaClient {
    var o = LinkOptions()
    o.security = .localClient(token: try LocalToken.load(create: false))
    return try SigmaClient(factory: .zmqConnect(endpoint, o), endpoint: endpoint)
}

/// The job id `sigma submit` printed ("job N accepted…", "job N completed…"): the first line of `text` that starts
/// with "job N".
func jobID(in text: String) -> Int? {
    for line in text.split(separator: "\n") where line.hasPrefix("job ") {
        if let id = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) { return id }
    }
    return nil
}

/// The suites that load this 2-core machine most (gigabyte results, ten-kill restarts, many processes) and those whose
/// assertions are timings (a killed worker's shards elsewhere within 5 s): run one after another, never side by side,
/// so one's load does not stretch the other's timings. Other suites still run beside them.
@Suite(.serialized) struct ProcessHeavyTests {}

/// Chromium's `--dump-dom` of a page. Chromium prints an empty document when the page did not load before its
/// `--timeout` (a dashboard slow to answer on a loaded machine): it is asked again, up to three times in all.
func dumpDOM(_ chromium: String, _ flags: [String], _ url: String) async -> String {
    var dom = ""
    for _ in 0..<3 {
        dom = await runToolAsync(chromium, flags + ["--dump-dom", url], timeout: 90).out
        if !dom.contains("<body></body>") && !dom.isEmpty { break }
    }
    return dom
}

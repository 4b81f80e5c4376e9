import Foundation
import Yams

/// `cluster.yaml`: defaults for every command; command-line flags override it.
public struct ClusterConfig: Sendable, Equatable {
    /// Address the coordinator binds (loopback unless told otherwise).
    public var listen = "127.0.0.1"
    /// Port of the coordinator's ROUTER socket (workers and clients).
    public var port = 7700
    /// milliseconds
    public var heartbeatInterval = 1000
    public var liveness = 3
    /// Where workers and clients find the coordinator.
    public var coordinator = "tcp://127.0.0.1:7700"
    /// Compute threads per worker (0: one per core).
    public var workerThreads = 0
    /// Largest payload frame accepted, bytes.
    public var maxFrame = 256 * 1024 * 1024
    /// CURVE: this host's key pair file (`sigma keygen`): the coordinator's own, or a worker's or client's.
    public var keyFile: String? = nil
    /// CURVE, coordinator: the folder of enrolled public keys (`*.pub`) it admits.
    public var allowFolder: String? = nil
    /// CURVE, workers and clients: the coordinator's public key file (when their key file does not name it).
    public var coordinatorKeyFile: String? = nil
    /// Scheduling policy name (checked by the coordinator), hedging, step timeout (seconds; 0: none), dashboard address
    /// and port (nil: the coordinator port + 1).
    public var policy: String? = nil
    /// Bind a non-loopback address without CURVE keys (a trusted network only), like `--insecure`.
    public var insecure = false
    public var hedging = true
    public var stepTimeout: Int? = nil
    public var httpListen = "127.0.0.1"
    public var httpPort: Int? = nil
    /// Host names the dashboard answers besides loopback names and IP addresses (`coordinator.http_hosts`).
    public var httpHosts: [String] = []
    /// The file holding the dashboard's bearer token (`coordinator.http_token_file`; nil: no token).
    public var httpTokenFile: String? = nil
    /// The coordinator's journal folder (`coordinator.state_dir`; nil: the default, docs/operations.md).
    public var stateDir: String? = nil
    /// Finished jobs kept for status and results (`coordinator.keep_jobs`), and the bytes of their results
    /// (`coordinator.keep_result_bytes`); nil: the coordinator's defaults.
    public var keepJobs: Int? = nil
    public var keepResultBytes: UInt64? = nil
    /// Seconds of training between a journaled coordinator's default checkpoints (`coordinator.checkpoint_seconds`).
    public var checkpointSeconds: Double? = nil
    /// `worker.join` as the file gave it (nil: derived from the coordinator's address).
    public var joinGiven: String? = nil
    /// The hosts `sigma up` starts processes on, and how it reaches them.
    public var hosts: [HostEntry] = []
    public var ssh = SSHSettings()
    /// Folders the coordinator and workers read job files from and write checkpoints into (`data_roots`, relative
    /// to the config file's folder; empty: the folder the process started in). `--data-root` replaces them.
    public var dataRoots: [String] = []
    /// Sizes a job spec may ask for (`limits:`).
    public var limits = SpecLimits.standard

    public init() {}

    public static func load(path: String) throws -> ClusterConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SpecError(field: "(file)", problem: "cannot read config file '\(path)'")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path)
    }

    public static func parse(_ text: String, file: String = "cluster.yaml") throws -> ClusterConfig {
        var c = ClusterConfig()
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw SpecError(field: "\(file)", problem: "not valid YAML: \(error)")
        }
        guard let root = node?.mapping else { return c }
        var top = Fields(root, path: "\(file): ")
        if let n = top.take("coordinator") {
            guard let m = n.mapping else { throw SpecError(field: "\(file): coordinator", problem: "expected a mapping") }
            var f = Fields(m, path: "\(file): coordinator.")
            if let v = try f.optionalString("listen") { c.listen = v }
            if let v = try f.optionalUInt("port") {
                guard v <= 65535 else { throw SpecError(field: "\(file): coordinator.port", problem: "must be 0…65535 (0: any free port), got \(v)") }
                c.port = Int(v)
            }
            if let v = try f.optionalString("endpoint") { c.coordinator = v } else { c.coordinator = "tcp://\(c.listen == "0.0.0.0" ? "127.0.0.1" : c.listen):\(c.port)" }
            if let v = try f.optionalUInt("heartbeat_interval_ms") {
                guard v >= 10, v <= 600_000 else { throw SpecError(field: "\(file): coordinator.heartbeat_interval_ms", problem: "must be 10…600000, got \(v)") }
                c.heartbeatInterval = Int(v)
            }
            if let v = try f.optionalUInt("liveness") {
                guard v >= 1, v <= 100 else { throw SpecError(field: "\(file): coordinator.liveness", problem: "must be 1…100, got \(v)") }
                c.liveness = Int(v)
            }
            c.policy = try f.optionalString("policy")
            if let v = try f.optionalString("insecure") {
                guard let b = Bool(v) else { throw SpecError(field: "\(file): coordinator.insecure", problem: "expected true or false, got '\(v)'") }
                c.insecure = b
            }
            if let v = try f.optionalString("hedging") {
                guard let b = Bool(v) else { throw SpecError(field: "\(file): coordinator.hedging", problem: "expected true or false, got '\(v)'") }
                c.hedging = b
            }
            if let v = try f.optionalUInt("step_timeout_s") {
                guard v <= 30 * 86_400 else { throw SpecError(field: "\(file): coordinator.step_timeout_s", problem: "at most 2592000 (30 days), got \(v)") }
                c.stepTimeout = Int(v)
            }
            if let v = try f.optionalString("http_listen") { c.httpListen = v }
            if let v = try f.optionalUInt("http_port") {
                guard v <= 65535 else { throw SpecError(field: "\(file): coordinator.http_port", problem: "must be 0…65535, got \(v)") }
                c.httpPort = Int(v)
            }
            if let n = f.take("http_hosts") {
                guard let seq = n.sequence, let names = Optional(seq.compactMap(\.string)), names.count == seq.count else {
                    throw SpecError(field: "\(file): coordinator.http_hosts", problem: "expected a list of host names such as [sigma.example.com]")
                }
                c.httpHosts = names
            }
            // (relative to the config file's folder, as security: paths are)
            c.httpTokenFile = try f.optionalString("http_token_file").map {
                $0.hasPrefix("/") ? $0 : URL(fileURLWithPath: file).deletingLastPathComponent().path + "/" + $0
            }
            c.stateDir = try f.optionalString("state_dir").map {
                $0.hasPrefix("/") ? $0 : URL(fileURLWithPath: file).deletingLastPathComponent().path + "/" + $0
            }
            if let v = try f.optionalUInt("keep_jobs") {
                guard v >= 1, v <= 1_000_000 else { throw SpecError(field: "\(file): coordinator.keep_jobs", problem: "must be 1…1000000, got \(v)") }
                c.keepJobs = Int(v)
            }
            c.keepResultBytes = try f.optionalUInt("keep_result_bytes")
            if let v = try f.optionalDouble("checkpoint_seconds") {
                guard v.isFinite, v > 0, v <= 1e7 else { throw SpecError(field: "\(file): coordinator.checkpoint_seconds", problem: "must be > 0 (seconds), got \(v)") }
                c.checkpointSeconds = v
            }
            if let v = try f.optionalUInt("max_frame_bytes") {
                guard v >= 1024, v <= 1 << 31 else { throw SpecError(field: "\(file): coordinator.max_frame_bytes", problem: "must be 1024…2^31, got \(v)") }
                c.maxFrame = Int(v)
            }
            try f.rejectUnknown()
        }
        if let n = top.take("worker") {
            guard let m = n.mapping else { throw SpecError(field: "\(file): worker", problem: "expected a mapping") }
            var f = Fields(m, path: "\(file): worker.")
            if let v = try f.optionalUInt("threads") {
                guard v <= 1024 else { throw SpecError(field: "\(file): worker.threads", problem: "at most 1024, got \(v)") }
                c.workerThreads = Int(v)
            }
            if let v = try f.optionalString("join") {
                c.coordinator = v
                c.joinGiven = v
            }
            try f.rejectUnknown()
        }
        if let n = top.take("hosts") {
            guard let seq = n.sequence else { throw SpecError(field: "\(file): hosts", problem: "expected a list of {host, coordinator, workers, key}") }
            for (i, item) in seq.enumerated() {
                let at = "\(file): hosts[\(i)]"
                guard let m = item.mapping else { throw SpecError(field: at, problem: "expected a mapping such as {host: 10.0.0.6, workers: 2}") }
                var f = Fields(m, path: at + ".")
                var h = HostEntry(host: try f.string("host"))
                if let v = try f.optionalString("coordinator") {
                    guard let b = Bool(v) else { throw SpecError(field: at + ".coordinator", problem: "expected true or false, got '\(v)'") }
                    h.coordinator = b
                }
                if let v = try f.optionalUInt("workers") {
                    guard v <= 256 else { throw SpecError(field: at + ".workers", problem: "at most 256, got \(v)") }
                    h.workers = Int(v)
                }
                h.key = try f.optionalString("key")
                try f.rejectUnknown()
                c.hosts.append(h)
            }
        }
        if let n = top.take("ssh") {
            guard let m = n.mapping else { throw SpecError(field: "\(file): ssh", problem: "expected a mapping") }
            var f = Fields(m, path: "\(file): ssh.")
            if let cmd = f.take("command") {
                guard let seq = cmd.sequence, !seq.isEmpty else { throw SpecError(field: "\(file): ssh.command", problem: "expected a list such as [ssh, -o, BatchMode=yes]") }
                c.ssh.command = try seq.map {
                    guard let s = $0.string else { throw SpecError(field: "\(file): ssh.command", problem: "every item must be a string") }
                    return s
                }
            }
            if let v = try f.optionalUInt("port") {
                guard v >= 1, v <= 65535 else { throw SpecError(field: "\(file): ssh.port", problem: "must be 1…65535, got \(v)") }
                c.ssh.port = Int(v)
            }
            if let v = try f.optionalString("binary") { c.ssh.binary = v }
            if let v = try f.optionalString("run_dir") { c.ssh.runDirectory = v }
            try f.rejectUnknown()
        }
        if let n = top.take("security") {
            guard let m = n.mapping else { throw SpecError(field: "\(file): security", problem: "expected a mapping") }
            var f = Fields(m, path: "\(file): security.")
            // Relative paths are relative to the config file's folder.
            let base = URL(fileURLWithPath: file).deletingLastPathComponent().path
            func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : base + "/" + p }
            c.keyFile = try f.optionalString("key").map(resolve)
            c.allowFolder = try f.optionalString("allow").map(resolve)
            c.coordinatorKeyFile = try f.optionalString("coordinator_key").map(resolve)
            try f.rejectUnknown()
        }
        if let n = top.take("data_roots") {
            let base = URL(fileURLWithPath: file).deletingLastPathComponent().path
            guard let seq = n.sequence, !seq.isEmpty else { throw SpecError(field: "\(file): data_roots", problem: "expected a list of folders such as [/srv/data, jobs]") }
            c.dataRoots = try seq.map {
                guard let s = $0.string, !s.isEmpty else { throw SpecError(field: "\(file): data_roots", problem: "every item must be a folder path") }
                return s.hasPrefix("/") ? s : base + "/" + s
            }
        }
        if let n = top.take("limits") {
            guard let m = n.mapping else { throw SpecError(field: "\(file): limits", problem: "expected a mapping") }
            var f = Fields(m, path: "\(file): limits.")
            let ceiling = SpecLimits.ceiling
            func limit(_ key: String, _ most: UInt64) throws -> UInt64? {
                guard let v = try f.optionalUInt(key) else { return nil }
                guard v >= 1, v <= most else { throw SpecError(field: "\(file): limits.\(key)", problem: "must be 1…\(most), got \(v)") }
                return v
            }
            if let v = try limit("shards", UInt64(ceiling.shards)) { c.limits.shards = Int(v) }
            if let v = try limit("histogram_bins", UInt64(ceiling.histogramBins)) { c.limits.histogramBins = Int(v) }
            if let v = try limit("rows", ceiling.rows) { c.limits.rows = v }
            if let v = try limit("layers", UInt64(ceiling.layers)) { c.limits.layers = Int(v) }
            if let v = try limit("width", UInt64(ceiling.width)) { c.limits.width = Int(v) }
            if let v = try limit("parameters", UInt64(ceiling.parameters)) { c.limits.parameters = Int(v) }
            if let v = try limit("memory_bytes", ceiling.memoryBytes) { c.limits.memoryBytes = v }
            try f.rejectUnknown()
        }
        try top.rejectUnknown()
        return c
    }
}

import Foundation

/// One host of `cluster.yaml`'s `hosts:` list, for `sigma up` / `sigma down`.
public struct HostEntry: Sendable, Equatable {
    /// The SSH destination: `host` or `user@host`.
    public var host: String
    /// Whether this host runs the coordinator (exactly one does).
    public var coordinator = false
    /// `sigma worker` processes on this host.
    public var workers = 0
    /// This host's CURVE key pair file, on that host (workers; the coordinator uses `security.key`).
    public var key: String? = nil

    public init(host: String, coordinator: Bool = false, workers: Int = 0, key: String? = nil) {
        self.host = host
        self.coordinator = coordinator
        self.workers = workers
        self.key = key
    }

    /// The address part of the destination (`user@host` → `host`).
    public var address: String { host.split(separator: "@").last.map(String.init) ?? host }
}

/// How `sigma up` / `sigma down` reach the hosts (`ssh:` in cluster.yaml).
public struct SSHSettings: Sendable, Equatable {
    /// The ssh client and its extra arguments (e.g. `-i key`, `-o BatchMode=yes`).
    public var command = ["ssh", "-o", "BatchMode=yes"]
    public var port: Int? = nil
    /// `sigma`'s path on the hosts.
    public var binary = "sigma"
    /// Where pid files and logs go on each host.
    public var runDirectory = "/tmp/sigma-cluster"
    public init() {}
}

/// What `sigma up` and `sigma down` run on each host: pure, so the commands (and their quoting) are tested
/// without a network.
public enum DeployPlan {
    public struct Step: Sendable, Equatable, CustomStringConvertible {
        /// `host (what): the command line`, as `--dry-run` prints it.
        public var description: String { "\(host) (\(what)): \(argv.map(DeployPlan.quote).joined(separator: " "))" }
        public var host: String
        /// What the step does, for the report (`coordinator`, `worker host-2`, `stop`).
        public var what: String
        /// The local argv: ssh, its options, the destination and one remote shell command.
        public var argv: [String]
    }

    /// A word quoted for a POSIX shell: safe whatever it holds.
    public static func quote(_ s: String) -> String {
        if !s.isEmpty && s.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_./:=@,+".unicodeScalars.contains($0)) }) {
            return s
        }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func ssh(_ c: ClusterConfig, _ host: String, _ remote: String) -> [String] {
        c.ssh.command + (c.ssh.port.map { ["-p", "\($0)"] } ?? []) + ["--", host, remote]
    }

    /// A remote command starting `args` in the background under `name`: its pid and log in the run directory.
    /// Refuses (exit 3) if a process started under that name is still alive.
    static func start(_ c: ClusterConfig, name: String, args: [String]) -> String {
        let dir = quote(c.ssh.runDirectory), pid = "\(dir)/\(name).pid", log = "\(dir)/\(name).log"
        let cmd = ([c.ssh.binary] + args).map(quote).joined(separator: " ")
        return "mkdir -p \(dir) && if [ -f \(pid) ] && kill -0 \"$(cat \(pid))\" 2>/dev/null; then echo \"\(name) already running (pid $(cat \(pid)))\"; exit 3; fi; "
            + "nohup \(cmd) > \(log) 2>&1 < /dev/null & echo $! > \(pid); sleep 0.3; "
            + "if kill -0 \"$(cat \(pid))\" 2>/dev/null; then echo \"\(name) started (pid $(cat \(pid)))\"; else echo \"\(name) exited at once:\"; tail -5 \(log); exit 4; fi"
    }

    /// The coordinator's endpoint for workers and clients: `worker.join` if set in the file, else its host and port.
    public static func endpoint(_ c: ClusterConfig) -> String? {
        if let j = c.joinGiven { return j }
        guard let h = c.hosts.first(where: { $0.coordinator }) else { return nil }
        return "tcp://\(h.address):\(c.port)"
    }

    /// Problems that make the hosts list unusable, each naming the entry.
    public static func check(_ c: ClusterConfig) -> [String] {
        var out: [String] = []
        if c.hosts.isEmpty { out.append("cluster.yaml has no 'hosts:' list (sigma up starts the processes it names)") }
        let coordinators = c.hosts.filter { $0.coordinator }
        if coordinators.count != 1 { out.append("exactly one host must have 'coordinator: true', found \(coordinators.count)") }
        if c.hosts.reduce(0, { $0 + $1.workers }) == 0 { out.append("no host has 'workers: N' with N ≥ 1") }
        for (i, h) in c.hosts.enumerated() where h.host.isEmpty || h.host.hasPrefix("-") {
            out.append("hosts[\(i)].host '\(h.host)' is not an SSH destination")
        }
        // A coordinator bound to loopback is out of reach of workers on other hosts.
        func loopback(_ a: String) -> Bool { a == "localhost" || a == "::1" || a.hasPrefix("127.") }
        if loopback(c.listen), c.joinGiven == nil, let head = coordinators.first,
           let far = c.hosts.first(where: { $0.workers > 0 && $0.address != head.address && !(loopback($0.address) && loopback(head.address)) }) {
            out.append("coordinator.listen is \(c.listen), out of reach of the workers on \(far.address): set coordinator.listen to the coordinator host's address (a non-loopback address needs security keys or --insecure)")
        }
        return out
    }

    /// Coordinator first, then each host's workers (named `<host address>-<n>`).
    public static func up(_ c: ClusterConfig) -> [Step] {
        var steps: [Step] = []
        guard let join = endpoint(c) else { return [] }
        if let h = c.hosts.first(where: { $0.coordinator }) {
            var args = ["coordinator", "--listen", c.listen, "--port", "\(c.port)", "--log-level", "info"]
            if let k = c.keyFile { args += ["--key", k] }
            if let a = c.allowFolder { args += ["--allow", a] }
            if c.insecure { args.append("--insecure") }
            args += c.dataRoots.flatMap { ["--data-root", $0] }
            steps.append(Step(host: h.host, what: "coordinator", argv: ssh(c, h.host, start(c, name: "coordinator", args: args))))
        }
        for h in c.hosts {
            for n in 0..<h.workers {
                let name = String(h.address.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }) + "-\(n + 1)"
                var args = ["worker", "--join", join, "--name", name, "--log-level", "info"]
                if c.workerThreads > 0 { args += ["--threads", "\(c.workerThreads)"] }
                if let k = h.key { args += ["--key", k] }
                if let ck = c.coordinatorKeyFile { args += ["--coordinator-key", ck] }
                if c.insecure && h.key == nil { args.append("--insecure") }   // (a coordinator without keys or token)
                args += c.dataRoots.flatMap { ["--data-root", $0] }
                steps.append(Step(host: h.host, what: "worker \(name)", argv: ssh(c, h.host, start(c, name: "worker-\(name)", args: args))))
            }
        }
        return steps
    }

    /// Workers' hosts first, then the coordinator's: on each, every process `sigma up` started there gets SIGTERM,
    /// a second after 10 s (workers drain, then leave at once), then SIGKILL after 15 s.
    public static func down(_ c: ClusterConfig) -> [Step] {
        let dir = quote(c.ssh.runDirectory)
        func stop(_ pattern: String) -> String {
            "cd \(dir) 2>/dev/null || exit 0; for f in \(pattern); do [ -f \"$f\" ] || continue; p=$(cat \"$f\"); "
                + "if kill -0 \"$p\" 2>/dev/null && grep -q sigma /proc/\"$p\"/cmdline 2>/dev/null; then kill -TERM \"$p\"; "
                + "i=0; while kill -0 \"$p\" 2>/dev/null && [ $i -lt 150 ]; do [ $i = 100 ] && kill -TERM \"$p\"; sleep 0.1; i=$((i+1)); done; "
                + "kill -0 \"$p\" 2>/dev/null && kill -KILL \"$p\"; echo \"${f%.pid} stopped (pid $p)\"; "
                + "else echo \"${f%.pid} was not running\"; fi; rm -f \"$f\"; done"
        }
        var steps: [Step] = []
        var seen = Set<String>()
        for h in c.hosts where h.workers > 0 && seen.insert(h.host).inserted {
            steps.append(Step(host: h.host, what: "stop workers", argv: ssh(c, h.host, stop("worker-*.pid"))))
        }
        if let h = c.hosts.first(where: { $0.coordinator }) {
            steps.append(Step(host: h.host, what: "stop coordinator", argv: ssh(c, h.host, stop("coordinator.pid"))))
        }
        return steps
    }
}

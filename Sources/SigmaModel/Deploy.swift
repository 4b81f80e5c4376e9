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
    /// Where pid files and logs go on each host; a leading `~/` is that host's home. Made 0700; refused when another
    /// user owns it or group or others may write to it.
    public var runDirectory = "~/.local/state/sigma/cluster"
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

    /// Shell words that set `d` to the run directory: a leading `~/` is the remote user's home.
    static func runDirectory(_ c: ClusterConfig) -> String {
        let dir = c.ssh.runDirectory
        if dir == "~" { return "d=\"$HOME\"" }
        if dir.hasPrefix("~/") { return "d=\"$HOME\"/" + quote(String(dir.dropFirst(2))) }
        return "d=" + quote(dir)
    }

    /// A remote script prologue: `d` is the run directory, made (mode 0700) when `create`, else the step ends (exit 0)
    /// when there is none; refused (exit 5) unless it is a real directory owned by this user that neither group nor
    /// others may write (else anyone could plant a pid file naming a process for `down` to signal). Defines
    /// `ours FILE`: true when the pid file's process is alive and still the one it records (pid, start time — field 22
    /// of /proc/PID/stat — and executable; an executable replaced on disk since counts as the same).
    static func prologue(_ c: ClusterConfig, create: Bool) -> String {
        runDirectory(c) + "; "
            + (create ? "mkdir -p -m 700 \"$d\" || exit 5; " : "[ -e \"$d\" ] || exit 0; ")
            + "if [ -L \"$d\" ] || [ ! -d \"$d\" ]; then echo \"refusing run directory $d: not a directory (or a symbolic link)\"; exit 5; fi; "
            + "set -- $(stat -c '%u %a' \"$d\"); "
            + "if [ \"$1\" != \"$(id -u)\" ]; then echo \"refusing run directory $d: owned by uid $1, not by this user (uid $(id -u))\"; exit 5; fi; "
            + "if [ $((0$2 & 022)) != 0 ]; then echo \"refusing run directory $d: group or others may write to it (mode $2); run: chmod 700 '$d'\"; exit 5; fi; "
            + "started() { sed 's/.*) //' /proc/\"$1\"/stat 2>/dev/null | cut -d' ' -f20; }; "
            + "exe() { x=$(readlink /proc/\"$1\"/exe 2>/dev/null) && echo \"${x% (deleted)}\"; }; "
            + "ours() { read -r p t e < \"$1\" 2>/dev/null && [ -n \"$e\" ] && [ \"$(started \"$p\")\" = \"$t\" ] && [ \"$(exe \"$p\")\" = \"$e\" ]; }; "
    }

    /// A remote command starting `args` in the background under `name`: its pid file (`PID START-TIME EXECUTABLE`)
    /// and log in the run directory. Refuses (exit 3) if the process a pid file of that name records is still alive.
    static func start(_ c: ClusterConfig, name: String, args: [String]) -> String {
        let pid = "\"$d\"/\(name).pid", log = "\"$d\"/\(name).log"
        let cmd = ([c.ssh.binary] + args).map(quote).joined(separator: " ")
        return prologue(c, create: true)
            + "if ours \(pid); then echo \"\(name) already running (pid $p)\"; exit 3; fi; "
            + "nohup \(cmd) > \(log) 2>&1 < /dev/null & p=$!; "
            // (until the child has exec'd: before, /proc/PID/exe is this shell's or nohup's)
            + "s=$(exe $$); n=$(readlink -f \"$(command -v nohup)\"); i=0; "
            + "while e=$(exe $p) && { [ \"$e\" = \"$s\" ] || [ \"$e\" = \"$n\" ]; } && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; sleep 0.3; "
            + "if kill -0 $p 2>/dev/null; then echo \"$p $(started $p) $(exe $p)\" > \(pid); echo \"\(name) started (pid $p)\"; "
            + "else echo \"\(name) exited at once:\"; tail -5 \(log); exit 4; fi"
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
            if let s = c.stateDir { args += ["--state-dir", s] }
            args += c.dataRoots.flatMap { ["--data-root", $0] }
            steps.append(Step(host: h.host, what: "coordinator", argv: ssh(c, h.host, start(c, name: "coordinator", args: args))))
        }
        for h in c.hosts {
            for n in 0..<h.workers {
                let name = String(h.address.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }) + "-\(n + 1)"
                var args = ["worker", "--coordinator", join, "--name", name, "--log-level", "info"]
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

    /// Workers' hosts first, then the coordinator's: on each, every process `sigma up` started there that is still the
    /// one its pid file records (pid, start time, executable) gets SIGTERM, a second after 10 s (workers drain, then
    /// leave at once), then SIGKILL after 15 s. Any other process is left alone, whatever its command line.
    public static func down(_ c: ClusterConfig) -> [Step] {
        func stop(_ pattern: String) -> String {
            prologue(c, create: false)
                + "cd \"$d\" || exit 0; for f in \(pattern); do [ -f \"$f\" ] || continue; "
                + "if ours \"$f\"; then kill -TERM \"$p\"; "
                + "i=0; while kill -0 \"$p\" 2>/dev/null && [ $i -lt 150 ]; do [ $i = 100 ] && kill -TERM \"$p\"; sleep 0.1; i=$((i+1)); done; "
                + "kill -0 \"$p\" 2>/dev/null && kill -KILL \"$p\"; echo \"${f%.pid} stopped (pid $p)\"; "
                + "elif [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then echo \"${f%.pid} was not running (pid $p is another process now: left alone)\"; "
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

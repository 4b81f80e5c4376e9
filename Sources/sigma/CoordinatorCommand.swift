import ArgumentParser
import Foundation
import SigmaCoordinatorCore
import Logging
import SigmaCoordinator
import SigmaDashboard
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run a coordinator: accepts workers and jobs on one ZeroMQ ROUTER endpoint.",
        discussion: """
        Example:
          sigma coordinator                  # tcp://127.0.0.1:7700 (loopback only)
          sigma coordinator --listen 0.0.0.0 --key keys/coordinator.key \\
                            --allow keys/allowed
          sigma coordinator --listen 10.0.0.5 --insecure   # trusted network only
        With --key every connection is encrypted (CurveZMQ) and only workers and
        clients whose public key is in the --allow folder get in, each with the
        role its .pub file names (worker, client, admin); `sigma keygen` makes
        keys (docs/security.md). Without keys the coordinator binds loopback
        only and admits only processes of its own user (they read the local
        token in ~/.local/state/sigma), unless --insecure. The web dashboard
        likewise: another --http-listen address needs --http-token-file FILE
        (or --insecure).
        Job specs may name files only under the data roots (--data-root, default:
        the current folder); the sizes they ask for are bounded by cluster.yaml
        limits: (docs/jobs.md, "Data roots and limits").
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var data: DataRootOptions
    @Option(help: "Address to bind: ADDRESS, tcp://ADDRESS:PORT or a port (default 127.0.0.1; from cluster.yaml coordinator.listen).") var listen: String?
    @Option(help: "Port to bind (default 7700; 0 picks a free port).") var port: Int?
    @Option(help: "Heartbeat interval in milliseconds (default 1000).") var heartbeatMs: Int?
    @Option(help: "Missed heartbeats before a worker is declared dead (default 3).") var liveness: Int?
    @Option(help: "Scheduling policy: latency-aware (default), least-loaded, round-robin (default: coordinator.policy).") var policy: String?
    @Flag(help: "Turn off hedged (backup) copies of late shards.") var noHedging = false
    @Flag(help: "Have the coordinator reduce every training step itself, never the workers among themselves (collective steps need workers that reach each other's peer ports).") var noCollectiveSteps = false
    @Option(help: "Fewest workers that reduce a training step among themselves when all of them share this coordinator's machine (default 3): with fewer the coordinator reduces, as its path through shared memory copies nothing there.") var sameMachineCollectiveFrom: Int?
    @Option(help: "Seconds a step (or a whole single-round job) may take before it fails naming the missing shards (default 3600; 0: no limit).") var stepTimeout: Int?
    @Flag(help: "Allow binding a non-loopback address without encryption.") var insecure = false
    @Option(help: "The coordinator's CURVE key pair file from `sigma keygen coordinator` (default: cluster.yaml security.key; none: no encryption).") var key: String?
    @Option(help: "With --key: folder of enrolled public keys (*.pub) of workers and clients; re-read when it changes (default: security.allow).") var allow: String?
    @Option(help: "Web dashboard and /metrics address (default 127.0.0.1, or coordinator.http_listen; another address needs --http-token-file or --insecure).") var httpListen: String?
    @Option(help: "Web dashboard port (default: the coordinator port + 1; 0 picks a free port).") var httpPort: Int?
    @Option(help: ArgumentHelp("A host name the dashboard answers to besides loopback names and IP addresses (repeatable; also coordinator.http_hosts).",
                               valueName: "name")) var httpHost: [String] = []
    @Option(help: ArgumentHelp("File (mode 0600) holding a token every dashboard and /metrics request must carry as `Authorization: Bearer TOKEN` (default: coordinator.http_token_file).",
                               valueName: "file")) var httpTokenFile: String?
    @Flag(help: "Serve no web dashboard or /metrics.") var noHttp = false
    @Option(help: "Folder of the journal that lets a restarted coordinator resume its jobs (default: coordinator.state_dir, else coordinator-PORT in the user's state folder; with --port 0 none unless given).") var stateDir: String?
    @Flag(help: "Keep no journal: a restart forgets every job.") var noJournal = false

    func run() async throws {
        common.bootstrapLogging()
        let logger = Logger(label: "sigma.coordinator")
        do {
            let cfg = try common.load()
            // (--listen takes an address, tcp://ADDRESS:PORT or a port; a port in it must agree with --port)
            let listened: (host: String, port: Int?)
            do { listened = try Endpoint.components(listen ?? cfg.listen, field: listen == nil ? "coordinator.listen" : "--listen", bind: true) } catch let e as SpecError {
                throw CLIError.usage("\(e.field): \(e.problem)")
            }
            if let a = listened.port, let b = port, a != b { throw CLIError.usage("--listen says port \(a) and --port says \(b); give one") }
            let address = listened.host
            let p = port ?? listened.port ?? cfg.port
            guard (0...65535).contains(p) else { throw CLIError.usage("--port must be 0…65535, got \(p)") }
            var security = try serverSecurity(cfg, logger: logger)
            if let problem = BindPolicy.check(address: address, encrypted: security != nil, insecure: insecure || cfg.insecure) {
                throw CLIError.usage(problem)
            }
            // Without keys on loopback: only this user's processes get in (they hold the local token).
            if security == nil, !(insecure || cfg.insecure) {
                security = try localSecurity(logger: logger)
            }
            let access = try dashboardAccess(cfg)
            var options = CoordinatorShell.Options()
            options.core.heartbeatInterval = UInt64(heartbeatMs ?? cfg.heartbeatInterval) * 1_000_000
            options.core.liveness = liveness ?? cfg.liveness
            if let p = policy ?? cfg.policy {
                do { options.core.policy = try SchedulingPolicy.parse(p) } catch let e as SpecError {
                    throw CLIError.usage("\(policy == nil ? "coordinator.policy in the config" : "--policy"): \(e.problem)")
                }
            }
            if noHedging || !cfg.hedging { options.core.hedging = false }
            if noCollectiveSteps { options.core.collectiveSteps = false }
            if let n = sameMachineCollectiveFrom {
                guard n >= 2 else { throw CLIError.usage("--same-machine-collective-from must be ≥ 2 (a collective step needs two workers), got \(n)") }
                options.core.sameMachineCollectiveFrom = n
            }
            if let t = stepTimeout ?? cfg.stepTimeout {
                guard t >= 0 else { throw CLIError.usage("--step-timeout must be ≥ 0, got \(t)") }
                options.core.stepTimeout = UInt64(t) * 1_000_000_000
            }
            options.limits.maxPayload = cfg.maxFrame
            options.dataRoots = try data.roots(cfg)
            options.core.specLimits = cfg.limits
            if let n = cfg.keepJobs { options.core.keepFinishedJobs = n }
            if let b = cfg.keepResultBytes { options.core.keepResultBytes = b }
            if let t = cfg.checkpointSeconds { options.checkpointSeconds = t }
            if !noJournal {
                // (a coordinator on a port picked at random has no address to be restarted at: journaled only when asked)
                options.stateDirectory = stateDir ?? cfg.stateDir ?? (p == 0 ? nil : LocalToken.folder() + "/coordinator-\(p)")
            }
            guard options.core.heartbeatInterval >= 10_000_000 else { throw CLIError.usage("--heartbeat-ms must be ≥ 10") }
            guard options.core.liveness >= 1 else { throw CLIError.usage("--liveness must be ≥ 1") }
            var link = LinkOptions()
            link.maxFrame = cfg.maxFrame
            link.security = security
            let shell: CoordinatorShell
            do {
                shell = try CoordinatorShell(.zmqBind("tcp://\(address == "localhost" ? "127.0.0.1" : address):\(p)", link),
                                             options: options, logger: logger)
            } catch let e as JournalError {
                throw CLIError.usage("\(e)")
            } catch {
                throw CLIError.usage("\(error) (is another coordinator running? pick another --port)")
            }
            let admits = switch security {
            case .server?: "CURVE: enrolled keys only, each with its role"
            case .localServer?: "no encryption, loopback: this user's processes only (local token in \(LocalToken.folder()))"
            default: "no encryption, no authentication (--insecure): every peer may do everything"
            }
            logger.info("data roots: \(options.dataRoots)")
            logger.info("coordinator listening on \(shell.endpoint) (libzmq \(ZContext.libraryVersion)), \(admits)")
            // Machine-readable line for scripts and tests that asked for port 0.
            print("listening \(shell.endpoint)")
            fflush(nil)
            var web: Task<Void, Never>? = nil
            if let access {
                let hp = httpPort ?? cfg.httpPort ?? (p == 0 ? 0 : p + 1)
                guard (0...65535).contains(hp) else { throw CLIError.usage("--http-port must be 0…65535, got \(hp)") }
                let host = httpListen ?? cfg.httpListen
                web = Task {
                    do {
                        let source = SecuredSource(shell: shell, zapDomain: {
                            switch security {
                            case .server(_, let d)?, .localServer(let d)?: d
                            default: nil
                            }
                        }())
                        try await Dashboard(source: source, access: access).run(host: host, port: hp) { bound in
                            logger.info("web dashboard on http://\(host):\(bound)/ (metrics: /metrics)")
                            print("dashboard http://\(host):\(bound)/")
                            fflush(nil)
                        }
                    } catch {
                        logger.warning("web dashboard not served: \(error) (pass --http-port, or --no-http)")
                    }
                }
            }
            await waitForTerminationSignal()
            logger.info("coordinator stopping")
            web?.cancel()
            shell.stop()
        } catch {
            exitWith(error)
        }
    }
}

extension CoordinatorCommand {
    /// A loopback coordinator without keys: PLAIN with this user's local token (made on first use), checked by the
    /// process's ZAP handler; processes of other users cannot read the token, so they are refused.
    func localSecurity(logger: Logger) throws -> LinkSecurity {
        do {
            let token = try LocalToken.load(create: true)
            let domain = try ZAPService.shared.register(.token(token)) { d in
                if !d.admitted { logger.warning("\(d.note)") }
            }
            return .localServer(domain: domain)
        } catch let e as KeyFileError {
            throw CLIError.usage("\(e)")
        }
    }

    /// Who may read the dashboard: its token (from --http-token-file), host names (--http-host and cluster.yaml, plus
    /// a named --http-listen address), and whether it may listen where it was told to. Nil with --no-http.
    func dashboardAccess(_ cfg: ClusterConfig) throws -> DashboardAccess? {
        guard !noHttp else { return nil }
        let tokenPath = httpTokenFile ?? cfg.httpTokenFile
        let token: String?
        do { token = try tokenPath.map(DashboardAccess.token(file:)) } catch let e as DashboardError { throw CLIError.usage("\(e)") }
        let host = httpListen ?? cfg.httpListen
        if let problem = DashboardAccess.bindProblem(address: host, token: token != nil, insecure: insecure || cfg.insecure) {
            throw CLIError.usage(problem)
        }
        for name in cfg.httpHosts + httpHost where DashboardAccess.hostName(name) == nil {
            throw CLIError.usage("--http-host / coordinator.http_hosts: '\(name)' is not a host name")
        }
        return DashboardAccess(hosts: cfg.httpHosts + httpHost + [host], token: token)
    }

    /// The coordinator's CURVE settings from --key/--allow or cluster.yaml; nil: plain. Registers the allow list
    /// with the process's ZAP handler, which logs every refusal.
    func serverSecurity(_ cfg: ClusterConfig, logger: Logger) throws -> LinkSecurity? {
        let keyPath = key ?? cfg.keyFile
        let allowPath = allow ?? cfg.allowFolder
        guard let keyPath else {
            if let a = allowPath { throw CLIError.usage("--allow \(a) needs --key: the coordinator's key pair (make one with: sigma keygen coordinator)") }
            return nil
        }
        guard let allowPath else {
            throw CLIError.usage("--key needs --allow FOLDER: the enrolled public keys (*.pub) of the workers and clients to admit")
        }
        guard ZContext.hasCurve else { throw CLIError.usage("this libzmq has no CURVE support (Debian's libzmq5 has it)") }
        do {
            let k = try CurveKeyFile.load(path: keyPath, secret: true)
            let (_, secret) = try Curve.verified(k, file: keyPath)
            let list = try AllowList(folder: allowPath)
            let n = list.refresh()
            for s in list.skipped { logger.warning("allow folder: \(s)") }
            logger.info("CURVE: \(n) enrolled key(s) in \(allowPath)")
            let domain = try ZAPService.shared.register(list) { d in
                if d.admitted { logger.info("\(d.note)") } else { logger.warning("\(d.note)") }
            }
            return .server(secretKey: secret, domain: domain)
        } catch let e as KeyFileError {
            throw CLIError.usage("\(e)")
        }
    }
}

/// Where the coordinator may bind: loopback always; any other address only with CURVE keys, or when told
/// `--insecure`.
enum BindPolicy {
    static func check(address: String, encrypted: Bool, insecure: Bool) -> String? {
        let loopback = address == "127.0.0.1" || address == "localhost" || address == "::1" || address.hasPrefix("127.")
        if loopback || encrypted || insecure { return nil }
        return "refusing to bind \(address) without encryption: pass --key coordinator.key --allow FOLDER (sigma keygen makes keys), or --insecure on a trusted network"
    }
}

/// Suspends until SIGINT or SIGTERM arrives.
func waitForTerminationSignal() async {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let box = SignalSources()
    await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
        box.install(k)
    }
}

final class SignalSources: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private var resumed = false
    private let lock = NSLock()

    func install(_ k: CheckedContinuation<Void, Never>) {
        for sig in [SIGINT, SIGTERM] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [self] in
                lock.lock()
                defer { lock.unlock() }
                if !resumed {
                    resumed = true
                    k.resume()
                }
            }
            s.resume()
            sources.append(s)
        }
    }
}

extension CoordinatorShell: DashboardSource {
    public func snapshot() -> ClusterStatus? { status }
    public func deployments() -> [DeploymentStatus] { deploymentsSnapshot }
    public func call(_ make: (UInt64) -> Message) async -> Message { await localCall(make) }
    public func withdraw(request: UInt64) { localWithdraw(request) }
}

/// The coordinator as the dashboard sees it, with its CURVE handshake counts when it has keys.
struct SecuredSource: DashboardSource {
    let shell: CoordinatorShell
    let zapDomain: String?
    func snapshot() -> ClusterStatus? { shell.status }
    func jobDetail(_ id: JobID) async -> JobDetail? { await shell.jobDetail(id) }
    func takeSamples() -> CoordinatorSamples { shell.takeSamples() }
    func handshakes() -> (admitted: UInt64, refused: UInt64)? { zapDomain.map { ZAPService.shared.handshakes($0) } }
    func deployments() -> [DeploymentStatus] { shell.deploymentsSnapshot }
    func call(_ make: (UInt64) -> Message) async -> Message { await shell.localCall(make) }
    func withdraw(request: UInt64) { shell.localWithdraw(request) }
}

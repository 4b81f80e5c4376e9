import ArgumentParser
import Foundation
import SigmaCoordinatorCore
import Logging
import SigmaCoordinator
import SigmaDashboard
import SigmaModel
import SigmaProtocol
import SigmaTransport

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run a coordinator: accepts workers and jobs on one ZeroMQ ROUTER endpoint.",
        discussion: """
        Example:
          sigma coordinator                         # tcp://127.0.0.1:7700 (loopback only)
          sigma coordinator --listen 10.0.0.5 --port 7700 --insecure
        Binding anything but loopback needs --insecure until CURVE keys are supported (see docs/operations.md).
        """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Address to bind (default 127.0.0.1; from cluster.yaml coordinator.listen).") var listen: String?
    @Option(help: "Port to bind (default 7700; 0 picks a free port).") var port: Int?
    @Option(help: "Heartbeat interval in milliseconds (default 1000).") var heartbeatMs: Int?
    @Option(help: "Missed heartbeats before a worker is declared dead (default 3).") var liveness: Int?
    @Option(help: "Scheduling policy: latency-aware (default), least-loaded, round-robin.") var policy: String?
    @Flag(help: "Turn off hedged (backup) copies of late shards.") var noHedging = false
    @Option(help: "Seconds a step (or a whole single-round job) may take before it fails naming the missing shards (default 3600; 0: no limit).") var stepTimeout: Int?
    @Flag(help: "Allow binding a non-loopback address without encryption.") var insecure = false
    @Option(help: "Web dashboard and /metrics address (default 127.0.0.1; the dashboard binds loopback unless told otherwise).") var httpListen: String = "127.0.0.1"
    @Option(help: "Web dashboard port (default: the coordinator port + 1; 0 picks a free port).") var httpPort: Int?
    @Flag(help: "Serve no web dashboard or /metrics.") var noHttp = false

    func run() async throws {
        common.bootstrapLogging()
        let logger = Logger(label: "sigma.coordinator")
        do {
            let cfg = try common.load()
            let address = listen ?? cfg.listen
            let p = port ?? cfg.port
            guard (0...65535).contains(p) else { throw CLIError.usage("--port must be 0…65535, got \(p)") }
            let loopback = address == "127.0.0.1" || address == "localhost" || address == "::1"
            if !loopback && !insecure {
                throw CLIError.usage("refusing to bind \(address) without encryption: CURVE keys are not supported yet; pass --insecure to bind anyway on a trusted network")
            }
            var options = CoordinatorShell.Options()
            options.core.heartbeatInterval = UInt64(heartbeatMs ?? cfg.heartbeatInterval) * 1_000_000
            options.core.liveness = liveness ?? cfg.liveness
            if let p = policy { options.core.policy = try SchedulingPolicy.parse(p) }
            if noHedging { options.core.hedging = false }
            if let t = stepTimeout {
                guard t >= 0 else { throw CLIError.usage("--step-timeout must be ≥ 0, got \(t)") }
                options.core.stepTimeout = UInt64(t) * 1_000_000_000
            }
            options.limits.maxPayload = cfg.maxFrame
            guard options.core.heartbeatInterval >= 10_000_000 else { throw CLIError.usage("--heartbeat-ms must be ≥ 10") }
            guard options.core.liveness >= 1 else { throw CLIError.usage("--liveness must be ≥ 1") }
            var link = LinkOptions()
            link.maxFrame = cfg.maxFrame
            let shell: CoordinatorShell
            do {
                shell = try CoordinatorShell(.zmqBind("tcp://\(address == "localhost" ? "127.0.0.1" : address):\(p)", link),
                                             options: options, logger: logger)
            } catch {
                throw CLIError.usage("\(error) (is another coordinator running? pick another --port)")
            }
            logger.info("coordinator listening on \(shell.endpoint) (libzmq \(ZContext.libraryVersion))")
            // Machine-readable line for scripts and tests that asked for port 0.
            print("listening \(shell.endpoint)")
            fflush(nil)
            var web: Task<Void, Never>? = nil
            if !noHttp {
                let hp = httpPort ?? (p == 0 ? 0 : p + 1)
                guard (0...65535).contains(hp) else { throw CLIError.usage("--http-port must be 0…65535, got \(hp)") }
                let host = httpListen
                web = Task {
                    do {
                        try await Dashboard(source: shell).run(host: host, port: hp) { bound in
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
}

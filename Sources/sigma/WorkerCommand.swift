import ArgumentParser
import Foundation
import Logging
import SigmaClient
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaTransport
import SigmaWorker
import Synchronization

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker that joins a coordinator and computes shards.",
        discussion: """
        Example:
          sigma worker --coordinator tcp://10.0.0.5:7700 --threads 2
          # let w3 (id or name) finish what it runs and leave:
          sigma worker --drain w3 --coordinator tcp://10.0.0.5:7700
        The worker connects outbound (works behind NAT), reconnects by itself. It also listens for other workers, which send it gradient slices directly in collective training steps (--peer-address, --peer-port). On SIGTERM/SIGINT it drains — finishes the shards it holds, takes no new ones, then leaves; a second signal leaves at once.
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @OptionGroup var data: DataRootOptions
    @Option(name: [.customLong("coordinator"), .customLong("join")],
            help: "Coordinator endpoint, tcp://HOST:PORT (--join is the same; default: $SIGMA_COORDINATOR, else cluster.yaml, else tcp://127.0.0.1:7700).")
    var coordinator: String?
    @Option(help: "Compute threads: cores this worker uses, for several shards at once or one shard's micro-batches and batches in parallel; BLAS runs single-threaded in each (default: every core no other sigma worker on this host holds).") var threads: Int?
    @Option(help: "A name shown in status (default: worker-PID).") var name: String?
    @Option(help: "Where input files shipped by the coordinator are kept, by SHA-256 (jobs with input_transport: coordinator; default: ~/.cache/sigma/inputs).") var cacheDir: String?
    @Option(help: "Most GiB that cache keeps; least recently used files of jobs not running here go first (0: no limit).") var cacheLimitGib: Double = 20
    @Option(help: ArgumentHelp("The address other workers reach this one on for collective training steps, where workers exchange gradients directly (default: the address this host reaches the coordinator from; firewalls must let other workers in).", valueName: "host"))
    var peerAddress: String?
    @Option(help: ArgumentHelp("The port of those worker-to-worker links (default: any free port; give one for a firewall to allow).", valueName: "port"))
    var peerPort: Int?
    @Option(help: "Instead of running a worker: drain the running worker with this id or name (it finishes its shards, takes no new ones, and leaves).") var drain: String?
    @Flag(help: "With --drain: print machine-readable JSON.") var json = false

    func run() async throws {
        if let target = drain {
            do {
                let cfg = try common.load()
                let client = try keys.client(given: coordinator, cfg)
                defer { client.close() }
                let s = try await mapClientError { try await client.drain(worker: target) }
                let w = s.workers.first { $0.id == target } ?? s.workers.first { $0.name == target && $0.state != "dead" }
                if json {
                    print(jsonString(w?.jsonObject ?? [:]))
                } else {
                    let who = "worker \(w?.id ?? target) (\(w?.name ?? target)@\(w?.host ?? "?"))"
                    print(w?.state == "draining" ? "\(who) draining: finishing \(w?.inFlight ?? 0) shard(s), then it leaves" : "\(who) drained and left")
                }
            } catch { exitWith(error) }
            return
        }
        common.bootstrapLogging()
        let logger = Logger(label: "sigma.worker")
        do {
            let cfg = try common.load()
            let endpoint = try coordinatorEndpoint(coordinator, cfg)
            let requested = threads ?? (cfg.workerThreads > 0 ? cfg.workerThreads : nil)
            if let r = requested, r < 1 || r > 1024 { throw CLIError.usage("--threads must be 1…1024, got \(r)") }
            // Never more compute than cores: this worker claims cores no other sigma worker on this host holds, runs
            // one compute thread per core, and BLAS single-threaded inside each (compute threads × BLAS threads ≤ cores).
            let claim = HostCoreClaim(requested: requested)
            defer { withExtendedLifetime(claim) {} }
            if let w = claim.budget.warning { logger.warning("\(w)") }
            let n = claim.budget.threads
            BLASInfo.setThreads(1)
            ComputeLanes.shared.configure(total: n)
            var link = LinkOptions()
            link.maxFrame = cfg.maxFrame
            link.security = try keys.clientSecurity(cfg, endpoint: endpoint)
            // libzmq retries by itself, so a key enrolled later gets in without a restart; say why meanwhile.
            let lastReason = Mutex<(String, UInt64)>(("", 0))
            link.onHandshakeFailure = { reason in
                let now = DispatchTime.now().uptimeNanoseconds
                let say = lastReason.withLock { last in
                    guard last.0 != reason || now - last.1 > 30_000_000_000 else { return false }
                    last = (reason, now)
                    return true
                }
                if say { logger.error("\(reason) (retrying)") }
            }
            var options = WorkerShell.Options(slots: n, name: name ?? "worker-\(getpid())")
            if let d = cacheDir { options.cacheDirectory = d }
            guard cacheLimitGib >= 0, cacheLimitGib.isFinite else { throw CLIError.usage("--cache-limit-gib must be ≥ 0, got \(cacheLimitGib)") }
            options.cacheLimit = UInt64(cacheLimitGib * 1_073_741_824)
            options.dataRoots = try data.roots(cfg)
            options.specLimits = cfg.limits
            if let p = peerPort, !(0...65_535).contains(p) { throw CLIError.usage("--peer-port must be 0…65535, got \(p)") }
            options.peerHost = peerAddress
            options.peerPort = peerPort ?? 0
            let shell = WorkerShell(.zmqConnect(endpoint, link), options: options, logger: logger)
            logger.info("worker joining \(endpoint) with \(n) compute thread(s)")
            // First SIGTERM/SIGINT: drain (finish the shards held, take no new ones, leave); a second: leave now.
            let stopper = Task.detached {
                await waitForTerminationSignal()
                logger.info("draining; send the signal again to leave at once")
                shell.drain()
                await waitForTerminationSignal()
                shell.stop()
            }
            // Wait for the worker to end (signal or fatal refusal) without blocking the cooperative pool.
            while !shell.isStopped { try? await Task.sleep(nanoseconds: 50_000_000) }
            stopper.cancel()
            shell.wait()
            if let f = shell.fatalError { throw CLIError.usage(f) }
        } catch {
            exitWith(error)
        }
    }
}

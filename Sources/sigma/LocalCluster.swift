import Foundation
import Logging
import SigmaClient
import SigmaCoordinator
import SigmaJobs
import SigmaModel
import SigmaTransport

/// An embedded coordinator plus worker processes on loopback: what `sigma demo` and `sigma bench` run.
final class LocalCluster {
    let coordinator: CoordinatorShell
    private(set) var workers: [Process] = []

    /// With `secure`: throw-away CURVE keys (a temporary folder removed at `stop`), every connection encrypted.
    let keys: LocalKeys?
    private var zapDomain: String?
    private var localToken: String?

    /// The data roots of the coordinator and the workers: the current folder, and `dataRoots` (the benchmarks'
    /// scratch folder).
    let dataRoots: [String]

    init(workers n: Int, threadsPerWorker: Int, logger: Logger, coordinatorOptions: CoordinatorShell.Options = .init(),
         secure: Bool = false, dataRoots extra: [String] = []) throws {
        dataRoots = [FileManager.default.currentDirectoryPath] + extra
        var coordinatorOptions = coordinatorOptions
        coordinatorOptions.dataRoots = try DataRoots(dataRoots)
        var link = LinkOptions()
        keys = secure ? try LocalKeys() : nil
        if let k = keys {
            let domain = try ZAPService.shared.register(try AllowList(folder: k.allow)) { d in
                if !d.admitted { logger.warning("\(d.note)") }
            }
            link.security = .server(secretKey: k.coordinator.secretKey, domain: domain)
            zapDomain = domain
        } else {
            // Loopback without keys: this user's processes only (the workers read the same local token).
            let token = try LocalToken.load(create: true)
            let domain = try ZAPService.shared.register(.token(token)) { d in
                if !d.admitted { logger.warning("\(d.note)") }
            }
            link.security = .localServer(domain: domain)
            localToken = token
            zapDomain = domain
        }
        coordinator = try CoordinatorShell(.zmqBind("tcp://127.0.0.1:0", link), options: coordinatorOptions, logger: logger)
        for i in 0..<n { try addWorker(name: "local-\(i + 1)", threads: threadsPerWorker) }
    }

    /// How a client connects to the embedded coordinator: with the cluster's client key when it is secure, else with
    /// this user's local token.
    var clientLinkOptions: LinkOptions {
        var o = LinkOptions()
        if let k = keys { o.security = .client(serverKey: k.coordinator.publicKey, publicKey: k.client.publicKey, secretKey: k.client.secretKey) }
        if let t = localToken { o.security = .localClient(token: t) }
        return o
    }

    /// A client of the embedded coordinator.
    func client() throws -> SigmaClient {
        try SigmaClient(factory: .zmqConnect(coordinator.endpoint, clientLinkOptions), endpoint: coordinator.endpoint)
    }

    /// Starts one more `sigma worker` process joined to the embedded coordinator.
    func addWorker(name: String, threads: Int) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: selfExecutable())
        p.arguments = ["worker", "--coordinator", coordinator.endpoint, "--threads", "\(threads)", "--name", name, "--log-level", "warning"]
            + (keys.map { ["--key", $0.workerKeyFile] } ?? []) + dataRoots.flatMap { ["--data-root", $0] }
        try p.run()
        workers.append(p)
    }

    /// Waits until `n` workers have registered (or the timeout passes); returns how many did.
    func waitForWorkers(_ n: Int, timeout: Double = 20) async -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let live = coordinator.status?.workers.filter { $0.state != "dead" }.count ?? 0
            if live >= n { return live }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return coordinator.status?.workers.filter { $0.state != "dead" }.count ?? 0
    }

    /// SIGTERM to each worker (they say goodbye), then stop the coordinator.
    func stop() {
        for p in workers where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(5)
        for p in workers {
            while p.isRunning && Date() < deadline { usleep(10_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        coordinator.stop()
        if let d = zapDomain { ZAPService.shared.unregister(d) }
        if let k = keys { try? FileManager.default.removeItem(atPath: k.dir) }
    }
}

/// Throw-away CURVE keys for an embedded cluster: the coordinator's and a client's pairs in memory, the workers'
/// key file and the allow folder (worker and client enrolled) in a temporary folder.
struct LocalKeys {
    let dir: String
    let coordinator: (publicKey: String, secretKey: String)
    let client: (publicKey: String, secretKey: String)
    var allow: String { dir + "/allowed" }
    var workerKeyFile: String { dir + "/local-worker.key" }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-local-keys-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir + "/allowed", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        coordinator = try Curve.newKeyPair()
        client = try Curve.newKeyPair()
        let worker = try Curve.newKeyPair()
        let w = CurveKeyFile(name: "local-worker", publicKey: worker.publicKey, secretKey: worker.secretKey, coordinatorKey: coordinator.publicKey,
                             role: .worker)
        guard FileManager.default.createFile(atPath: dir + "/local-worker.key", contents: Data(w.secretFileText!.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CLIError.usage("cannot write \(dir)/local-worker.key")
        }
        try w.publicFileText.write(toFile: dir + "/allowed/local-worker.pub", atomically: true, encoding: .utf8)
        try CurveKeyFile(name: "local-client", publicKey: client.publicKey, role: .admin).publicFileText
            .write(toFile: dir + "/allowed/local-client.pub", atomically: true, encoding: .utf8)
    }
}

/// Path of the running `sigma` binary.
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

import Foundation
import Logging
import SigmaCoordinator
import SigmaTransport

/// An embedded coordinator plus worker processes on loopback: what `sigma demo` and `sigma bench` run.
final class LocalCluster {
    let coordinator: CoordinatorShell
    private(set) var workers: [Process] = []

    init(workers n: Int, threadsPerWorker: Int, logger: Logger, coordinatorOptions: CoordinatorShell.Options = .init()) throws {
        coordinator = try CoordinatorShell(.bind("tcp://127.0.0.1:0"), options: coordinatorOptions, logger: logger)
        for i in 0..<n { try addWorker(name: "local-\(i + 1)", threads: threadsPerWorker) }
    }

    /// Starts one more `sigma worker` process joined to the embedded coordinator.
    func addWorker(name: String, threads: Int) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: selfExecutable())
        p.arguments = ["worker", "--join", coordinator.endpoint, "--threads", "\(threads)", "--name", name, "--log-level", "warning"]
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
    }
}

/// Path of the running `sigma` binary.
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

import Foundation
import SigmaCoordinatorCore
import SigmaModel
import SigmaProtocol
import SigmaTransport

/// `sigma bench serve-queue`: the coordinator's core alone (no sockets, no workers computing), one deployment whose one
/// replica is busy, so requests wait in its queue: the core's time per arriving request with 1,000, 10,000 and
/// 100,000 already waiting. Under a flood past the replicas' pace every request takes this path; it should cost the
/// same at any depth (the shallowest depth is the baseline).
enum BenchServeQueue {
    static func run(runs: Int) {
        print("# sigma bench serve-queue — the coordinator core alone, one busy replica, requests arriving into a queue of a given depth")
        print("# time per arriving request over 1,000 arrivals at that depth, median of \(runs) runs")
        print("")
        print("| requests already queued | µs per arriving request | against 1,000 queued |")
        print("|---|---|---|")
        var base = Double.nan
        for depth in [1_000, 10_000, 100_000] {
            let perRequest = median((0..<runs).map { _ in arrivalCost(depth: depth) })
            if base.isNaN { base = perRequest }
            print(String(format: "| %d | %.2f | %.2f× |", depth, perRequest * 1e6, perRequest / base))
        }
    }

    /// Seconds per PREDICT handled by the core when `depth` requests wait before it (1,000 arrivals timed).
    static func arrivalCost(depth: Int) -> Double {
        let worker = PeerID([0, 0, 0, 0, 1]), client = PeerID([0, 0, 0, 0, 9])
        var core = CoordinatorCore(config: CoordinatorConfig(), now: 0)
        var now: Nanos = 1_000_000_000
        _ = core.handle(.received(worker, .hello(Hello(cores: 1, slots: 1, memory: 1 << 30, host: "h", name: "w", instance: "w", features: ""))), now: now)
        let config = DeploymentConfig(name: "m", model: "mlp", inputs: 2, spec: JobSpec(kind: "serve", name: "m", body: [1]), replicas: 1,
                                      maxBatch: 1, maxWait: 5_000_000, queueLimit: depth + 2_000, timeout: 600_000_000_000)
        _ = core.handle(.deploy(client, request: 1, .success(config)), now: now)
        _ = core.handle(.received(worker, .loaded(ModelLoaded(deployment: 1, ok: true, width: 1))), now: now)
        var request: UInt64 = 2
        func arrive() {
            now += 1_000
            _ = core.handle(.received(client, .predict(PredictRequest(request: request, name: "m", input: .rows(width: 2, values: [1, 2])))), now: now)
            request += 1
        }
        for _ in 0..<depth { arrive() }
        let t = monotonicNanos()
        for _ in 0..<1_000 { arrive() }
        return Double(monotonicNanos() - t) / 1e9 / 1_000
    }
}

import ArgumentParser
import Foundation
import Logging
import SigmaClient
import SigmaJobs
import SigmaModel
import SigmaProtocol

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run an embedded coordinator and local worker processes, compute a map-reduce, compare with one process.",
        discussion: """
        Example:
          sigma demo                       # 100M generated values, 2 workers
          sigma demo --values 10M --workers 3
        """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Worker processes to start.") var workers: Int = 2
    @Option(help: "Compute threads per worker.") var threads: Int = 1
    @Option(help: "Values to generate (e.g. 100M).") var values: String = "100M"
    @Option(help: "Shards to cut the input into.") var shards: Int = 200

    func run() async throws {
        common.bootstrapLogging(default: .warning)
        let logger = Logger(label: "sigma.demo")
        do {
            let specText = """
            kind: map-reduce
            name: demo-sum-of-squares
            input: {generate: uniform, count: \(values), seed: 2026, low: -1, high: 1}
            map: square
            reduce: [sum, mean, min, max, count, {histogram: {bins: 8, low: 0, high: 1}}]
            shards: \(shards)
            """
            let spec: JobSpec
            do { spec = try JobSpec.parse(specText) } catch { throw CLIError.usage("\(error)") }
            guard case .mapReduce(let mr) = spec else { return }
            guard workers >= 1, workers <= 64 else { throw CLIError.usage("--workers must be 1…64") }

            say("Sigma demo: S = Σ x_i² over \(mr.input.generatedCount ?? 0) uniform values in [-1, 1), \(shards) shards")
            let cluster = try LocalCluster(workers: workers, threadsPerWorker: threads, logger: logger)
            defer { cluster.stop() }
            say("coordinator \(cluster.coordinator.endpoint); starting \(workers) worker processes × \(threads) thread(s)")
            let joined = await cluster.waitForWorkers(workers)
            guard joined >= 1 else { throw CLIError.unreachable("no worker joined the embedded coordinator within 20 s") }
            say("\(joined) workers joined")

            let client = try SigmaClient(endpoint: cluster.coordinator.endpoint)
            defer { client.close() }
            let bar = ProgressLine()
            var outcome: JobOutcome? = nil
            let t0 = Date()
            try await mapClientError {
                for try await e in client.run(spec) {
                    switch e {
                    case .accepted: break
                    case .progress(let p): bar.update(done: p.done, total: p.total, running: p.running, reruns: p.reruns)
                    case .finished(let o): outcome = o
                    }
                }
            }
            bar.finish()
            let distributedTime = Date().timeIntervalSince(t0)
            guard let o = outcome, let distributed = o.mapReduce else {
                throw CLIError.jobFailed("demo job did not complete: \(outcome?.error ?? "no result")")
            }

            say("computing the same in this one process…")
            let t1 = Date()
            let local = MapReduceResult(reducers: mr.reduce, total: try MapReduceKernel.runLocal(mr))
            let localTime = Date().timeIntervalSince(t1)

            say("")
            func col(_ s: String, _ w: Int) -> String { s.count >= w ? s + " " : s + String(repeating: " ", count: w - s.count) }
            say(col("reducer", 12) + col("distributed", 26) + col("single process", 26) + "rel. diff")
            var worst = 0.0
            for r in mr.reduce {
                if case .histogram = r {
                    let same = distributed.total.histogram == local.total.histogram
                    say(col("histogram", 12) + (same ? "identical: \(local.total.histogram)"
                                                      : "DIFFERENT: \(distributed.total.histogram) vs \(local.total.histogram)"))
                    if !same { worst = .infinity }
                    continue
                }
                let a = distributed.total.value(r) ?? .nan, b = local.total.value(r) ?? .nan
                let rel = a == b ? 0 : Swift.abs(a - b) / Swift.max(Swift.abs(b), .leastNormalMagnitude)
                worst = Swift.max(worst, rel)
                say(col(r.name, 12) + col(String(format: "%.17g", a), 26) + col(String(format: "%.17g", b), 26) + String(format: "%.1e", rel))
            }
            say("")
            say(String(format: "distributed: %.2f s on %d workers (%u shards, %u re-run)   single process: %.2f s",
                         distributedTime, joined, o.shards, o.reruns, localTime))
            if worst <= 1e-12 {
                say("✓ distributed result equals the single-process result (max relative difference \(String(format: "%.1e", worst)))")
            } else {
                throw CLIError.jobFailed("distributed and single-process results differ (max relative difference \(worst))")
            }
        } catch {
            exitWith(error)
        }
    }
}

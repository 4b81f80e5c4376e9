import Foundation
import Logging
import SigmaClient
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol

/// `sigma bench scale`: the same jobs on 1, 2, 4 … N one-thread local workers and on one worker with N threads,
/// start-up excluded — each rate comes from two runs of different sizes (a short and a long one), so whatever a
/// job costs once (submission, data and model loading, the first steps' page faults) cancels out.
enum BenchScale {
    struct Job {
        let name: String
        let unit: String
        /// Units of work in the short and the long run, and their specs.
        let short: (Int, JobSpec)
        let long: (Int, JobSpec)
    }

    static func run(counts: [Int], threads: Int, runs: Int, logger: Logger) async throws {
        let dir = try BenchJobs.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let jobs = try specs(dir)
        let cpu = BLASKernels.cpuModel(cpuinfo: BLASKernels.procCPUInfo)
        print("# sigma bench scale — \(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, OpenBLAS \(BLASInfo.coreName) kernels")
        print("# one-thread workers: \(counts.map(String.init).joined(separator: ", ")); one worker × \(threads) threads; "
              + "rates from a short and a long run (start-up cancels out), medians of \(runs) rounds, each round job by job, every setup in turn (in reverse every other round)")
        for j in jobs { print("# \(j.name): \(j.short.0) and \(j.long.0) \(j.unit)") }
        if threads > 1 {
            // What the host itself gives: a VM's vCPUs may share a physical core's units, its caches or its memory
            // bandwidth. Sigma's lanes each run single-threaded products at once, so that is what is measured.
            let one = median((0..<3).map { _ in concurrentGEMMRate(threads: 1) }), many = median((0..<3).map { _ in concurrentGEMMRate(threads: threads) })
            print(String(format: "# this host: 1024 × 1024 products on one BLAS thread each, 1 at a time %.0f GFLOP/s, %d at once %.0f GFLOP/s = %.2f×",
                         one / 1e9, threads, many / 1e9, many / one))
        }
        print("")
        var setups: [(label: String, workers: Int, threads: Int)] = counts.map { ($0 == 1 ? "1 worker × 1 thread" : "\($0) workers × 1 thread", $0, 1) }
        if threads > 1 { setups.append(("1 worker × \(threads) threads", 1, threads)) }
        // Round by round, job by job, every setup in turn — a cluster each, started and stopped (workers on one host
        // claim its cores) — so the runs whose rates make a speedup follow one another within seconds, and a host whose
        // speed drifts from minute to minute slows them alike; the setups' order reverses every other round, so a drift
        // within those seconds does not favour one setup. A speedup is the median of its rounds' ratios.
        var rates = [[[Double]]](repeating: [[Double]](repeating: [], count: setups.count), count: jobs.count)
        var breakdowns = [[[StepBreakdown]]](repeating: [[StepBreakdown]](repeating: [], count: setups.count), count: jobs.count)
        for round in 0..<runs {
            for (ji, j) in jobs.enumerated() {
                let order = round % 2 == 0 ? Array(setups.indices) : setups.indices.reversed()
                for si in order {
                    let s = setups[si]
                    let c = try LocalCluster(workers: s.workers, threadsPerWorker: s.threads, logger: logger, dataRoots: [try BenchJobs.scratch()])
                    defer { c.stop() }
                    guard await c.waitForWorkers(s.workers) >= s.workers else { throw CLIError.unreachable("\(s.workers) workers did not join") }
                    let client = try c.client()
                    defer { client.close() }
                    let a = try await client.runToEnd(j.short.1, acceptTimeout: 120)
                    _ = c.coordinator.takeSamples()
                    let b = try await client.runToEnd(j.long.1, acceptTimeout: 120)
                    let samples = c.coordinator.takeSamples()
                    guard a.state == .completed, b.state == .completed else {
                        throw CLIError.jobFailed("bench job \(j.name) failed: \(a.error) \(b.error)")
                    }
                    let dt = Double(b.elapsed) - Double(a.elapsed)
                    rates[ji][si].append(dt > 0 ? Double(j.long.0 - j.short.0) / (dt / 1e9) : .nan)
                    if j.long.1.kind == TrainKind.name {
                        let d = try await client.detail(job: b.job, attempts: true)
                        if let s = StepBreakdown(d.attempts, skip: 2, samples: samples) { breakdowns[ji][si].append(s) }
                    }
                }
            }
        }
        print("| job | setup | rate | speedup (median of rounds, range) | efficiency | target |")
        print("|---|---|---|---|---|---|")
        // (speedups against one one-thread worker; without that setup, rates alone)
        let base = setups.firstIndex { $0.workers == 1 && $0.threads == 1 }
        for (ji, j) in jobs.enumerated() {
            for (si, s) in setups.enumerated() {
                let cores = s.workers * s.threads
                let ratios = base.map { b in zip(rates[ji][si], rates[ji][b]).map { $0 / $1 } } ?? [.nan]
                let speedup = median(ratios)
                let target: String
                if cores == 1 { target = "" } else if s.threads > 1 {
                    target = "≥ \(String(format: "%.1f", 0.8 * Double(cores)))× (0.8·N)"
                } else {
                    target = "≥ \(String(format: "%.2f", 0.85 * Double(cores)))× (0.85·N)"
                }
                let range = cores == 1 ? "" : String(format: " (%.2f–%.2f)", ratios.min() ?? .nan, ratios.max() ?? .nan)
                print("| \(j.name) | \(s.label) | \(format(median(rates[ji][si]))) \(j.unit)/s | \(String(format: "%.2f", speedup))×\(range) | "
                      + "\(String(format: "%.2f", speedup / Double(cores))) | \(target) |")
            }
        }
        var trains: [(setup: String, breakdown: StepBreakdown)] = []
        for (ji, _) in jobs.enumerated() {
            for (si, s) in setups.enumerated() where !breakdowns[ji][si].isEmpty { trains.append((s.label, StepBreakdown.combined(breakdowns[ji][si]))) }
        }
        if !trains.isEmpty {
            print("")
            StepBreakdown.table(trains, note: "the long run's steps after the first 2")
        }
    }

    static func format(_ x: Double) -> String {
        x >= 1e6 ? String(format: "%.1fM", x / 1e6) : x >= 1e4 ? String(format: "%.0f", x) : String(format: "%.1f", x)
    }

    /// The jobs: a compute-bound train job, an embed job (when `make model` fetched MiniLM), a map-reduce job.
    static func specs(_ dir: String) throws -> [Job] {
        let (x, y) = try BenchJobs.syntheticData(dir, rows: 8192, features: 256, classes: 10)
        func train(_ steps: Int) throws -> JobSpec {
            try BenchJobs.trainSpec(name: "bench-scale-train", x: x, y: y, layers: [256, 1024, 1024, 10], batch: 2048, microBatch: 64, steps: steps)
        }
        var jobs = [Job(name: "train MLP 256-1024-1024-10, batch 2048, micro_batch 64", unit: "samples",
                        short: (4 * 2048, try train(4)), long: (16 * 2048, try train(16)))]
        let model = URL(fileURLWithPath: "models/all-MiniLM-L6-v2").standardizedFileURL.path
        if FileManager.default.fileExists(atPath: model + "/model.safetensors") {
            let encoder = try BertEncoder(modelDirectory: model)
            let sentences = benchSentences(vocab: encoder.tokenizer.vocab)
            func embed(_ n: Int) throws -> JobSpec {
                let path = dir + "/sentences-\(n).txt"
                try sentences.prefix(n).joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
                return try JobSpec.parse("kind: embed\nname: bench-scale-embed\nmodel: \(model)\ninput: \(path)\nbatch_size: 32\n")
            }
            jobs.append(Job(name: "embed all-MiniLM-L6-v2, batch 32", unit: "sentences", short: (400, try embed(400)), long: (1600, try embed(1600))))
        } else {
            print("# embed: skipped — models/all-MiniLM-L6-v2 is missing (run `make model`)")
        }
        func sum(_ n: Int) -> JobSpec {
            .mapReduce(MapReduceSpec(name: "bench-scale-map-reduce", input: .uniform(count: UInt64(n), seed: 5, low: 0, high: 1),
                                     map: .square, reduce: [.sum], sharding: .size(1 << 20)))
        }
        jobs.append(Job(name: "map-reduce Σ x² over generated values", unit: "values", short: (200_000_000, sum(200_000_000)),
                        long: (1_000_000_000, sum(1_000_000_000))))
        return jobs
    }
}

/// Where a synchronous training step's time goes, from the job's shard attempt records and the coordinator's own
/// reduce timings (seconds, medians over steps).
struct StepBreakdown {
    var step: Double, compute: Double, imbalance: Double, transfer: Double, reduce: Double, optimizer: Double

    /// Per step r (after the first `skip`): step = r+1's first dispatch − r's first dispatch; compute = the slowest
    /// shard's compute; imbalance = slowest − mean compute; reduce and optimizer = the medians of the coordinator's
    /// own timings (`samples`: the whole reduce, and the optimizer pass that fuses the additions left); transfer = the
    /// slowest-finishing shard's round trip minus its compute and the coordinator's time (parameters out, gradients
    /// in, queueing) — the coordinator stamps the next step's dispatch with the time the last result arrived, so its
    /// reduce shows up inside the next step's round trips.
    init?(_ attempts: [AttemptRecord], skip: Int, samples: CoordinatorSamples) {
        let ok = attempts.filter { $0.outcome == .ok }
        let byRound = Dictionary(grouping: ok, by: \.round)
        let rounds = byRound.keys.sorted()
        let pairs = zip(samples.reduces, samples.optimizers)
        let additions = pairs.map { $0 > $1 ? $0 - $1 : 0 }, optimizers = pairs.map { $1 }
        reduce = additions.isEmpty ? 0 : percentile(additions, 0.5) / 1e9
        optimizer = optimizers.isEmpty ? 0 : percentile(optimizers, 0.5) / 1e9
        let coordinator = samples.reduces.isEmpty ? 0 : percentile(samples.reduces, 0.5) / 1e9
        var steps: [Double] = [], computes: [Double] = [], imb: [Double] = [], transfers: [Double] = []
        for (i, r) in rounds.enumerated() where i >= skip && i + 1 < rounds.count {
            let a = byRound[r]!, next = byRound[rounds[i + 1]]!
            let first = Double(a.map(\.queued).min()!), nextFirst = Double(next.map(\.queued).min()!)
            let last = a.max { $0.finished < $1.finished }!
            let slowest = Double(a.map(\.compute).max()!), mean = Double(a.map(\.compute).reduce(0, +)) / Double(a.count)
            steps.append((nextFirst - first) / 1e9)
            computes.append(slowest / 1e9)
            imb.append((slowest - mean) / 1e9)
            transfers.append(max(0, (Double(last.finished) - Double(last.queued) - Double(last.compute)) / 1e9 - coordinator))
        }
        guard !steps.isEmpty else { return nil }
        step = median(steps); compute = median(computes); imbalance = median(imb); transfer = median(transfers)
    }

    init(step: Double, compute: Double, imbalance: Double, transfer: Double, reduce: Double, optimizer: Double) {
        self.step = step; self.compute = compute; self.imbalance = imbalance; self.transfer = transfer
        self.reduce = reduce; self.optimizer = optimizer
    }

    /// The table `sigma bench scale` and `sigma bench train` print: one row per setup, in ms.
    static func table(_ rows: [(setup: String, breakdown: StepBreakdown)], note: String) {
        print("Where a train step's time goes (medians over \(note); ms):")
        print("")
        print("| setup | step | worker compute (slowest shard) | waiting on the slowest (slowest − mean) | params out + gradients in + queueing | coordinator: the last result stored, the tree walked | coordinator: optimizer pass (the tree's additions left, SGD, next PARAMS) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows {
            let b = r.breakdown
            print(String(format: "| %@ | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f |", r.setup, b.step * 1e3, b.compute * 1e3, b.imbalance * 1e3,
                         b.transfer * 1e3, b.reduce * 1e3, b.optimizer * 1e3))
        }
    }

    /// Medians, part by part, of several runs' breakdowns.
    static func combined(_ xs: [StepBreakdown]) -> StepBreakdown {
        StepBreakdown(step: median(xs.map(\.step)), compute: median(xs.map(\.compute)), imbalance: median(xs.map(\.imbalance)),
                      transfer: median(xs.map(\.transfer)), reduce: median(xs.map(\.reduce)), optimizer: median(xs.map(\.optimizer)))
    }
}

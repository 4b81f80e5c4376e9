import Foundation
import Logging
import SigmaClient
import SigmaCoordinator
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport

/// Benchmarks of the distributed ML jobs, each against a baseline measured in the same run.
enum BenchJobs {
    static func scratch() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Random features (rows, features) and labels in 0..<classes as `.npy` files.
    static func syntheticData(_ dir: String, rows: Int, features: Int, classes: Int) throws -> (String, String) {
        var rng = SeededRandom(seed: 11)
        let x = Tensor.uniform([rows, features], low: 0, high: 1, rng: &rng)
        let y = Tensor(shape: [rows], (0..<rows).map { _ in Float(rng.next() % UInt64(classes)) })
        try NumPyFormat.writeNpy(x, path: dir + "/x-\(features).npy")
        try NumPyFormat.writeNpy(y, path: dir + "/y-\(features).npy")
        return (dir + "/x-\(features).npy", dir + "/y-\(features).npy")
    }

    /// `journal`: the coordinator keeps a journal (in a folder of the scratch folder), as `sigma coordinator` does.
    static func cluster(workers: Int, logger: Logger, journal: Bool = false) async throws -> LocalCluster {
        var options = CoordinatorShell.Options()
        if journal { options.stateDirectory = try BenchJobs.scratch() + "/journal-\(UUID().uuidString)" }
        setenv("OPENBLAS_NUM_THREADS", "1", 1)   // each worker process: one compute thread, single-threaded BLAS
        let c = try LocalCluster(workers: workers, threadsPerWorker: 1, logger: logger, coordinatorOptions: options, dataRoots: [try BenchJobs.scratch()])
        unsetenv("OPENBLAS_NUM_THREADS")
        guard await c.waitForWorkers(workers) >= workers else { throw CLIError.unreachable("\(workers) workers did not join") }
        return c
    }

    /// Seconds of each completed run of `spec` on the cluster (submit to result, as the coordinator measured it).
    static func runs(_ spec: JobSpec, on c: LocalCluster, count: Int) async throws -> [Double] {
        let client = try c.client()
        defer { client.close() }
        var out: [Double] = []
        for _ in 0..<count {
            let o = try await client.runToEnd(spec, acceptTimeout: 60)
            guard o.state == .completed else { throw CLIError.jobFailed("bench job failed: \(o.error)") }
            out.append(Double(o.elapsed) / 1e9)
        }
        return out
    }

    /// MLP 784-1024-1024-10, batch 256, SGD: 2 workers (one core each) against the engine alone on 2 threads.
    static func train(runs n: Int, logger: Logger, journal: Bool = false) async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (x, y) = try syntheticData(dir, rows: 4096, features: 784, classes: 10)
        let steps = 200   // a short training run; the job's one-time setup (data load, model build) is in the figure
        print("# sigma bench train — MLP 784-1024-1024-10, batch 256 (2 micro-batches of 128), SGD momentum 0.9, \(steps) steps per run, OpenBLAS \(BLASInfo.coreName)")
        print("")
        func spec(_ transport: String) throws -> JobSpec {
            try trainSpec(name: "bench-train", x: x, y: y, layers: [784, 1024, 1024, 10], batch: 256, microBatch: 128, steps: steps,
                          transport: transport)
        }
        let c = try await cluster(workers: 2, logger: logger, journal: journal)
        defer { c.stop() }
        // Interleaved and bracketed: each Sigma run is compared with the mean of an engine-alone run just before it and
        // one just after it (this VM's speed drifts by ±20 % from minute to minute; a bracket cancels a steady drift).
        // Two figures per Sigma run: the whole job (setup, the first steps' page faults and cold caches included)
        // and steps 10…200 from the job's own shard records — like the engine-alone loop, which is timed after
        // warm-up steps.
        let client = try c.client()
        defer { client.close() }
        var breakdowns: [StepBreakdown] = []
        func run(_ s: JobSpec, breakdown: Bool = false) async throws -> (whole: Double, warm: Double) {
            _ = c.coordinator.takeSamples()
            let o = try await client.runToEnd(s, acceptTimeout: 60)
            guard o.state == .completed else { throw CLIError.jobFailed("bench job failed: \(o.error)") }
            let d = try await client.detail(job: o.job, attempts: true)
            if breakdown, let b = StepBreakdown(d.attempts, skip: 10, samples: c.coordinator.takeSamples()) { breakdowns.append(b) }
            let from = d.attempts.filter { $0.round == 10 }.map(\.queued).min() ?? 0
            let to = d.attempts.filter { $0.outcome == .ok }.map(\.finished).max() ?? 0
            let warm = to > from && d.attemptsDropped == 0 ? Double((steps - 10) * 256) / (Double(to - from) / 1e9) : .nan
            return (Double(steps * 256) / (Double(o.elapsed) / 1e9), warm)
        }
        func engine() -> Double { engineStepRate(threads: 2, runs: 1, steps: steps) }
        // Per pair: (engine alone: mean of the runs before and after, Sigma)
        var f32: [(engine: Double, sigma: Double)] = [], f32Warm: [(engine: Double, sigma: Double)] = []
        var bf16: [(engine: Double, sigma: Double)] = []
        var before = engine()
        for _ in 0..<n {
            let r = try await run(try spec("f32"), breakdown: true)
            let after = engine()
            let e = (before + after) / 2
            f32.append((e, r.whole))
            f32Warm.append((e, r.warm))
            let b = try await run(try spec("bf16")).whole
            let next = engine()
            bf16.append(((after + next) / 2, b))
            before = next
        }
        func share(_ xs: [(engine: Double, sigma: Double)]) -> String {
            let r = xs.map { $0.sigma / $0.engine * 100 }
            return "\(Int(median(r).rounded())) % (\(Int(r.min()!.rounded()))–\(Int(r.max()!.rounded())) %)"
        }
        print("| setup | samples/s (median of \(n)) | share of engine alone (median of the pairs, range) | target |")
        print("|---|---|---|---|")
        print("| engine alone, 2 BLAS threads (after 3 warm-up steps; the run before and the run after each Sigma run) | \(Int(median(f32Warm.map(\.engine)))) | 100 % | |")
        print("| Sigma, 2 local workers × 1 thread: steps 10–\(steps) | \(Int(median(f32Warm.map(\.sigma)))) | \(share(f32Warm)) | ≥ 90 % |")
        print("| same, whole job (setup and cold first steps included) | \(Int(median(f32.map(\.sigma)))) | \(share(f32)) | |")
        print("| same, whole job, gradient_transport: bf16 (lossy) | \(Int(median(bf16.map(\.sigma)))) | \(share(bf16)) | |")
        print("")
        print("Pairs, steps 10–\(steps) (engine alone, bracketed mean → Sigma): " + f32Warm.map { "\(Int($0.engine)) → \(Int($0.sigma)) (\(Int(($0.sigma / $0.engine * 100).rounded())) %)" }.joined(separator: "; "))
        if !breakdowns.isEmpty {
            print("")
            StepBreakdown.table([("2 local workers × 1 thread, float32", StepBreakdown.combined(breakdowns))], note: "steps 10–\(steps) of each float32 run")
        }
    }

    /// 4 workers each return a 64 MiB float32 gradient per step (and receive 64 MiB of parameters), against raw
    /// ZeroMQ moving the same bytes over loopback in the same run.
    static func reduce(runs n: Int, logger: Logger, journal: Bool = false) async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (x, y) = try syntheticData(dir, rows: 8, features: 4096, classes: 4096)
        let params = 4096 * 4096 + 4096
        let bytes = params * 4
        let steps = 10   // each run is a whole job: its setup (a 16.8M-parameter model built everywhere) is in the figure
        print("# sigma bench reduce — 4 workers × \(String(format: "%.1f", Double(bytes) / 1_048_576)) MiB float32 gradients (linear 4096→4096), \(steps) steps per run")
        print("")
        let raw = try await onThread { try RawBaseline.scatterGather(peers: 4, bytes: bytes, rounds: steps * n) }
        let spec = try reduceSpec(x: x, y: y, steps: steps)
        let c = try await cluster(workers: 4, logger: logger, journal: journal)
        defer { c.stop() }
        let times = try await runs(spec, on: c, count: n).map { $0 / Double(steps) }
        let moved = Double(bytes) * 8   // 4 × parameters out, 4 × gradients in
        let rawStep = median(raw), ours = median(times)
        print("| per step: 4 × params out, 4 × gradients in | ms (median) | GB/s moved | share of raw |")
        print("|---|---|---|---|")
        print(String(format: "| raw ZeroMQ, one DEALER pair per worker, loopback, no compute | %.1f | %.2f | 100 %% |", rawStep * 1e3, moved / rawStep / 1e9))
        print(String(format: "| Sigma train step (gradients + tree reduce + SGD) | %.1f | %.2f | %.0f %% (target ≥ 50 %%) |",
                     ours * 1e3, moved / ours / 1e9, rawStep / ours * 100))
    }

    /// `n` one-row shards summing 0…n−1 (dispatch throughput), and a one-shard job (round trips).
    static func tinyShards(_ n: Int) -> JobSpec {
        .mapReduce(MapReduceSpec(name: "bench-tiny", input: .range(count: UInt64(n), start: 0, step: 1), reduce: [.sum], sharding: .size(1)))
    }
    static let roundTrip = JobSpec.mapReduce(MapReduceSpec(name: "bench-rtt", input: .range(count: 1, start: 0, step: 1),
                                                           reduce: [.sum], sharding: .count(1)))

    /// The reduce benchmark's job: a linear 4096→4096 layer (16.8M parameters, 64 MiB), 4 shards a step.
    static func reduceSpec(x: String, y: String, steps: Int) throws -> JobSpec {
        try trainSpec(name: "bench-reduce", x: x, y: y, layers: [4096, 4096], batch: 4, microBatch: 1, steps: steps,
                      optimizer: "{sgd: {lr: 0.000001}}")
    }

    /// The benches' train jobs: an MLP over `.npy` features and labels, no held-out rows.
    static func trainSpec(name: String, x: String, y: String, layers: [Int], batch: Int, microBatch: Int, steps: Int,
                          optimizer: String = "{sgd: {lr: 0.01, momentum: 0.9}}", transport: String = "f32") throws -> JobSpec {
        try JobSpec.parse("""
            kind: train
            name: \(name)
            model: {mlp: [\(layers.map(String.init).joined(separator: ", "))]}
            data: {x: \(x), y: \(y)}
            optimizer: \(optimizer)
            steps: \(steps)
            batch_size: \(batch)
            micro_batch: \(microBatch)
            holdout: 0
            gradient_transport: \(transport)
            """)
    }

    /// What CURVE encryption costs: the same embedded cluster with and without keys, alternating, for tiny-shard
    /// dispatch (1 worker), round trips, and the reduce benchmark's 64 MiB payloads (4 workers, shared memory off,
    /// so every byte crosses the encrypted socket as it would between hosts).
    static func curve(runs n: Int, shards: Int, samples: Int, logger: Logger) async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (x, y) = try syntheticData(dir, rows: 8, features: 4096, classes: 4096)
        let steps = 5
        let reduce = try reduceSpec(x: x, y: y, steps: steps)
        let (tiny, one) = (BenchJobs.tinyShards(shards), BenchJobs.roundTrip)
        print("# sigma bench curve — the same embedded cluster without and with CURVE keys, alternating; \(n) runs, medians")
        print("# libzmq \(ZContext.libraryVersion); \(shards) tiny shards per run, \(samples) round trips; reduce: 4 workers × 64 MiB, \(steps) steps, shared memory off")
        var tput: [Bool: [Double]] = [:], p50: [Bool: [Double]] = [:], step: [Bool: [Double]] = [:]
        for _ in 0..<n {
            for secure in [false, true] {
                let c = try LocalCluster(workers: 1, threadsPerWorker: 1, logger: logger, secure: secure, dataRoots: [try BenchJobs.scratch()])
                defer { c.stop() }
                guard await c.waitForWorkers(1) == 1 else { throw CLIError.unreachable("the worker did not join (secure: \(secure))") }
                let client = try c.client()
                defer { client.close() }
                let t0 = monotonicNanos()
                let o = try await client.runToEnd(tiny)
                guard o.state == .completed, o.mapReduce?.total.total == Double(shards) * Double(shards - 1) / 2 else {
                    throw CLIError.jobFailed("tiny-shard job gave a wrong result: \(o.error)")
                }
                tput[secure, default: []].append(Double(shards) / (Double(monotonicNanos() - t0) / 1e9))
                for _ in 0..<200 { _ = try await client.runToEnd(one) }
                var lat: [UInt64] = []
                for _ in 0..<samples {
                    let t = monotonicNanos()
                    _ = try await client.runToEnd(one)
                    lat.append(monotonicNanos() - t)
                }
                p50[secure, default: []].append(percentile(lat, 0.5))
            }
            for secure in [false, true] {
                var options = CoordinatorShell.Options()
                options.sharedMemory = false
                setenv("OPENBLAS_NUM_THREADS", "1", 1)
                let c = try LocalCluster(workers: 4, threadsPerWorker: 1, logger: logger, coordinatorOptions: options, secure: secure, dataRoots: [try BenchJobs.scratch()])
                unsetenv("OPENBLAS_NUM_THREADS")
                defer { c.stop() }
                guard await c.waitForWorkers(4) == 4 else { throw CLIError.unreachable("4 workers did not join (secure: \(secure))") }
                let client = try c.client()
                defer { client.close() }
                let o = try await client.runToEnd(reduce, acceptTimeout: 60)
                guard o.state == .completed else { throw CLIError.jobFailed("reduce job failed: \(o.error)") }
                step[secure, default: []].append(Double(o.elapsed) / 1e9 / Double(steps))
            }
        }
        func cell(_ d: [Bool: [Double]], _ f: (Double) -> String) -> (String, String, Double) {
            let a = median(d[false] ?? []), b = median(d[true] ?? [])
            return (f(a), f(b), a / b)
        }
        print("")
        print("| measure | plain | CURVE | CURVE / plain |")
        print("|---|---|---|---|")
        let t = cell(tput) { "\(Int($0)) shards/s" }
        print("| tiny-shard dispatch (1 worker, 1 thread) | \(t.0) | \(t.1) | \(String(format: "%.0f %%", 100 / t.2)) of plain |")
        let r = cell(p50) { String(format: "%.0f µs", $0 / 1e3) }
        print("| round trip p50 client→coordinator→worker→client | \(r.0) | \(r.1) | \(String(format: "+%.0f µs", (median(p50[true] ?? []) - median(p50[false] ?? [])) / 1e3)) |")
        let moved = Double(4096 * 4096 + 4096) * 4 * 8
        let g = cell(step) { String(format: "%.0f ms/step (%.2f GB/s)", $0 * 1e3, moved / $0 / 1e9) }
        print("| reduce step, 4 × 64 MiB out and in (shared memory off) | \(g.0) | \(g.1) | \(String(format: "%.0f %%", 100 * g.2)) of plain throughput |")
    }

    /// Embedding 2,000 sentences: 2 workers against the same job run locally.
    static func embed(runs n: Int, logger: Logger) async throws {
        let model = URL(fileURLWithPath: "models/all-MiniLM-L6-v2").standardizedFileURL.path
        let encoder = try BertEncoder(modelDirectory: model)
        let sentences = benchSentences(vocab: encoder.tokenizer.vocab)
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try sentences.joined(separator: "\n").write(toFile: dir + "/s.txt", atomically: true, encoding: .utf8)
        let spec = try JobSpec.parse("kind: embed\nname: bench-embed\nmodel: \(model)\ninput: \(dir)/s.txt\nbatch_size: 32\n")
        print("# sigma bench embed-cluster — all-MiniLM-L6-v2, \(sentences.count) sentences, batch 32")
        print("")
        var local: [Double] = []
        for _ in 0..<n {
            let t = monotonicNanos()
            _ = try JobKinds.standard.runLocal(spec, roots: try DataRoots([FileManager.default.currentDirectoryPath, dir]))
            local.append(Double(monotonicNanos() - t) / 1e9)
        }
        let c = try await cluster(workers: 2, logger: logger)
        defer { c.stop() }
        let times = try await runs(spec, on: c, count: n)
        let a = Double(sentences.count) / median(local), b = Double(sentences.count) / median(times)
        print("| setup | sentences/s (median of \(n)) |")
        print("|---|---|")
        print("| local job, one process (2 BLAS threads) | \(Int(a)) |")
        print("| Sigma, 2 local workers × 1 thread | \(Int(b)) (\(Int((b / a * 100).rounded())) % of local) |")
    }
}

import ArgumentParser
import Foundation
import Logging
import SigmaClient
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run an embedded coordinator and local workers: train the digits MLP, a map-reduce, and (if the model is present) an embedding.",
        discussion: """
        Example:
          sigma demo      # from the repository root: data/digits.csv, 2 workers
          sigma demo --values 10M --workers 3
        Each distributed result is checked against the same job run in this one process.
        """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Worker processes to start.") var workers: Int = 2
    @Option(help: "Compute threads per worker.") var threads: Int = 1
    @Option(help: "Values to generate (e.g. 100M).") var values: String = "100M"
    @Option(help: "Shards to cut the input into.") var shards: Int = 200
    @Option(help: "Training steps for the digits MLP.") var steps: Int = 600
    @Option(help: "Digits CSV (scikit-learn's 8×8 digits, label last).") var digits: String = "data/digits.csv"
    @Option(help: "MiniLM model folder for the embedding part (skipped when absent).") var model: String = "models/all-MiniLM-L6-v2"
    @Option(help: "Text file to embed, one sentence per line.") var sentences: String = "examples/sentences.txt"

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
            guard let mr = MapReduceKind.spec(in: spec) else { return }
            guard workers >= 1, workers <= 64 else { throw CLIError.usage("--workers must be 1…64") }

            let cluster = try LocalCluster(workers: workers, threadsPerWorker: threads, logger: logger)
            defer { cluster.stop() }
            say("Sigma demo: coordinator \(cluster.coordinator.endpoint); starting \(workers) worker processes × \(threads) thread(s)")
            let joined = await cluster.waitForWorkers(workers)
            guard joined >= 1 else { throw CLIError.unreachable("no worker joined the embedded coordinator within 20 s") }
            say("\(joined) workers joined")
            let client = try cluster.client()
            defer { client.close() }

            try await trainDigits(client, workers: joined)
            say("")
            say("── 2. map-reduce: S = Σ x_i² over \(mr.input.generatedCount ?? 0) uniform values in [-1, 1), \(shards) shards")
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
            try await embedSample(client)
        } catch {
            exitWith(error)
        }
    }

    /// Part 1: data-parallel training of the digits MLP with a live line, then the same job in this process.
    func trainDigits(_ client: SigmaClient, workers: Int) async throws {
        let path = URL(fileURLWithPath: digits).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError.usage("\(digits) not found: run the demo from the repository root (make demo) or pass --digits")
        }
        let spec = try JobSpec.parse("""
            kind: train
            name: demo-digits-mlp
            model: {mlp: [64, 128, 10], activation: relu}
            data: {csv: \(path), scale: 0.0625}
            optimizer: {sgd: {lr: 0.05, momentum: 0.9}}
            steps: \(steps)
            batch_size: 32
            micro_batch: 8
            holdout: 0.2
            eval_every: 50
            seed: 1
            """)
        say("")
        say("── 1. train: MLP 64-128-10 on scikit-learn's digits, \(steps) steps of 32 rows, on \(workers) workers")
        let line = TrainProgress(batch: 32)
        var outcome: JobOutcome? = nil
        try await mapClientError {
            for try await e in client.run(spec) {
                switch e {
                case .progress(let p): if let at = p.position { line.update(at, loss: p.loss, accuracy: p.accuracy, evalLoss: p.evalLoss) }
                case .finished(let o): outcome = o
                default: break
                }
            }
        }
        line.finish()
        guard let o = outcome, o.state == .completed else { throw CLIError.jobFailed("training did not complete: \(outcome?.error ?? "no result")") }
        let files = try MLOutput.files(o)
        let metrics = files.first { $0.name == "metrics.json" }.flatMap { try? JSONSerialization.jsonObject(with: $0.data) as? [String: Any] }
        let acc = metrics?["eval_accuracy"] as? Double ?? .nan
        say(String(format: "held-out accuracy %.2f %% (%d rows) after %.1f s", acc * 100,
                   (metrics?["rows"] as? [String: Any])?["holdout"] as? Int ?? 0, Double(o.elapsed) / 1e9))
        say("training the same spec in this one process…")
        let local = try JobKinds.standard.runLocal(spec, roots: .currentDirectory()).withUnsafeBytes { try ResultBundle.decode($0) }
        let a = files.first { $0.name == "model.safetensors" }?.data, b = local.first { $0.name == "model.safetensors" }?.data
        guard a != nil, a == b else { throw CLIError.jobFailed("distributed and local parameters differ") }
        say("✓ the \((metrics?["parameters"] as? Int) ?? 0) trained parameters are bitwise identical to the single-process run")
    }

    /// Part 3: sentence embeddings on the cluster, when the MiniLM model has been fetched (make model).
    func embedSample(_ client: SigmaClient) async throws {
        let dir = URL(fileURLWithPath: model).standardizedFileURL.path
        let input = URL(fileURLWithPath: sentences).standardizedFileURL.path
        say("")
        guard FileManager.default.fileExists(atPath: dir + "/model.safetensors"), FileManager.default.fileExists(atPath: input) else {
            say("── 3. embed: skipped (\(model) not present; fetch it with: make model)")
            return
        }
        let spec = try JobSpec.parse("kind: embed\nname: demo-embed\nmodel: \(dir)\ninput: \(input)\nbatch_size: 8\n")
        let lines = try EmbedWorker.readLines(input)
        say("── 3. embed: \(lines.count) sentences of \(sentences) with all-MiniLM-L6-v2 on the cluster")
        let o = try await mapClientError { try await client.runToEnd(spec) }
        guard o.state == .completed, let npy = try MLOutput.files(o).first(where: { $0.name == "embeddings.npy" }) else {
            throw CLIError.jobFailed("embedding did not complete: \(o.error)")
        }
        let e = try NumPyFormat.readNpy(npy.data, file: "embeddings.npy")
        let d = e.shape[1]
        // The most similar pair of sentences (cosine; rows are unit length).
        var best = (0, 1, -Float.infinity)
        e.withData { p in
            for i in 0..<e.shape[0] { for j in (i + 1)..<e.shape[0] {
                var s: Float = 0
                for k in 0..<d { s += p[i * d + k] * p[j * d + k] }
                if s > best.2 { best = (i, j, s) }
            } }
        }
        say(String(format: "embeddings %d × %d in %.2f s; most similar pair (cosine %.3f):", e.shape[0], d, Double(o.elapsed) / 1e9, best.2))
        say("  “\(lines[best.0])”")
        say("  “\(lines[best.1])”")
    }
}

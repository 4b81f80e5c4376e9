import Foundation
import SigmaClient
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

/// A scratch directory removed at the end of a test.
struct Scratch {
    let path: String
    init(_ name: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func write(_ name: String, _ text: String) throws -> String {
        let p = path + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs `sigma ARGS`; returns (status, stdout, stderr).
func sigma(_ args: [String], timeout: Double = 300) async throws -> (Int32, String, String) {
    let p = try SigmaProcess(args)
    let status = try await p.wait(timeout: timeout)
    return (status, p.stdout.joined(separator: "\n"), p.stderr.joined(separator: "\n"))
}

func fileBytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

/// Digits training spec: Adam with warm-up + cosine, micro-batches of 6 in steps of 64 (11 per step, 5 in the short last step of an epoch), held-out eval.
func digitsTrainSpec(steps: Int, extra: String = "") -> String {
    """
    kind: train
    name: it-digits
    model: {mlp: [64, 32, 10], activation: relu}
    data: {csv: \(repoRoot)/data/digits.csv, scale: 0.0625}
    optimizer: {adam: {lr: 0.01, warmup_steps: 10, schedule: cosine}}
    steps: \(steps)
    batch_size: 64
    micro_batch: 6
    holdout: 0.2
    eval_every: 50
    seed: 7
    \(extra)
    """
}

/// Runs the job in `spec` on `cluster` through a client, SIGKILLs the cluster's second worker at the first progress at
/// or past step `step`, and writes the job's result files into `out`: the outcome, the job's id, the step of the kill
/// and the steps the client saw.
func runKillingAWorker(_ cluster: ProcessCluster, spec: String, atStep step: UInt32, out: String) async throws
    -> (outcome: JobOutcome, job: Int, killedAt: UInt32, seen: [String]) {
    let client = try localClient(cluster.endpoint)
    defer { client.close() }
    var killedAt: UInt32? = nil, outcome: JobOutcome? = nil, seen: [String] = [], job = 1
    for try await e in client.run(try JobSpec.load(path: spec)) {
        switch e {
        case .accepted(let a): job = Int(a.job)
        case .progress(let p):
            seen.append("\(p.step)")
            if killedAt == nil && p.step >= step {
                cluster.workers.withLock { $0[1] }.kill(SIGKILL)
                killedAt = p.step
            }
        case .finished(let o): outcome = o
        default: break
        }
    }
    let o = try #require(outcome)
    let killed = try #require(killedAt, "the job ended before a worker could be killed")
    let files = try o.payload.withUnsafeBytes { try ResultBundle.decode($0) }
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    for f in files { try f.data.write(to: URL(fileURLWithPath: out + "/" + f.name)) }
    return (o, job, killed, seen)
}

@Suite(.serialized, .timeLimit(.minutes(10))) struct MLJobTests {
    /// The final parameters after 200 steps are the same bits with 1, 2 and 3 workers of 1 or 2 compute threads
    /// (1 to 4 shards per step, each split over its worker's lanes) as in one process (`--local`) on 1, 2 or 3 threads.
    @Test func trainingIsBitwiseIdenticalToLocalForAnyWorkerCount() async throws {
        let dir = try Scratch("train")
        defer { dir.remove() }
        let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 200))
        let (ls, lo, le) = try await sigma(["submit", spec, "--local", "--threads", "1", "--json", "-o", dir.path + "/local"])
        try #require(ls == 0, "\(le)")
        let local = try #require(fileBytes(dir.path + "/local/model.safetensors"))
        let summary = try JSONSerialization.jsonObject(with: Data(lo.utf8)) as? [String: Any]
        let acc = (summary?["metrics"] as? [String: Any])?["eval_accuracy"] as? Double ?? 0
        #expect(acc >= 0.93, "held-out accuracy \(acc)")
        // In one process on 2 and 3 threads (a step's 11 micro-batches on parallel lanes): the same bits.
        for t in [2, 3] {
            let (s, _, e) = try await sigma(["train", spec, "--local", "--threads", "\(t)", "--json", "-o", dir.path + "/local-\(t)"])
            #expect(s == 0, "\(e.suffix(500))")
            #expect(fileBytes(dir.path + "/local-\(t)/model.safetensors") == local, "--local --threads \(t): parameters differ from one thread")
        }

        // (1 to 3 workers, with 1 or 2 compute threads each: a worker's shard splits its micro-batches over its lanes)
        for (n, threads) in [(1, [1]), (1, [2]), (2, [1, 1]), (2, [2, 2]), (3, [1, 1, 2])] {
            let cluster = try await ProcessCluster(workers: 0)
            defer { cluster.stop() }
            for (i, t) in threads.enumerated() { try cluster.addWorker("w\(i + 1)", threads: t) }
            try await cluster.waitForWorkers(n)
            let out = dir.path + "/cluster-\(threads.map(String.init).joined(separator: "-"))"
            let (s, _, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--follow", "--json", "-o", out])
            #expect(s == 0, "workers with \(threads) threads: \(e.suffix(500))")
            await expectSameAsLocal(cluster, job: 1, clusterOut: out, localOut: dir.path + "/local",
                                    files: ["model.safetensors", "history.json"], "workers with \(threads) threads")
        }
    }

    /// Parameters and gradients of ≥ 1 MiB travel through shared memory between same-host processes
    /// (docs/protocol.md §6): the result is still bitwise equal to `--local`, the coordinator really wrote
    /// segments, and they are gone once the processes stop.
    @Test func trainingThroughSharedMemoryIsBitwiseIdenticalToLocal() async throws {
        let dir = try Scratch("train-shm")
        defer { dir.remove() }
        let spec = try dir.write("train.yaml", """
            kind: train
            name: it-shm
            model: {mlp: [64, 512, 512, 10], activation: relu}
            data: {csv: \(repoRoot)/data/digits.csv, scale: 0.0625}
            optimizer: {sgd: {lr: 0.05, momentum: 0.9}}
            steps: 30
            batch_size: 64
            micro_batch: 16
            holdout: 0.2
            seed: 3
            """)
        let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"])
        try #require(ls == 0, "\(le)")
        let cluster = try await ProcessCluster(workers: 2)
        try await cluster.waitForWorkers(2)
        let (s, _, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--follow", "--json", "-o", dir.path + "/cluster"])
        #expect(s == 0, "\(e.suffix(500))")
        #expect(fileBytes(dir.path + "/cluster/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"),
                "parameters through shared memory differ from --local")
        let log = (cluster.coordinator.stdout + cluster.coordinator.stderr).joined(separator: "\n")
        #expect(log.contains("worker w1 shares memory") && log.contains("worker w2 shares memory"), "shared memory was not agreed: \(log.suffix(800))")
        let prefix = "sigma-shm-\(cluster.coordinator.pid)-"
        let written = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm").filter { $0.hasPrefix(prefix) }
        #expect(!written.isEmpty, "the coordinator wrote no shared-memory segment: parameters went through the socket")
        cluster.stop()
        _ = try await cluster.coordinator.wait(timeout: 30)
        let left = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm").filter { $0.hasPrefix(prefix) }
        #expect(left.isEmpty, "segments left behind: \(left)")
    }

    /// `input_transport: coordinator`: workers that cannot see the data — each in its own mount namespace with an
    /// empty tmpfs over the data folder — fetch the files from the coordinator, check them against SHA-256 and keep
    /// them in their cache under that digest. The trained model is bitwise the one `--local` trains; a second job
    /// fetches nothing (the cached files keep their inodes); the same spec with `input_transport: shared` fails
    /// naming the file the workers cannot read. (Hiding the folder needs root and mount namespaces; without them the
    /// workers could read it, and the rest is checked all the same.)
    @Test func workersFetchInputsFromTheCoordinatorAndCacheThem() async throws {
        let dir = try Scratch("ship")
        defer { dir.remove() }
        let data = dir.path + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: repoRoot + "/data/digits.csv", toPath: data + "/digits.csv")
        func spec(_ transport: String) throws -> String {
            try dir.write("train-\(transport).yaml", """
                kind: train
                name: it-ship
                model: {mlp: [64, 256, 10], activation: relu}
                data: {csv: \(data)/digits.csv, scale: 0.0625}
                optimizer: {sgd: {lr: 0.05, momentum: 0.9}}
                steps: 40
                batch_size: 64
                micro_batch: 8
                holdout: 0.2
                seed: 5
                input_transport: \(transport)
                """)
        }
        let shipped = try spec("coordinator")
        let (ls, _, le) = try await sigma(["submit", shipped, "--local", "-o", dir.path + "/local"])
        try #require(ls == 0, "\(le)")
        let cluster = try await ProcessCluster(workers: 0)
        defer { cluster.stop() }
        let caches = [dir.path + "/cache-1", dir.path + "/cache-2"]
        var hidden = true
        for (i, c) in caches.enumerated() { hidden = try cluster.addWorker("w\(i + 1)", hiding: data, cache: c) && hidden }
        try await cluster.waitForWorkers(2)
        // (round-robin: both workers get shards of every step, so both fetch)
        let (s, _, e) = try await sigma(["submit", shipped, "--coordinator", cluster.endpoint, "--policy", "round-robin", "--follow", "-o", dir.path + "/cluster"])
        #expect(s == 0, "\(e.suffix(800))")
        #expect(fileBytes(dir.path + "/cluster/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"),
                "parameters trained from shipped inputs differ from --local")
        let (sha, _) = try SHA256.file(data + "/digits.csv")
        var inodes: [UInt64] = []
        for c in caches {
            let copy = c + "/" + sha + "/digits.csv"
            #expect(fileBytes(copy) == fileBytes(data + "/digits.csv"), "no verified copy at \(copy)")
            inodes.append(((try? FileManager.default.attributesOfItem(atPath: copy))?[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0)
        }
        // Again: from the cache, nothing fetched.
        let (s2, _, e2) = try await sigma(["submit", shipped, "--coordinator", cluster.endpoint, "--policy", "round-robin", "--follow", "-o", dir.path + "/again"])
        #expect(s2 == 0, "\(e2.suffix(800))")
        #expect(fileBytes(dir.path + "/again/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"))
        for (c, inode) in zip(caches, inodes) {
            let now = ((try? FileManager.default.attributesOfItem(atPath: c + "/" + sha + "/digits.csv"))?[.systemFileNumber] as? NSNumber)?.uint64Value
            #expect(inode != 0 && now == inode, "\(c): the cached copy was fetched again")
        }
        // A cached copy changed on disk (one byte, same size) is not used: it is fetched again, and training still
        // equals --local.
        let tampered = caches[0] + "/" + sha + "/digits.csv"
        chmod(tampered, 0o644)
        var bytes = try #require(fileBytes(tampered))
        bytes[10] = bytes[10] == UInt8(ascii: "1") ? UInt8(ascii: "2") : UInt8(ascii: "1")
        try Data(bytes).write(to: URL(fileURLWithPath: tampered))
        let (s4, _, e4) = try await sigma(["submit", shipped, "--coordinator", cluster.endpoint, "--policy", "round-robin", "--follow", "-o", dir.path + "/tampered"])
        #expect(s4 == 0, "\(e4.suffix(800))")
        #expect(fileBytes(dir.path + "/tampered/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"))
        #expect(fileBytes(tampered) == fileBytes(data + "/digits.csv"), "the changed cached copy was used or kept")
        // The workers really cannot read the path: the shared transport fails, naming the file.
        guard hidden else { return }
        let (s3, _, e3) = try await sigma(["submit", try spec("shared"), "--coordinator", cluster.endpoint, "--follow"])
        #expect(s3 != 0 && e3.contains(data + "/digits.csv"), "shared transport with hidden data: \(s3) \(e3.suffix(400))")
    }

    /// A map-reduce over an `.npy` the workers cannot see: they fetch it from the coordinator (tiny shards included,
    /// which the poller must not fetch for), and the result equals a single-process Float64 reference; a second run
    /// fetches nothing.
    @Test func mapReduceShipsItsNpyToHiddenWorkers() async throws {
        let dir = try Scratch("ship-mr")
        defer { dir.remove() }
        let data = dir.path + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        let values = (0..<100_000).map { _ in Double.random(in: -1...1, using: &rng) }
        try NpyFile.write(path: data + "/v.npy", float64: values)
        let spec = try dir.write("mr.yaml", "kind: map-reduce\nname: it-ship-mr\ninput: {npy: \(data)/v.npy}\nmap: square\nreduce: [sum, count, max]\nshards: 40\ninput_transport: coordinator\n")
        let cluster = try await ProcessCluster(workers: 0)
        defer { cluster.stop() }
        let caches = [dir.path + "/cache-1", dir.path + "/cache-2"]
        for (i, c) in caches.enumerated() { try cluster.addWorker("w\(i + 1)", hiding: data, cache: c) }
        try await cluster.waitForWorkers(2)
        let client = try localClient(cluster.endpoint)
        defer { client.close() }
        let job = try JobSpec.load(path: spec)
        func run() async throws -> MapReduceResult? {
            let o = try await client.runToEnd(job)
            #expect(o.state == .completed, "\(o.error)")
            return try? o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
        }
        let squares = values.map { $0 * $0 }
        let want = squares.reduce(0, +)
        var result = try await run()
        #expect(abs((result?.total.total ?? .nan) - want) <= 1e-12 * want, "\(String(describing: result?.total.total)) vs \(want)")
        #expect(result?.total.count == UInt64(values.count) && result?.total.max == squares.max())
        let (sha, _) = try SHA256.file(data + "/v.npy")
        let copies = caches.map { $0 + "/" + sha + "/v.npy" }.filter { FileManager.default.fileExists(atPath: $0) }
        #expect(!copies.isEmpty, "no worker cached the shipped file")
        for c in copies { #expect(fileBytes(c) == fileBytes(data + "/v.npy")) }
        let inodes = copies.map { ((try? FileManager.default.attributesOfItem(atPath: $0))?[.systemFileNumber] as? NSNumber)?.uint64Value }
        result = try await run()
        #expect(abs((result?.total.total ?? .nan) - want) <= 1e-12 * want)
        for (c, inode) in zip(copies, inodes) {
            #expect(((try? FileManager.default.attributesOfItem(atPath: c))?[.systemFileNumber] as? NSNumber)?.uint64Value == inode, "\(c) fetched again")
        }
    }

    /// An embed job shipping its inputs: hidden workers fetch the text file and the model folder's files, rebuild the
    /// folder in their cache (links named as in the folder) and embed the same bits as the local run. (Hidden where
    /// mount namespaces are available.)
    @Test func embedShipsTheModelFolderToHiddenWorkers() async throws {
        let model = repoRoot + "/models/all-MiniLM-L6-v2"
        try #require(FileManager.default.fileExists(atPath: model + "/model.safetensors"), "run `make model` first")
        let dir = try Scratch("ship-embed")
        defer { dir.remove() }
        let data = dir.path + "/data"
        let names = ["config.json", "vocab.txt", "model.safetensors", "sentence_bert_config.json"]
        try FileManager.default.createDirectory(atPath: data + "/m", withIntermediateDirectories: true)
        for n in names { try FileManager.default.copyItem(atPath: model + "/" + n, toPath: data + "/m/" + n) }
        let lines = (0..<200).map { "sentence \($0) about shipping café files to 東京 workers" }
        try (lines.joined(separator: "\n") + "\n").write(toFile: data + "/lines.txt", atomically: true, encoding: .utf8)
        let spec = try dir.write("embed.yaml", "kind: embed\nmodel: \(data)/m\ninput: \(data)/lines.txt\nbatch_size: 16\ninput_transport: coordinator\n")
        let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"], timeout: 600)
        try #require(ls == 0, "\(le)")
        let cluster = try await ProcessCluster(workers: 0)
        defer { cluster.stop() }
        let caches = [dir.path + "/cache-1", dir.path + "/cache-2"]
        for (i, c) in caches.enumerated() { try cluster.addWorker("w\(i + 1)", hiding: data, cache: c) }
        try await cluster.waitForWorkers(2)
        let (s, _, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--policy", "round-robin", "--follow", "-o", dir.path + "/cluster"], timeout: 600)
        #expect(s == 0, "\(e.suffix(800))")
        #expect(fileBytes(dir.path + "/cluster/embeddings.npy") == fileBytes(dir.path + "/local/embeddings.npy"), "embeddings differ from the local run")
        for c in caches {
            let folders = (try? FileManager.default.contentsOfDirectory(atPath: c))?.filter { $0.hasPrefix("folder-") } ?? []
            #expect(folders.count == 1, "\(c): \(folders)")
            if let f = folders.first {
                #expect(Set((try? FileManager.default.contentsOfDirectory(atPath: c + "/" + f)) ?? []) == Set(names), "\(c)/\(f)")
                #expect(fileBytes(c + "/" + f + "/config.json") == fileBytes(model + "/config.json"))
            }
        }
    }

    /// `gradient_transport: bf16` (lossy, half the gradient bytes) still trains the digits MLP on 2 workers to the
    /// accuracy the exact transport reaches.
    @Test func bf16GradientTransportTrainsOnTheCluster() async throws {
        let dir = try Scratch("train-bf16")
        defer { dir.remove() }
        let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 200, extra: "gradient_transport: bf16"))
        let cluster = try await ProcessCluster(workers: 2)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(2)
        let (s, out, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--follow", "--json", "-o", dir.path + "/out"])
        #expect(s == 0, "\(e.suffix(500))")
        let summary = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        let acc = ((summary?["results"] as? [String: Any])?["metrics"] as? [String: Any])?["eval_accuracy"] as? Double ?? 0
        #expect(acc >= 0.93, "held-out accuracy with bf16 gradients: \(acc); \(out.suffix(600))")
        // The rounding really happened: the exact transport gives other bits.
        let exact = try dir.write("exact.yaml", digitsTrainSpec(steps: 200))
        let (ls, _, le) = try await sigma(["submit", exact, "--local", "-o", dir.path + "/exact"])
        try #require(ls == 0, "\(le)")
        #expect(fileBytes(dir.path + "/exact/model.safetensors") != fileBytes(dir.path + "/out/model.safetensors"))
    }

    /// A worker SIGKILLed mid-training: its shard of the step runs elsewhere and the result is still bitwise equal.
    @Test func trainingSurvivesAKilledWorkerBitwise() async throws {
        let dir = try Scratch("train-kill")
        defer { dir.remove() }
        let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 400))
        let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"])
        try #require(ls == 0, "\(le)")
        // (this checks the re-run path: hedging off, or a backup copy could win before the timeout; least-loaded so
        // every worker has a shard in every step — latency-aware may leave a worker out of such tiny steps)
        let cluster = try await ProcessCluster(workers: 3, coordinatorArgs: ["--heartbeat-ms", "250", "--no-hedging", "--policy", "least-loaded"])
        defer { cluster.stop() }
        try await cluster.waitForWorkers(3)
        let run = try await runKillingAWorker(cluster, spec: spec, atStep: 40, out: dir.path + "/cluster")
        let (o, killed) = (run.outcome, run.killedAt)
        #expect(o.state == .completed, "\(o.error)")
        #expect(killed < 400)
        await expectSameAsLocal(cluster, job: run.job, clusterOut: dir.path + "/cluster", localOut: dir.path + "/local",
                                "a worker killed at step \(killed)")
        #expect(o.reruns >= 1, "the killed worker (at step \(killed)) shard was not run again; progress steps seen \(run.seen); coordinator log: \(cluster.coordinator.stderr.suffix(12).joined(separator: "\n"))")
    }

    /// Checkpoints every 50 steps; resuming from step 100 (on the cluster) ends at the same bits as an
    /// uninterrupted run.
    @Test func resumeFromCheckpointMatchesUninterruptedRun() async throws {
        let dir = try Scratch("resume")
        defer { dir.remove() }
        let full = try dir.write("full.yaml", digitsTrainSpec(steps: 200, extra: "checkpoint_every: 50\ncheckpoint_dir: \(dir.path)/ckpt"))
        let (s1, _, e1) = try await sigma(["submit", full, "--local", "-o", dir.path + "/full"])
        try #require(s1 == 0, "\(e1)")
        for step in [50, 100, 150, 200] {
            #expect(FileManager.default.fileExists(atPath: dir.path + "/ckpt/step-\(step).safetensors"), "checkpoint at step \(step)")
        }
        let (_, meta) = try SafeTensors.readWithMetadata(try #require(fileBytes(dir.path + "/ckpt/step-100.safetensors")))
        #expect(meta["sigma.step"] == "100")
        let plain = try dir.write("plain.yaml", digitsTrainSpec(steps: 200))
        let cluster = try await ProcessCluster(workers: 2)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(2)
        let (s2, _, e2) = try await sigma(["submit", plain, "--coordinator", cluster.endpoint, "--follow", "-o", dir.path + "/resumed",
                                           "--resume", dir.path + "/ckpt/step-100.safetensors"])
        #expect(s2 == 0, "\(e2)")
        #expect(fileBytes(dir.path + "/resumed/model.safetensors") == fileBytes(dir.path + "/full/model.safetensors"))
        #expect(fileBytes(dir.path + "/resumed/history.json") == fileBytes(dir.path + "/full/history.json"))
        // A checkpoint from another seed is refused, naming the file and the mismatch.
        let other = try dir.write("other.yaml", digitsTrainSpec(steps: 200).replacingOccurrences(of: "seed: 7", with: "seed: 8"))
        let (s3, _, e3) = try await sigma(["submit", other, "--local", "--resume", dir.path + "/ckpt/step-100.safetensors"])
        #expect(s3 == 2 && e3.contains("step-100.safetensors") && e3.contains("seed"), "\(e3)")
    }

    /// A PyTorch-trained MLP (committed safetensors with `0.weight`… names) run as a distributed `infer` job
    /// reproduces PyTorch's logits; `eval` reduces accuracy, loss and a confusion matrix that agree with them.
    @Test func inferReproducesPyTorchLogitsDistributed() async throws {
        let fx = repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp"
        let dir = try Scratch("infer")
        defer { dir.remove() }
        let infer = try dir.write("infer.yaml", """
            kind: infer
            model: {mlp: [64, 64, 10], activation: relu, weights: \(fx)/model.safetensors}
            data: {x: \(fx)/inputs.npy}
            batch_size: 16
            """)
        let eval = try dir.write("eval.yaml", """
            kind: eval
            model: {mlp: [64, 64, 10], activation: relu, weights: \(fx)/model.safetensors}
            data: {x: \(fx)/inputs.npy, y: \(fx)/labels.npy}
            batch_size: 16
            """)
        let cluster = try await ProcessCluster(workers: 2)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(2)
        let (s, _, e) = try await sigma(["submit", infer, "--coordinator", cluster.endpoint, "--follow", "-o", dir.path + "/infer"])
        try #require(s == 0, "\(e)")
        let ours = try NumPyFormat.readNpy(path: dir.path + "/infer/predictions.npy")
        let torch = try NumPyFormat.readNpy(path: fx + "/logits.npy")
        #expect(ours.shape == torch.shape)
        var worst: Float = 0
        ours.withData { a in torch.withData { b in for i in 0..<min(a.count, b.count) { worst = max(worst, abs(a[i] - b[i])) } } }
        #expect(worst <= 1e-4, "max |Sigma − PyTorch| = \(worst)")

        let (s2, o2, e2) = try await sigma(["submit", eval, "--coordinator", cluster.endpoint, "--follow", "--json", "-o", dir.path + "/eval"])
        try #require(s2 == 0, "\(e2)")
        let res = (try JSONSerialization.jsonObject(with: Data(o2.utf8)) as? [String: Any])?["results"] as? [String: Any]
        let m = try #require(res?["metrics"] as? [String: Any])
        let labels = try NumPyFormat.readNpy(path: fx + "/labels.npy")
        let expected = labels.withData { l in torch.withData { t in (0..<l.count).filter { Metrics.argmax(t, row: $0, classes: 10) == Int(l[$0]) }.count } }
        // (JSON text keeps ~16 significant digits, hence the 1e-12.)
        #expect(abs((m["accuracy"] as? Double ?? 0) - Double(expected) / Double(labels.count)) < 1e-12, "\(m)")
        let confusion = try #require(m["confusion_matrix"] as? [[Int]])
        #expect(confusion.count == 10 && confusion.flatMap { $0 }.reduce(0, +) == labels.count)
        #expect((0..<10).map { confusion[$0][$0] }.reduce(0, +) == expected)

        // Provenance: the eval job (job 2) carries the content digests of its data files and of its weights.
        let (s3, o3, e3) = try await sigma(["job", "2", "--json", "--coordinator", cluster.endpoint])
        try #require(s3 == 0, "\(e3)")
        let job = try #require(try JSONSerialization.jsonObject(with: Data(o3.utf8)) as? [String: Any])
        #expect(job["input_digest"] as? String == (try Digest.files([fx + "/inputs.npy", fx + "/labels.npy"])))
        #expect(job["model_digest"] as? String == (try Digest.file(fx + "/model.safetensors")))
        #expect((job["input_digest"] as? String)?.count == 16 && job["input_digest"] as? String != job["model_digest"] as? String)
    }

    /// `embed` over 1,000 lines on 3 workers writes the same bits as the local run, in input order.
    @Test func embedOnThreeWorkersEqualsLocalBitwise() async throws {
        let model = repoRoot + "/models/all-MiniLM-L6-v2"
        try #require(FileManager.default.fileExists(atPath: model + "/model.safetensors"), "run `make model` first")
        let dir = try Scratch("embed")
        defer { dir.remove() }
        var rng = SplitMix64(seed: 3)
        let words = ("the a cluster worker shard gradient model data fast slow reduce map sum train embed sentence vector network "
            + "latency bandwidth scheduler coordinator result trust bit exact tree order café naïve 東京 🙂 https://example.com 3.14").split(separator: " ")
        let lines = (0..<1000).map { _ in (0..<(4 + Int(rng.next() % 9))).map { _ in String(words[Int(rng.next() % UInt64(words.count))]) }.joined(separator: " ") }
        _ = try dir.write("lines.txt", lines.joined(separator: "\n") + "\n")
        let spec = try dir.write("embed.yaml", "kind: embed\nmodel: \(model)\ninput: \(dir.path)/lines.txt\nbatch_size: 32\n")
        let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"], timeout: 600)
        try #require(ls == 0, "\(le)")
        let cluster = try await ProcessCluster(workers: 3)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(3)
        let (s, _, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--follow", "-o", dir.path + "/cluster"], timeout: 600)
        #expect(s == 0, "\(e)")
        let local = try #require(fileBytes(dir.path + "/local/embeddings.npy"))
        #expect(fileBytes(dir.path + "/cluster/embeddings.npy") == local, "embeddings differ from the local run")
        let t = try NumPyFormat.readNpy(path: dir.path + "/local/embeddings.npy")
        #expect(t.shape == [1000, 384])
        t.withData { p in
            for r in [0, 499, 999] {
                let n = (0..<384).reduce(Float(0)) { $0 + p[r * 384 + $1] * p[r * 384 + $1] }
                #expect(abs(n - 1) < 1e-4, "row \(r) is not unit length (\(n))")
            }
        }
    }

    /// Bad specs, missing files and model/data mismatches are refused at submit time with a message naming the
    /// problem (exit 2), and the workers are still there afterwards.
    @Test func badJobsAreRefusedAtSubmitNamingTheProblem() async throws {
        let dir = try Scratch("bad")
        defer { dir.remove() }
        let fx = repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp"
        let cluster = try await ProcessCluster(workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let cases: [(String, String, [String])] = [
            ("missing-data", digitsTrainSpec(steps: 5).replacingOccurrences(of: "data/digits.csv", with: "data/nope.csv"), ["nope.csv"]),
            ("features", digitsTrainSpec(steps: 5).replacingOccurrences(of: "[64, 32, 10]", with: "[63, 32, 10]"), ["63", "64 feature"]),
            ("labels", digitsTrainSpec(steps: 5).replacingOccurrences(of: "[64, 32, 10]", with: "[64, 32, 5]"), ["label", "0..<5"]),
            ("micro", digitsTrainSpec(steps: 5).replacingOccurrences(of: "micro_batch: 6", with: "micro_batch: 100"), ["micro_batch", "100"]),
            ("optimizer", digitsTrainSpec(steps: 5).replacingOccurrences(of: "adam:", with: "adagrad:"), ["adagrad"]),
            ("weights-shape", """
                kind: infer
                model: {mlp: [64, 32, 10], weights: \(fx)/model.safetensors}
                data: {x: \(fx)/inputs.npy}
                """, ["0.weight", "[64, 64]", "[32, 64]"]),
            ("weights-prefix", """
                kind: infer
                model: {mlp: [64, 64, 10], weights: \(fx)/model.safetensors, prefix: "net."}
                data: {x: \(fx)/inputs.npy}
                """, ["0.weight", "missing"]),
            ("eval-no-labels", """
                kind: eval
                model: {mlp: [64, 64, 10], weights: \(fx)/model.safetensors}
                data: {x: \(fx)/inputs.npy}
                """, ["data.y"]),
            ("embed-no-model", "kind: embed\nmodel: \(dir.path)/no-model\ninput: \(fx)/inputs.csv\n", ["no-model"]),
        ]
        for (name, text, needles) in cases {
            let spec = try dir.write(name + ".yaml", text)
            let (s, _, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--follow"])
            #expect(s == 2, "\(name): exit \(s): \(e)")
            for n in needles { #expect(e.contains(n), "\(name): '\(n)' not in: \(e)") }
        }
        // The worker is still alive and a good job still runs.
        let good = try dir.write("good.yaml", digitsTrainSpec(steps: 5))
        let (s, _, e) = try await sigma(["submit", good, "--coordinator", cluster.endpoint, "--follow", "-o", dir.path + "/good"])
        #expect(s == 0, "\(e)")
        #expect(cluster.workers.withLock { $0.allSatisfy { $0.process.isRunning } })
    }
}

/// Every example spec in examples/ (the ones docs/jobs.md shows) runs on a 2-worker cluster and writes the files
/// docs/jobs.md promises; the ML kinds also run with --local and give the same bytes.
@Suite(.serialized, .timeLimit(.minutes(10))) struct ExampleSpecTests {
    @Test func everyExampleSpecRunsOnTheClusterAndLocally() async throws {
        let dir = try Scratch("examples")
        defer { dir.remove() }
        let cluster = try await ProcessCluster(workers: 2)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(2)
        let expected: [(String, [String])] = [
            ("sum-of-squares.yaml", []),
            ("train-digits.yaml", ["model.safetensors", "history.json", "metrics.json"]),
            ("train-cnn.yaml", ["model.safetensors", "history.json", "metrics.json"]),
            ("train-transformer.yaml", ["model.safetensors", "history.json", "metrics.json"]),
            ("finetune-reviews.yaml", ["model.safetensors", "history.json", "metrics.json"]),
            ("train-formats.yaml", ["model.safetensors", "history.json", "metrics.json"]),
            ("infer-digits.yaml", ["predictions.npy"]),
            ("eval-digits.yaml", ["predictions.npy", "metrics.json"]),
            ("embed-sentences.yaml", ["embeddings.npy"]),
        ]
        // (serve-*.yaml are deployments, not jobs: ServeTests deploys them)
        let listed = try FileManager.default.contentsOfDirectory(atPath: repoRoot + "/examples").filter { $0.hasSuffix(".yaml") && !$0.hasPrefix("serve-") }
        #expect(Set(listed) == Set(expected.map(\.0)), "examples/ and this test disagree")
        let docs = try String(contentsOfFile: repoRoot + "/docs/jobs.md", encoding: .utf8)
        for (job, (name, files)) in zip(1..., expected) {
            #expect(docs.contains("examples/" + name), "docs/jobs.md does not show examples/\(name)")
            if ["train-cnn.yaml", "train-transformer.yaml", "finetune-reviews.yaml", "train-formats.yaml"].contains(name) {
                let text = try String(contentsOfFile: repoRoot + "/examples/" + name, encoding: .utf8)
                #expect(docs.contains("```yaml\n" + text + "```"), "docs/jobs.md's copy of examples/\(name) differs from the file")
            }
            let spec = repoRoot + "/examples/" + name
            let out = dir.path + "/cluster-" + name
            // (a debug build's coordinator reads MiniLM's 90 MB for the fine-tune before it accepts: more than the CLI's
            // default 10 s once, under the whole suite on 2 cores)
            let (s, o, e) = try await sigma(["submit", spec, "--coordinator", cluster.endpoint, "--follow", "-o", out, "--timeout", "120"], timeout: 600)
            #expect(s == 0, "\(name): \(e.suffix(400))")
            // --follow off a terminal: plain progress lines with throughput (rows/s when the job's rows are known); a
            // job over before a second progress update has its mean rate on the completion line.
            #expect((e + o).contains(" rows/s") || (e + o).contains(" shards/s") || (e + o).contains(" samples/s"), "\(name): \(e.suffix(300)) \(o.suffix(300))")
            if files.isEmpty {
                #expect(o.contains("sum") && e.contains(" rows/s"), "\(name): \(o)")
                // A map-reduce job --local prints the same values (full precision), through the same kind.
                let (ls, lo, le) = try await sigma(["submit", spec, "--local"], timeout: 600)
                func values(_ text: String) -> [String] { text.split(separator: "\n").map(String.init).filter { $0.contains(" = ") } }
                #expect(ls == 0 && !values(o).isEmpty && values(lo) == values(o), "\(name) --local: \(lo) \(le.suffix(300))")
                continue
            }
            for f in files { #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(name): no \(f)") }
            let local = dir.path + "/local-" + name
            let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", local], timeout: 600)
            #expect(ls == 0, "\(name) --local: \(le.suffix(400))")
            await expectSameAsLocal(cluster, job: job, clusterOut: out, localOut: local, files: files, name)
        }
    }
}

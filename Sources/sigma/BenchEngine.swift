import Foundation
import SigmaJobs
import SigmaEngine
import SigmaTransport

/// Engine matmul (`Kernels.matmul`: allocation + `cblas_sgemm`) against `cblas_sgemm` on preallocated buffers,
/// n = 256…2048, 1 and 2 BLAS threads; medians of `runs`.
func benchGemm(runs: Int) {
    let kernels = BLASKernels.current ?? BLASKernels.startup
    print("# sigma bench gemm — \(BLASKernels.cpuModel(cpuinfo: BLASKernels.procCPUInfo)), \(ProcessInfo.processInfo.activeProcessorCount) cores")
    print("# OpenBLAS kernels: \(BLASInfo.coreName), chosen by \(kernels.choice.rawValue) (OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset")): \(kernels.note)")
    if let w = kernels.warning { print("# warning: \(w)") }
    let tiling = Kernels.tiling
    func cut(_ a: Int?, _ unit: String) -> String { a.map { "\(unit) at multiples of \($0)" } ?? "never by \(unit)" }
    print("# where this kernel set rounds alike (BLASTiling): row-stable products \(tiling.stableRows) rows per call\(tiling.stableTransposed ? " (transposed)" : ""); "
          + "products split over threads \(cut(tiling.splitRows, "rows")), \(cut(tiling.splitColumns, "columns"))")
    print("")
    print("| n | threads | Sigma GFLOP/s | cblas_sgemm GFLOP/s | ratio | target |")
    print("|---|---|---|---|---|---|")
    for threads in [1, 2] {
        BLASInfo.setThreads(threads)
        for n in [256, 512, 1024, 2048] {
            var rng = SeededRandom(seed: UInt64(n))
            let a = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng), b = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng)
            let reps = max(4, Int(2e10 / (2 * pow(Double(n), 3))))   // ≥ 4 products and ~0.1 s of work per sample at 200 GFLOP/s
            var ours: [Double] = [], direct: [Double] = []
            _ = Kernels.matmul(a, b)
            for _ in 0..<runs {
                // Alternate the two so drift on a shared machine hits both alike.
                var t = monotonicNanos()
                for _ in 0..<reps { _ = Kernels.matmul(a, b) }
                ours.append(Double(monotonicNanos() - t))
                t = monotonicNanos()
                for _ in 0..<reps { BLASInfo.sgemmDirect(a, b, n: n, threads: threads) }
                direct.append(Double(monotonicNanos() - t))
                // After a product on several threads OpenBLAS's threads spin for ~0.1 s (their default timeout) — on the
                // cores the engine's next sample needs (measured: 88–95 % at n = 2048 without this pause, 2 threads).
                if threads > 1 { usleep(200_000) }
            }
            let flops = 2 * pow(Double(n), 3) * Double(reps)
            let g1 = flops / median(ours), g2 = flops / median(direct)
            print("| \(n) | \(threads) | \(String(format: "%.1f", g1)) | \(String(format: "%.1f", g2)) | \(String(format: "%.1f %%", 100 * g1 / g2)) | ≥ 90 % |")
        }
    }
}

/// One SGD training step of an MLP 784-1024-1024-10 on batches of 256 (forward, backward, update), samples/s,
/// 1 and 2 engine threads; medians of `runs` (each 20 steps after 3 warm-up steps). Each run is followed by a measure of
/// the ceiling and a run of the hand-written NumPy loop (`bench/mlp_numpy.py`, same shapes and update), so drift on a
/// shared machine hits all three alike; each ratio is the median of its run's pairs.
func benchMLP(runs: Int) {
    print("# sigma bench mlp — \(BLASKernels.cpuModel(cpuinfo: BLASKernels.procCPUInfo)), \(ProcessInfo.processInfo.activeProcessorCount) cores; "
          + "OpenBLAS kernels: \(BLASInfo.coreName), MLP 784-1024-1024-10, batch 256, SGD momentum 0.9")
    print("")
    print("| threads | Sigma samples/s | NumPy loop, same run | Sigma / NumPy (median of pairs, range) | ceiling: peak GEMM rate, same run | Sigma / ceiling (median of pairs, range) | target |")
    print("|---|---|---|---|---|---|---|")
    let flopsPerSample = mlpStepFLOPs(sizes: [784, 1024, 1024, 10], batch: 256) / 256
    func share(_ values: [Double]) -> String {
        values.isEmpty ? "" : "\(Int(median(values).rounded())) % (\(Int(values.min()!.rounded()))–\(Int(values.max()!.rounded())) %)"
    }
    for threads in [1, 2] {
        var ours: [Double] = [], numpy: [Double] = [], ceilings: [Double] = []
        for _ in 0..<runs {
            ours.append(engineStepRate(threads: threads, runs: 1))
            // (the ceiling before NumPy: its OpenBLAS threads' spinning ends while Python starts, not in our next run)
            ceilings.append(peakGEMMRate(threads: threads) / flopsPerSample)
            if let r = numpyStepRate(threads: threads) { numpy.append(r) }
        }
        let base = numpy.isEmpty ? "unavailable (python3 with numpy)" : "\(Int(median(numpy)))"
        let peak = median(ceilings) * flopsPerSample
        let ceiling = "\(Int(median(ceilings))) (\(String(format: "%.0f", peak / 1e9)) GFLOP/s ÷ \(String(format: "%.2f", flopsPerSample / 1e6)) MFLOP per sample)"
        print("| \(threads) | \(Int(median(ours))) | \(base) | \(share(zip(ours, numpy).map { $0 / $1 * 100 })) | \(ceiling) | "
              + "\(share(zip(ours, ceilings).map { $0 / $1 * 100 })) | ≥ 110 % of NumPy, ≥ 75 % of the ceiling |")
    }
    print("")
    print("Ceiling: the step's matrix products (forward, weight gradients, input gradients of layers 2 and 3 — the")
    print("first layer's input needs none, in Sigma and in the NumPy loop alike) at the best rate 2048 × 2048 products")
    print("reach right after each run, on OpenBLAS's own threads or split over the engine's; no step can be faster,")
    print("whatever runs the products.")
}

/// Floating-point operations (2 per multiply-add) of the matrix products in one SGD step of an MLP with these layer
/// widths: forward and weight gradients of every layer, input gradients of every layer but the first.
func mlpStepFLOPs(sizes: [Int], batch: Int) -> Double {
    let layers = zip(sizes, sizes.dropFirst()).map { Double($0 * $1) }
    let perSample = 2 * (2 * layers.reduce(0, +) + layers.dropFirst().reduce(0, +))
    return perSample * Double(batch)
}

/// FLOP/s of 2048 × 2048 products on `threads` threads, median of 3: the better of OpenBLAS's own threads
/// (`cblas_sgemm`) and the engine's split of a product over its threads (`Kernels.matmul`).
func peakGEMMRate(threads: Int) -> Double {
    let saved = BLASInfo.threads
    BLASInfo.setThreads(threads)
    defer { BLASInfo.setThreads(saved) }
    let n = 2048
    var rng = SeededRandom(seed: 9)
    let a = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng), b = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng)
    func rate(_ product: () -> Void) -> Double {
        product()
        let times = (0..<3).map { _ in
            let t = monotonicNanos()
            product()
            return Double(monotonicNanos() - t) / 1e9
        }
        return 2 * pow(Double(n), 3) / median(times)
    }
    // (the engine first: after `cblas_sgemm` on several threads OpenBLAS's threads spin for ~0.1 s, which would slow it)
    return max(rate { _ = Kernels.matmul(a, b) }, rate { BLASInfo.sgemmDirect(a, b, n: n, threads: threads) })
}

/// FLOP/s of `threads` threads each computing 1024 × 1024 products on one BLAS thread (`Kernels.matmul`, each into its
/// own output), all at once — as a worker's lanes do.
func concurrentGEMMRate(threads: Int) -> Double {
    let saved = BLASInfo.threads
    BLASInfo.setThreads(1)
    defer { BLASInfo.setThreads(saved) }
    let n = 1024, reps = 24
    var rng = SeededRandom(seed: 3)
    let a = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng), b = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng)
    _ = Kernels.matmul(a, b)
    let t = monotonicNanos()
    // (threads of their own, as a worker's compute threads: not the dispatch pool, which may run them one by one)
    let workers = (0..<threads).map { k in OSThread(name: "gemm-\(k)") { for _ in 0..<reps { _ = Kernels.matmul(a, b) } } }
    for w in workers { w.join() }
    let seconds = Double(monotonicNanos() - t) / 1e9
    return 2 * pow(Double(n), 3) * Double(reps * threads) / seconds
}

/// One run of the NumPy baseline (20 steps after 3 warm-up) on `threads` BLAS threads; nil without python3/numpy.
func numpyStepRate(threads: Int) -> Double? {
    pythonBaseline("bench/mlp_numpy.py", ["1"], threads: threads)
}

/// Runs a baseline script with `SIGMA_BENCH_PYTHON` (default python3) and `threads` BLAS threads; its stdout is one
/// number. nil when the script, the Python or its packages are missing.
func pythonBaseline(_ script: String, _ args: [String], threads: Int, environment extra: [String: String] = [:]) -> Double? {
    guard FileManager.default.fileExists(atPath: script) else { return nil }
    let p = Process(), out = Pipe()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [ProcessInfo.processInfo.environment["SIGMA_BENCH_PYTHON"] ?? "python3", script] + args
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_NUM_THREADS"] = "\(threads)"
    env.merge(extra) { $1 }
    p.environment = env
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return nil }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { return nil }
    return Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
}

/// The engine alone: samples/s of the MLP 784-1024-1024-10 SGD step (batch 256) on `threads` BLAS threads.
func engineStepRate(threads: Int, runs: Int, steps: Int = 20) -> Double {
    let saved = BLASInfo.threads
    BLASInfo.setThreads(threads)
    defer { BLASInfo.setThreads(saved) }
    let model = Sequential.mlp([784, 1024, 1024, 10], seed: 1)
    let opt = SGD(learningRate: 0.01, momentum: 0.9)
    var rng = SeededRandom(seed: 2)
    let x = Tensor.uniform([256, 784], low: 0, high: 1, rng: &rng)
    let y = (0..<256).map { _ in Int32(rng.next() % 10) }
    func gradients() {
        let g = Graph()
        opt.zeroGrad(model.parameters)
        g.backward(from: model(g.constant(x)).crossEntropy(y))
    }
    func step() {
        gradients()   // the graph is gone here, so the update writes the weights in place (no copy-on-write)
        opt.step(model.parameters)
    }
    for _ in 0..<3 { step() }
    var rates: [Double] = []
    for _ in 0..<runs {
        let t = monotonicNanos()
        for _ in 0..<steps { step() }
        rates.append(Double(steps * 256) / (Double(monotonicNanos() - t) / 1e9))
    }
    return median(rates)
}

/// One run of the sentence-transformers baseline (`bench/embed_sentence_transformers.py`) on `threads` threads over
/// the corpus file; nil when `SIGMA_BENCH_PYTHON` (default python3) has no sentence-transformers.
func sentenceTransformersRate(model: String, sentences: String, threads: Int) -> Double? {
    pythonBaseline("bench/embed_sentence_transformers.py", [model, sentences, "1", "\(threads)"], threads: threads,
                   environment: ["HF_HUB_OFFLINE": "1"])
}

/// The benchmark corpus: 2,000 sentences of 8–40 words drawn (seeded) from the model's whole-word vocabulary.
func benchSentences(vocab: [String: Int32]) -> [String] {
    let words = vocab.keys.filter { $0.count >= 3 && $0.allSatisfy(\.isLetter) && !$0.hasPrefix("[") }.sorted()
    var rng = SeededRandom(seed: 7)
    return (0..<2000).map { _ in
        let n = 8 + Int(rng.next() % 33)
        return (0..<n).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") + "."
    }
}

/// all-MiniLM-L6-v2 embedding throughput (sentences/s) on 1 and 2 threads; medians of `runs`. The corpus is also
/// written to artifacts/bench-sentences.txt for the sentence-transformers baseline (bench/embed_sentence_transformers.py).
func benchEmbed(runs: Int) throws {
    let dir = "models/all-MiniLM-L6-v2"
    let encoder = try BertEncoder(modelDirectory: dir)
    let sentences = benchSentences(vocab: encoder.tokenizer.vocab)
    try? FileManager.default.createDirectory(atPath: "artifacts", withIntermediateDirectories: true)
    try sentences.joined(separator: "\n").write(toFile: "artifacts/bench-sentences.txt", atomically: true, encoding: .utf8)
    let tokens = encoder.tokenize(sentences).map(\.count)
    print("# sigma bench embed — all-MiniLM-L6-v2, \(sentences.count) sentences (\(tokens.reduce(0, +) / tokens.count) tokens on average), batch 32, OpenBLAS \(BLASInfo.coreName)")
    print("")
    print("| threads | Sigma sentences/s | sentence-transformers, same run | Sigma / sentence-transformers (median of pairs) | ceiling: peak GEMM rate, same run | target |")
    print("|---|---|---|---|---|---|")
    let flops = encoder.matmulFLOPs(lengths: tokens, batchSize: 32)
    let savedThreads = BLASInfo.threads
    defer { BLASInfo.setThreads(savedThreads) }
    for threads in [1, 2] {
        // One core means one engine thread too (with one batch thread, `embed` leaves the engine's setting alone).
        BLASInfo.setThreads(threads)
        _ = encoder.embed(Array(sentences.prefix(64)), threads: threads)
        var rates: [Double] = [], baseline: [Double] = []
        for _ in 0..<runs {
            let t = monotonicNanos()
            _ = encoder.embed(sentences, batchSize: 32, threads: threads)
            rates.append(Double(sentences.count) / (Double(monotonicNanos() - t) / 1e9))
            // The baseline right after each run (one run of its own), so drift on a shared machine hits both alike.
            if let r = sentenceTransformersRate(model: dir, sentences: "artifacts/bench-sentences.txt", threads: threads) { baseline.append(r) }
        }
        let peak = peakGEMMRate(threads: threads)
        let ceiling = "\(Int(Double(sentences.count) * peak / flops)) (\(String(format: "%.0f", peak / 1e9)) GFLOP/s, \(String(format: "%.2f", flops / 1e12)) TFLOP)"
        let base = baseline.isEmpty ? "unavailable (set SIGMA_BENCH_PYTHON to a Python with sentence-transformers)" : "\(Int(median(baseline)))"
        let ratios = zip(rates, baseline).map { $0 / $1 }
        let ratio = ratios.isEmpty ? "" : String(format: "%.2f × (%.2f–%.2f)", median(ratios), ratios.min()!, ratios.max()!)
        print("| \(threads) | \(Int(median(rates))) | \(base) | \(ratio) | \(ceiling) | \(threads == 2 ? "≥ 470 (needs \(String(format: "%.0f", 470 * flops / Double(sentences.count) / 1e9)) GFLOP/s)" : "") |")
    }
    print("")
    print("Ceiling: the encoder's matrix products for these batches (projections, feed-forward and attention, padded")
    print("tokens included) at the best rate 2048 × 2048 products reach in this run, on OpenBLAS's own threads or split")
    print("over the engine's.")
}

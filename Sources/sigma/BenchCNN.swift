import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaTransport

/// `sigma bench cnn`: the tutorial CNN's training step (docs/jobs.md: two 3×3 convolutions of 32 and 64 channels,
/// 2×2 max-pooling, dropout, 128 dense, 10 classes; 28×28 inputs; Adam; batch 64 in micro-batches of 16) as a
/// `--local` train job runs it, against PyTorch's same model and step (`bench/cnn_torch.py`) right after each run,
/// on 1 and 2 threads. Sigma's rate is that of the steps alone: a job of 2S steps minus one of S steps, so reading
/// the data and building the model are not in it.
func benchCNN(runs: Int) throws {
    print("# sigma bench cnn — \(BLASKernels.cpuModel(cpuinfo: BLASKernels.procCPUInfo)), \(ProcessInfo.processInfo.activeProcessorCount) cores, OpenBLAS kernels \(BLASInfo.coreName)")
    print("# tutorial CNN (1,199,882 parameters), 28×28 inputs, batch 64 (micro-batches of 16), Adam, dropout on")
    print("")
    print("| threads | Sigma samples/s (train job, --local) | PyTorch, same run | Sigma / PyTorch (median of pairs, range) | target |")
    print("|---|---|---|---|---|")
    let steps = 30
    for threads in [1, 2] {
        var ours: [Double] = [], torch: [Double] = []
        _ = try cnnJobSeconds(steps: 2, threads: threads)   // (warm-up: pages, OpenBLAS buffers)
        for _ in 0..<runs {
            // (the same generated rows in both jobs: only the steps differ)
            let short = try cnnJobSeconds(steps: steps, threads: threads, rows: 2 * steps * 64 + 1)
            let long = try cnnJobSeconds(steps: 2 * steps, threads: threads, rows: 2 * steps * 64 + 1)
            ours.append(Double(steps * 64) / max(1e-9, long - short))
            if let r = pythonBaseline("bench/cnn_torch.py", ["\(steps)", "\(threads)"], threads: threads) { torch.append(r) }
        }
        let base = torch.isEmpty ? "unavailable (set SIGMA_BENCH_PYTHON to a Python with torch)" : "\(Int(median(torch)))"
        let ratios = zip(ours, torch).map { $0 / $1 }
        let ratio = ratios.isEmpty ? "" : String(format: "%.2f × (%.2f–%.2f)", median(ratios), ratios.min()!, ratios.max()!)
        print("| \(threads) | \(Int(median(ours))) | \(base) | \(ratio) | ≥ 1.0 × PyTorch |")
    }
}

/// Seconds of a `--local` train job of the tutorial CNN over `steps` steps of `rows` generated 28×28 rows.
func cnnJobSeconds(steps: Int, threads: Int, rows: Int? = nil) throws -> Double {
    let spec = try JobSpec.parse("""
        kind: train
        name: bench-cnn
        model:
          cnn:
            input: [1, 28, 28]
            layers: [{conv: {out: 32, kernel: 3}}, relu, {conv: {out: 64, kernel: 3}}, relu, {maxpool: 2}, {dropout: 0.25},
                     flatten, {linear: 128}, relu, {dropout: 0.5}, {linear: 10}]
        data: {generate: blobs, rows: \(rows ?? steps * 64 + 1), features: 784, classes: 10, seed: 1}
        optimizer: {adam: {lr: 0.001}}
        steps: \(steps)
        batch_size: 64
        micro_batch: 16
        holdout: 0
        seed: 1
        """)
    let t = monotonicNanos()
    _ = try JobKinds.standard.runLocal(spec, roots: try DataRoots([FileManager.default.temporaryDirectory.path]), threads: threads)
    return Double(monotonicNanos() - t) / 1e9
}

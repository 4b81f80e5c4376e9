import Foundation
import SigmaEngine
import SigmaTransport

/// Engine matmul (`Kernels.matmul`: allocation + `cblas_sgemm`) against `cblas_sgemm` on preallocated buffers,
/// n = 256…2048, 1 and 2 BLAS threads; medians of `runs`.
func benchGemm(runs: Int) {
    print("# sigma bench gemm — OpenBLAS kernels: \(BLASInfo.coreName) (OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset")), \(ProcessInfo.processInfo.activeProcessorCount) cores")
    print("")
    print("| n | threads | Sigma GFLOP/s | cblas_sgemm GFLOP/s | ratio | target |")
    print("|---|---|---|---|---|---|")
    for threads in [1, 2] {
        BLASInfo.setThreads(threads)
        for n in [256, 512, 1024, 2048] {
            var rng = SeededRandom(seed: UInt64(n))
            let a = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng), b = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng)
            let reps = max(1, Int(2e9 / (2 * pow(Double(n), 3))))   // ~1 s of work per sample at 100 GFLOP/s… scaled
            var ours: [Double] = [], direct: [Double] = []
            _ = Kernels.matmul(a, b)
            for _ in 0..<runs {
                // Alternate the two so drift on a shared machine hits both alike.
                var t = monotonicNanos()
                for _ in 0..<reps { _ = Kernels.matmul(a, b) }
                ours.append(Double(monotonicNanos() - t))
                t = monotonicNanos()
                for _ in 0..<reps { BLASInfo.sgemmDirect(a, b, n: n) }
                direct.append(Double(monotonicNanos() - t))
            }
            let flops = 2 * pow(Double(n), 3) * Double(reps)
            let g1 = flops / median(ours), g2 = flops / median(direct)
            print("| \(n) | \(threads) | \(String(format: "%.1f", g1)) | \(String(format: "%.1f", g2)) | \(String(format: "%.1f %%", 100 * g1 / g2)) | ≥ 90 % |")
        }
    }
}

/// One SGD training step of an MLP 784-1024-1024-10 on batches of 256 (forward, backward, update), samples/s,
/// 1 and 2 BLAS threads; medians of `runs` (each 20 steps after 3 warm-up steps).
func benchMLP(runs: Int) {
    print("# sigma bench mlp — OpenBLAS kernels: \(BLASInfo.coreName), MLP 784-1024-1024-10, batch 256, SGD momentum 0.9")
    print("")
    print("| threads | Sigma samples/s | target |")
    print("|---|---|---|")
    for threads in [1, 2] {
        BLASInfo.setThreads(threads)
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
            for _ in 0..<20 { step() }
            rates.append(20 * 256 / (Double(monotonicNanos() - t) / 1e9))
        }
        print("| \(threads) | \(Int(median(rates))) | \(threads == 2 ? "≥ 34,000" : "") |")
    }
}

import Foundation
import SigmaEngine
import SigmaTransport

/// `sigma bench gemm`'s second part: `cblas_sgemm` GFLOP/s on 1 thread under each kernel set this CPU can run, each
/// in a child process of this binary (`bench gemm --child`) with `OPENBLAS_CORETYPE` forced by hand, and once with it
/// unset (the default environment: Sigma's automatic choice), and the verdict. Every child runs `rounds` times, the
/// sets in turn (in reverse every other round), and each set keeps its best: a noisy window on a shared machine then
/// slows one round of one set, not the verdict (one round alone had the same kernels 17 % apart).
enum BenchKernels {
    static let sizes = [1024, 2048]
    static let rounds = 3

    /// One child's report: the set that ran, how it was chosen, GFLOP/s per size.
    struct Row {
        var label: String
        var running: String
        var choice: String
        var gflops: [Double]
    }

    static func run() {
        let info = BLASKernels.procCPUInfo
        let flags = BLASKernels.cpuFlags(cpuinfo: info), available = BLASKernels.available
        let sets = BLASKernels.runnable(flags: flags).map(\.name).filter(available.contains)
        print("")
        print("Kernel sets on \(BLASKernels.cpuModel(cpuinfo: info)): cblas_sgemm, 1 thread, GFLOP/s (best of 3 at n = 1024, of 2 at")
        print("n = 2048, in each of \(rounds) child processes of this binary per row, run in turn; the best round)")
        print("")
        guard !sets.isEmpty else {
            print("This OpenBLAS offers no kernel sets to choose from (built without DYNAMIC_ARCH).")
            return
        }
        print("| kernel set | OPENBLAS_CORETYPE | " + sizes.map { "n = \($0)" }.joined(separator: " | ") + " |")
        print("|---|---|" + sizes.map { _ in "---|" }.joined())
        // nil: the default environment
        let order: [String?] = [nil] + sets
        var rows: [String?: Row] = [:]
        for round in 0..<rounds {
            for s in round % 2 == 0 ? order : order.reversed() {
                guard let r = child(label: s ?? "default environment", coretype: s) else { continue }
                rows[s] = rows[s].map { b in Row(label: b.label, running: b.running, choice: b.choice, gflops: zip(b.gflops, r.gflops).map(max)) } ?? r
            }
        }
        guard let auto = rows[nil] else {
            print("(the child process failed)")
            return
        }
        let forced = sets.compactMap { rows[$0] }
        for r in [auto] + forced {
            let cells = r.gflops.map { String(format: "%.1f", $0) }.joined(separator: " | ")
            let label = r.label == "default environment" ? "default environment → \(r.running) (\(r.choice))" : r.running
            print("| \(label) | \(r.label == "default environment" ? "unset" : r.label) | \(cells) |")
        }
        guard !forced.isEmpty else { return }
        // Per size, the default against the best forced set at that size; the verdict takes the worse of the two.
        let ratios = sizes.indices.map { i in auto.gflops[i] / forced.map { $0.gflops[i] }.max()! }
        let worst = ratios.indices.min { ratios[$0] < ratios[$1] }!
        let best = forced.max { $0.gflops[worst] < $1.gflops[worst] }!
        let pct = 100 * ratios[worst]
        print("")
        print("Verdict: the default environment (\(auto.running), \(auto.choice)) reaches \(String(format: "%.0f", pct)) % of the best set forced by hand "
              + "(\(best.running), n = \(sizes[worst])) (target ≥ 90 %): \(pct >= 90 ? "met" : "missed").")
    }

    /// Runs `bench gemm --child` with `OPENBLAS_CORETYPE` set to `coretype` or unset; nil if it failed.
    static func child(label: String, coretype: String?) -> Row? {
        let p = Process(), out = Pipe()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        p.arguments = ["bench", "gemm", "--child"]
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = coretype
        env["OPENBLAS_NUM_THREADS"] = "1"
        p.environment = env
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0, let fields = parse(text), let running = fields["kernels"], let choice = fields["choice"] else { return nil }
        let g = sizes.compactMap { fields["n\($0)"].flatMap(Double.init) }
        guard g.count == sizes.count else { return nil }
        return Row(label: label, running: running, choice: choice, gflops: g)
    }

    /// `key=value` words of the child's one line.
    static func parse(_ line: String) -> [String: String]? {
        var d: [String: String] = [:]
        for w in line.split(whereSeparator: \.isWhitespace) {
            let kv = w.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { return nil }
            d[String(kv[0])] = String(kv[1])
        }
        return d.isEmpty ? nil : d
    }

    /// The child: GFLOP/s of `cblas_sgemm` on 1 thread under the kernels this process runs, as one line
    /// `kernels=NAME choice=auto|openblas|env n1024=G n2048=G`.
    static func childMain() {
        BLASInfo.setThreads(1)
        var line = "kernels=\(BLASInfo.coreName) choice=\((BLASKernels.current ?? BLASKernels.startup).choice.rawValue)"
        for n in sizes {
            line += " n\(n)=" + String(format: "%.1f", gflops(n: n, reps: n <= 1024 ? 3 : 2))
        }
        print(line)
    }

    /// `cblas_sgemm` GFLOP/s on n × n, best of `reps` after one warm-up product.
    static func gflops(n: Int, reps: Int) -> Double {
        var rng = SeededRandom(seed: UInt64(n))
        let a = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng), b = Tensor.uniform([n, n], low: -1, high: 1, rng: &rng)
        BLASInfo.sgemmDirect(a, b, n: n)
        let times = (0..<reps).map { _ in
            let t = monotonicNanos()
            BLASInfo.sgemmDirect(a, b, n: n)
            return Double(monotonicNanos() - t)
        }
        return 2 * pow(Double(n), 3) / times.min()!
    }

    /// For the integration test of the real switch: forces the generic Prescott set (as a DYNAMIC_ARCH OpenBLAS does on
    /// a CPU it does not know), runs the start-up choice again with `OPENBLAS_CORETYPE` unset, and checks the engine's
    /// products against the reference on whatever then runs. One line:
    /// `forced=Prescott kernels=NAME choice=… best=… products=ok|wrong gflops_before=G gflops_after=G` (GFLOP/s at
    /// n = 1024, 1 thread, printed for the record, not checked).
    static func switchFromGenericMain() {
        BLASInfo.setThreads(1)
        let forced = BLASKernels.force("Prescott") ? BLASInfo.coreName : "failed"
        let before = gflops(n: 1024, reps: 2)
        let s = BLASKernels.chooseNow(override: nil)
        let after = gflops(n: 1024, reps: 2)
        // The self-check, and the engine's own randomized check (KernelTests.fastMatmulEqualsReference).
        let ok = BLASKernels.selfCheck() && BLASKernels.randomProductMismatches().isEmpty
        print("forced=\(forced) kernels=\(BLASInfo.coreName) choice=\(s.choice.rawValue) best=\(s.best) products=\(ok ? "ok" : "wrong")"
              + String(format: " gflops_before=%.1f gflops_after=%.1f", before, after))
    }
}

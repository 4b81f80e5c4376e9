import Foundation
import SigmaEngine
import Testing

/// The real in-process kernel switch, in a `sigma` child process (switching OpenBLAS's table inside this test process
/// would race the other suites' BLAS calls): the child forces the generic Prescott set, as OpenBLAS does on a CPU it
/// does not know, runs the start-up choice again and checks the engine's products against the reference.
@Suite(.serialized, .timeLimit(.minutes(2))) struct BLASKernelSwitchTests {
    func fields(_ line: String) -> [String: String] {
        var d: [String: String] = [:]
        for w in line.split(separator: " ") {
            let kv = w.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { d[String(kv[0])] = String(kv[1]) }
        }
        return d
    }

    @Test func switchesFromGenericToTheCPUsBestAndProductsStillMatch() async throws {
        let p = try SigmaProcess(["bench", "gemm", "--check-switch-from-generic"])
        #expect(try await p.wait() == 0, "\(p.stderr.suffix(3))")
        let f = fields(p.stdout.first { $0.hasPrefix("forced=") } ?? "")
        let cpu = BLASKernels.thisCPU
        let best = BLASKernels.best(flags: cpu.flags, available: BLASKernels.available, halfWidth: cpu.halfWidth)
        #expect(f["products"] == "ok", "\(p.stdout)")
        if let best, BLASKernels.available.contains("Prescott") {
            #expect(f["forced"] == "Prescott")
            #expect(f["kernels"] == best && f["choice"] == "auto" && f["best"] == best, "\(p.stdout)")
        } else {
            // No DYNAMIC_ARCH, or a CPU without AVX: nothing to switch to.
            #expect(f["choice"] == "openblas", "\(p.stdout)")
        }
    }

    /// An explicit OPENBLAS_CORETYPE wins: the child runs exactly that set and says so.
    @Test func explicitCoretypeIsKept() async throws {
        guard BLASKernels.available.contains("Prescott") else { return }
        let p = try SigmaProcess(["bench", "gemm", "--child"], environment: ["OPENBLAS_CORETYPE": "Prescott"])
        #expect(try await p.wait() == 0, "\(p.stderr.suffix(3))")
        let f = fields(p.stdout.first { $0.hasPrefix("kernels=") } ?? "")
        #expect(f["kernels"] == "Prescott" && f["choice"] == "env", "\(p.stdout)")
    }
}

import SigmaEngine
import Testing

/// The kernel-set choice (pure: CPU flags and OpenBLAS's choice in, a decision out) and the product self-check.
@Suite struct BLASKernelsTests {
    static let all: Set<String> = ["Prescott", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake"]
    static let sse: Set<String> = ["sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2"]
    static let avx2 = sse.union(["avx", "avx2", "fma"])
    static let avx512 = avx2.union(["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"])
    static let bf16 = avx512.union(["avx512_bf16"])

    static func tweak(_ c: Tensor, _ i: Int, _ f: (Float) -> Float) -> Tensor {
        var s = c.scalars
        s[i] = f(s[i])
        return Tensor(shape: c.shape, s)
    }

    @Test func flagsAndModelParsedFromCPUInfo() {
        let text = """
        processor\t: 0
        vendor_id\t: GenuineIntel
        model name\t: Intel(R) Xeon(R) Platinum 8488C
        flags\t\t: fpu sse2 pni avx avx2 fma avx512f avx512bw
        processor\t: 1
        flags\t\t: fpu
        """
        #expect(BLASKernels.cpuFlags(cpuinfo: text) == ["fpu", "sse2", "pni", "avx", "avx2", "fma", "avx512f", "avx512bw"])
        #expect(BLASKernels.cpuModel(cpuinfo: text) == "Intel(R) Xeon(R) Platinum 8488C")
        #expect(BLASKernels.cpuFlags(cpuinfo: "") == [])
        #expect(BLASKernels.cpuModel(cpuinfo: "") == "unknown CPU")
    }

    /// Features → the best set: Cooperlake with BF16, SkylakeX with F/BW/DQ/VL, Haswell with AVX2+FMA, Sandybridge
    /// with AVX; AVX-512F alone is not enough; a set this OpenBLAS lacks is skipped.
    @Test func bestSetForFeatures() {
        #expect(BLASKernels.best(flags: Self.bf16, available: Self.all) == "Cooperlake")
        #expect(BLASKernels.best(flags: Self.avx512, available: Self.all) == "SkylakeX")
        #expect(BLASKernels.best(flags: Self.avx2.union(["avx512f"]), available: Self.all) == "Haswell")
        #expect(BLASKernels.best(flags: Self.avx2, available: Self.all) == "Haswell")
        #expect(BLASKernels.best(flags: Self.avx2.subtracting(["fma"]), available: Self.all) == "Sandybridge")
        #expect(BLASKernels.best(flags: Self.sse.union(["avx"]), available: Self.all) == "Sandybridge")
        #expect(BLASKernels.best(flags: Self.sse, available: Self.all) == nil)
        #expect(BLASKernels.best(flags: Self.bf16, available: Self.all.subtracting(["Cooperlake"])) == "SkylakeX")
        #expect(BLASKernels.best(flags: Self.bf16, available: []) == nil)
        #expect(BLASKernels.runnable(flags: Self.avx2).map(\.name) == ["Prescott", "Sandybridge", "Haswell", "Zen"])
    }

    /// "OpenBLAS chose X, the CPU supports Y" → switch only when X is below Y.
    @Test func switchOnlyWhenOpenBLASChoseBelowTheCPU() {
        func decide(_ running: String, _ flags: Set<String>) -> BLASKernels.Decision {
            BLASKernels.decide(running: running, override: nil, flags: flags, available: Self.all)
        }
        for generic in ["Prescott", "Core2", "Nehalem", "Sandybridge"] {
            #expect(decide(generic, Self.avx2) == .trySwitch(to: "Haswell"), "\(generic)")
            #expect(decide(generic, Self.bf16) == .trySwitch(to: "Cooperlake"), "\(generic)")
        }
        #expect(decide("Haswell", Self.avx512) == .trySwitch(to: "SkylakeX"))
        #expect(decide("Zen", Self.bf16) == .trySwitch(to: "Cooperlake"))
        #expect(decide("SkylakeX", Self.bf16) == .trySwitch(to: "Cooperlake"))
        // Already as good: kept, reported as OpenBLAS's choice and as the best.
        for (running, flags) in [("Cooperlake", Self.bf16), ("SkylakeX", Self.avx512), ("Haswell", Self.avx2), ("Zen", Self.avx2),
                                 ("Excavator", Self.avx2), ("Prescott", Self.sse), ("SapphireRapids", Self.bf16)] {
            guard case .keep(let s) = decide(running, flags) else { Issue.record("\(running) switched"); continue }
            #expect(s.choice == .openblas && s.running == running && s.best == running && !s.belowBest && s.warning == nil)
        }
        // Without DYNAMIC_ARCH nothing can be chosen: reported, not an error.
        guard case .keep(let s) = BLASKernels.decide(running: "Prescott", override: nil, flags: Self.bf16, available: []) else {
            Issue.record("switched without tables"); return
        }
        #expect(s.choice == .openblas && s.note.contains("DYNAMIC_ARCH"))
    }

    /// AMD family 25 with AVX-512 (Zen 4) runs 512-bit FMAs in two halves: Haswell is its best set, switched to from
    /// OpenBLAS's AVX-512 choice; Zen (Haswell's kernels) is kept; a user's AVX-512 choice is kept and warned about.
    /// Family 26 (Zen 5) and Intel keep the AVX-512 order.
    @Test func halfWidthAVX512PrefersTheAVX2Set() {
        func cpu(_ vendor: String, _ family: Int) -> String {
            "processor\t: 0\nvendor_id\t: \(vendor)\ncpu family\t: \(family)\nmodel\t\t: 17\nmodel name\t: X\nflags\t\t: avx2 avx512f\n"
        }
        #expect(BLASKernels.avx512HalfWidth(cpuinfo: cpu("AuthenticAMD", 25)))
        #expect(!BLASKernels.avx512HalfWidth(cpuinfo: cpu("AuthenticAMD", 26)))
        #expect(!BLASKernels.avx512HalfWidth(cpuinfo: cpu("GenuineIntel", 6)))
        #expect(!BLASKernels.avx512HalfWidth(cpuinfo: ""))
        #expect(BLASKernels.best(flags: Self.bf16, available: Self.all, halfWidth: true) == "Haswell")
        #expect(BLASKernels.best(flags: Self.bf16, available: Self.all.subtracting(["Haswell"]), halfWidth: true) == "Cooperlake")
        func decide(_ running: String, override: String? = nil) -> BLASKernels.Decision {
            BLASKernels.decide(running: running, override: override, flags: Self.bf16, available: Self.all, halfWidth: true)
        }
        for running in ["Cooperlake", "SkylakeX", "Prescott", "Sandybridge"] {
            #expect(decide(running) == .trySwitch(to: "Haswell"), "\(running)")
        }
        for running in ["Haswell", "Zen", "SapphireRapids"] {
            guard case .keep(let s) = decide(running) else { Issue.record("\(running) switched"); continue }
            #expect(s.choice == .openblas && s.running == running && !s.belowBest)
        }
        guard case .keep(let forced) = decide("Cooperlake", override: "Cooperlake") else { Issue.record("override not kept"); return }
        #expect(forced.choice == .env && forced.best == "Haswell" && forced.warning?.contains("runs Haswell faster") == true)
    }

    /// An explicit OPENBLAS_CORETYPE always wins; below the CPU's best it is warned about, naming both sets.
    @Test func explicitOverrideWinsAndIsWarnedAbout() {
        let low = BLASKernels.decide(running: "Haswell", override: "Haswell", flags: Self.bf16, available: Self.all)
        guard case .keep(let s) = low else { Issue.record("override not kept"); return }
        #expect(s.choice == .env && s.running == "Haswell" && s.best == "Cooperlake" && s.belowBest)
        #expect(s.warning?.contains("Haswell") == true && s.warning?.contains("Cooperlake") == true)
        #expect(s.features == "blas=Haswell,blas-choice=env,blas-best=Cooperlake")
        let top = BLASKernels.decide(running: "Cooperlake", override: "cooperlake", flags: Self.bf16, available: Self.all)
        #expect(top == .keep(.init(running: "Cooperlake", choice: .env, best: "Cooperlake", note: "OPENBLAS_CORETYPE=cooperlake (the user's choice, kept)")))
        var switched = false
        _ = BLASKernels.choose(running: "Prescott", override: "Prescott", flags: Self.bf16, available: Self.all,
                               switchTo: { _ in switched = true; return true }, selfCheck: { true }, restore: {})
        #expect(!switched)
    }

    /// The switch is kept only when the self-check passes; a failed check or a failed switch restores OpenBLAS's set.
    @Test func failedSelfCheckFallsBack() {
        func run(switchWorks: Bool, checkPasses: Bool) -> (BLASKernels.Status, [String]) {
            var calls: [String] = []
            let s = BLASKernels.choose(running: "Prescott", override: nil, flags: Self.bf16, available: Self.all,
                                       switchTo: { calls.append("switch \($0)"); return switchWorks },
                                       selfCheck: { calls.append("check"); return checkPasses }, restore: { calls.append("restore") })
            return (s, calls)
        }
        let (ok, okCalls) = run(switchWorks: true, checkPasses: true)
        #expect(okCalls == ["switch Cooperlake", "check"])
        #expect(ok.running == "Cooperlake" && ok.choice == .auto && !ok.belowBest)
        #expect(ok.features == "blas=Cooperlake,blas-choice=auto,blas-best=Cooperlake")
        let (bad, badCalls) = run(switchWorks: true, checkPasses: false)
        #expect(badCalls == Array(repeating: ["switch Cooperlake", "check", "restore"], count: 3).flatMap { $0 })
        #expect(bad.running == "Prescott" && bad.choice == .openblas && bad.best == "Cooperlake" && bad.belowBest)
        #expect(bad.warning?.contains("Cooperlake failed the product self-check 3 times") == true, "\(bad.note)")
        let (noSwitch, noSwitchCalls) = run(switchWorks: false, checkPasses: true)
        #expect(noSwitchCalls == Array(repeating: ["switch Cooperlake", "restore"], count: 3).flatMap { $0 })
        #expect(noSwitch.running == "Prescott" && noSwitch.choice == .openblas && noSwitch.note.contains("failed 3 times"))
    }

    /// A switch or check that fails once is tried again: the set is kept when a later attempt passes, and the note
    /// says what failed before (a worker that fell back by chance would compute other bits than the rest of the host).
    @Test func aFailedSelfCheckIsTriedAgain() {
        var calls: [String] = [], checks = 0
        let s = BLASKernels.choose(running: "Prescott", override: nil, flags: Self.bf16, available: Self.all,
                                   switchTo: { calls.append("switch \($0)"); return true },
                                   selfCheck: { checks += 1; calls.append("check"); return checks > 1 }, restore: { calls.append("restore") })
        #expect(calls == ["switch Cooperlake", "check", "restore", "switch Cooperlake", "check"])
        #expect(s.running == "Cooperlake" && s.choice == .auto && !s.belowBest)
        #expect(s.note.contains("on attempt 2") && s.note.contains("Cooperlake failed the product self-check"), "\(s.note)")
        let once = BLASKernels.choose(running: "Prescott", override: nil, flags: Self.bf16, available: Self.all, attempts: 1,
                                      switchTo: { _ in true }, selfCheck: { false }, restore: {})
        #expect(once.running == "Prescott" && once.note == "Cooperlake failed the product self-check; kept OpenBLAS's choice Prescott")
    }

    /// The self-check passes on the kernels running in this test process and fails on a product that is wrong in
    /// one element by more than the tolerance, on a transposed shape only, or NaN.
    @Test func selfCheckPassesOnRealProductsAndCatchesWrongOnes() {
        // (the process's kernel choice first: selfCheck calls OpenBLAS directly, and the choice must not switch
        // kernel sets while it is inside — another test's first product makes that choice, on another thread)
        _ = BLASKernels.startup
        #expect(BLASKernels.selfCheck())
        #expect(!BLASKernels.selfCheck { a, b, ta, tb in
            let c = Kernels.matmul(a, b, transA: ta, transB: tb)
            return ta && tb && c.count > 40 ? Self.tweak(c, 40) { $0 + 1e-3 } : c
        })
        #expect(!BLASKernels.selfCheck { a, b, ta, tb in
            Self.tweak(Kernels.matmul(a, b, transA: ta, transB: tb), 0) { _ in .nan }
        })
        // Off by less than the tolerance: still passes (the check is no stricter than the engine's own tests).
        #expect(BLASKernels.selfCheck { a, b, ta, tb in
            Self.tweak(Kernels.matmul(a, b, transA: ta, transB: tb), 0) { $0 + 1e-7 }
        })
    }

    /// In this test process the start-up choice never switches in parallel with other tests: it only reports, and
    /// what it reports is what OpenBLAS runs. (The real switch, from a forced generic set, is tested in a `sigma`
    /// child process: SigmaIntegrationTests, BLASKernelSwitchTests.)
    @Test func startupStatusMatchesTheRunningSet() {
        let s = BLASKernels.current ?? BLASKernels.reportOnly()
        #expect(s.running == BLASInfo.coreName)
    }

    /// A report made after the process's choice (a worker's HELLO before its choice is recorded, `sigma workers`'
    /// test) names the same running and best sets as the choice — on a half-width AVX-512 CPU too.
    @Test func aReportAfterTheChoiceAgreesWithIt() {
        let chosen = BLASKernels.startup, report = BLASKernels.reportOnly()
        #expect(report.running == chosen.running && report.best == chosen.best, "chosen \(chosen), report \(report)")
    }
}

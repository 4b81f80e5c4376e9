/// Which OpenBLAS kernel set should run on this CPU, and how it came to run: the pure half (no BLAS calls, no
/// environment, no files). `BLASKernels+OpenBLAS.swift` is the shell that reads /proc/cpuinfo and switches
/// OpenBLAS's table in-process; docs/architecture.md, "How the BLAS kernel set is chosen", explains why.
public enum BLASKernels {
    /// A kernel set of a DYNAMIC_ARCH OpenBLAS that Sigma may choose or benchmark: its name as
    /// `openblas_get_corename()` and `OPENBLAS_CORETYPE` spell it, and the /proc/cpuinfo flags it needs.
    public struct KernelSet: Sendable, Equatable {
        public let name: String
        /// Instruction-set level: 0 SSE3, 1 AVX, 2 AVX2 + FMA, 3 AVX-512 (F, BW, DQ, VL), 4 AVX-512 + BF16.
        public let level: Int
        public let needs: [String]
        /// The exported `gotoblas_t` table of this set (`gotoblas_COOPERLAKE`…).
        public var symbol: String { "gotoblas_" + name.uppercased() }
    }

    static let avx512: [String] = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"]

    /// The sets `sigma bench gemm` compares, lowest level first. `pni` is how Linux spells SSE3.
    public static let sets: [KernelSet] = [
        KernelSet(name: "Prescott", level: 0, needs: ["pni"]),
        KernelSet(name: "Sandybridge", level: 1, needs: ["avx"]),
        KernelSet(name: "Haswell", level: 2, needs: ["avx2", "fma"]),
        KernelSet(name: "Zen", level: 2, needs: ["avx2", "fma"]),
        KernelSet(name: "SkylakeX", level: 3, needs: avx512),
        KernelSet(name: "Cooperlake", level: 4, needs: avx512 + ["avx512_bf16"]),
    ]

    /// What Sigma switches to, best first (Zen is Haswell's kernels with AMD blocking: never preferred to it, and
    /// kept when OpenBLAS picks it itself).
    public static let preference = ["Cooperlake", "SkylakeX", "Haswell", "Sandybridge"]

    /// The order on a CPU whose AVX-512 units are half width (`avx512HalfWidth`): the AVX2 set first. Measured on a
    /// Zen 4 VM with Debian's OpenBLAS 0.3.21: Haswell's products 4–11 % faster than Cooperlake's (n = 1024, 1 thread),
    /// an MLP training step 3–8 % faster, MiniLM embedding as fast (docs/performance.md, "Zen 4").
    public static let halfWidthPreference = ["Haswell", "Cooperlake", "SkylakeX", "Sandybridge"]

    /// Whether this CPU runs each 512-bit FMA as two 256-bit passes, so OpenBLAS's AVX-512 kernels gain nothing on its
    /// AVX2 ones: AMD family 25 (Zen 4 — Zen 3, the same family, has no AVX-512 and never runs those sets). Zen 5
    /// (family 26) has full-width units: Cooperlake ran twice Haswell's rate there.
    public static func avx512HalfWidth(cpuinfo: String) -> Bool {
        field("vendor_id", cpuinfo) == "AuthenticAMD" && field("cpu family", cpuinfo) == "25"
    }

    /// The instruction-set level of any kernel set OpenBLAS 0.3.x may name, or nil for a name Sigma does not know
    /// (a newer set: never replaced).
    public static func level(of name: String) -> Int? {
        if let s = sets.first(where: { $0.name.lowercased() == name.lowercased() }) { return s.level }
        switch name.lowercased() {
        case "katmai", "coppermine", "northwood", "banias", "atom", "core2", "penryn", "dunnington", "nehalem",
             "athlon", "opteron", "opteron_sse3", "barcelona", "nano", "bobcat": return 0
        case "bulldozer", "piledriver", "steamroller": return 1
        case "excavator": return 2
        default: return nil
        }
    }

    /// The sets this CPU can run, lowest level first.
    public static func runnable(flags: Set<String>) -> [KernelSet] {
        sets.filter { $0.needs.allSatisfy(flags.contains) }
    }

    /// The best set for these CPU flags among those this OpenBLAS has (`available`: set names), or nil if none.
    public static func best(flags: Set<String>, available: Set<String>, halfWidth: Bool = false) -> String? {
        (halfWidth ? halfWidthPreference : preference).first { name in
            available.contains(name) && sets.first { $0.name == name }!.needs.allSatisfy(flags.contains)
        }
    }

    /// What to do at start-up.
    public enum Decision: Equatable, Sendable {
        /// Keep what runs; `status` says why.
        case keep(Status)
        /// Switch to this set, self-check it, keep it or go back.
        case trySwitch(to: String)
    }

    /// How the running set came to run.
    public enum Choice: String, Sendable, Equatable {
        /// Sigma switched to it at start-up (OpenBLAS's own choice was below what the CPU supports).
        case auto
        /// OpenBLAS's own choice, kept.
        case openblas
        /// Named by the user's `OPENBLAS_CORETYPE`.
        case env
    }

    /// The kernel set that runs, how it was chosen and the best this CPU could run (reported in the worker's HELLO,
    /// `sigma workers`, `sigma top`, the dashboard and `sigma bench gemm`).
    public struct Status: Sendable, Equatable {
        public var running: String
        public var choice: Choice
        /// The best set this OpenBLAS has for this CPU, or `running` when that is as good (or nothing better is known).
        public var best: String
        /// One line on what happened, for logs.
        public var note: String

        public init(running: String, choice: Choice, best: String, note: String) {
            self.running = running
            self.choice = choice
            self.best = best
            self.note = note
        }

        /// The running set is below what this CPU and this OpenBLAS could run.
        public var belowBest: Bool { running != best }

        /// The warning to log when the running set is below the best, naming both.
        public var warning: String? {
            guard belowBest else { return nil }
            let why = choice == .env ? "OPENBLAS_CORETYPE=\(running) selects them; unset it to let Sigma choose" : note
            return "OpenBLAS runs its \(running) kernels but this CPU runs \(best) faster: \(why)"
        }

        /// HELLO features: `blas=NAME,blas-choice=auto|openblas|env,blas-best=NAME` (names have no commas).
        public var features: String { "blas=\(running),blas-choice=\(choice.rawValue),blas-best=\(best)" }
    }

    /// The start-up decision. `running`: OpenBLAS's current set; `override`: `OPENBLAS_CORETYPE` if the user set it;
    /// `available`: the sets whose tables this OpenBLAS exports (empty without DYNAMIC_ARCH).
    /// `halfWidth`: the CPU's AVX-512 units are half width (`avx512HalfWidth`), so an AVX-512 set gives way to Haswell.
    public static func decide(running: String, override: String?, flags: Set<String>, available: Set<String>,
                              halfWidth: Bool = false) -> Decision {
        let target = best(flags: flags, available: available, halfWidth: halfWidth)
        let better: String? = {
            guard let t = target, let tl = level(of: t), let rl = level(of: running) else { return nil }
            if halfWidth && t == "Haswell" && rl >= 3 { return t }
            return rl < tl ? t : nil
        }()
        if let o = override, !o.isEmpty {
            return .keep(Status(running: running, choice: .env, best: better ?? running,
                                note: "OPENBLAS_CORETYPE=\(o) (the user's choice, kept)"))
        }
        if available.isEmpty {
            return .keep(Status(running: running, choice: .openblas, best: running,
                                note: "this OpenBLAS exports no kernel tables (built without DYNAMIC_ARCH): no choice possible"))
        }
        guard let b = better else {
            return .keep(Status(running: running, choice: .openblas, best: running,
                                note: "OpenBLAS chose \(running), the best set it has for this CPU"))
        }
        return .trySwitch(to: b)
    }

    /// Decides, and carries a switch out: `switchTo(name)` installs that set and says whether OpenBLAS now reports it,
    /// `selfCheck()` checks products on the running set, `restore()` goes back to OpenBLAS's own choice. A switch or
    /// check that fails is tried again, `attempts` times in all, before OpenBLAS's choice is kept: a process whose
    /// choice fell back by chance would compute other bits than every other process on the host (a worker did, once,
    /// under a full test suite's load); one that fails every time keeps OpenBLAS's set, and the note says why.
    public static func choose(running: String, override: String?, flags: Set<String>, available: Set<String>, halfWidth: Bool = false,
                              attempts: Int = 3, switchTo: (String) -> Bool, selfCheck: () -> Bool, restore: () -> Void) -> Status {
        switch decide(running: running, override: override, flags: flags, available: available, halfWidth: halfWidth) {
        case .keep(let status):
            return status
        case .trySwitch(let target):
            var failures: [String] = []
            for _ in 0..<max(1, attempts) {
                guard switchTo(target) else {
                    restore()
                    failures.append("switching from \(running) to \(target) failed")
                    continue
                }
                guard selfCheck() else {
                    restore()
                    failures.append("\(target) failed the product self-check")
                    continue
                }
                let retried = failures.isEmpty ? "" : " on attempt \(failures.count + 1) (before: \(failures.joined(separator: "; ")))"
                return Status(running: target, choice: .auto, best: target,
                              note: "OpenBLAS chose \(running); switched to \(target) (self-check passed\(retried))")
            }
            let why = Set(failures).count == 1 ? failures[0] + (failures.count > 1 ? " \(failures.count) times" : "") : failures.joined(separator: "; ")
            return Status(running: running, choice: .openblas, best: target, note: "\(why); kept OpenBLAS's choice \(running)")
        }
    }

    /// The `flags` of the first processor in /proc/cpuinfo text (Linux lists only what the OS enabled: no AVX-512
    /// when the kernel does not save its registers).
    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        Set((field("flags", cpuinfo) ?? "").split(separator: " ").map(String.init))
    }

    /// The first "model name" in /proc/cpuinfo text, or "unknown CPU".
    public static func cpuModel(cpuinfo: String) -> String {
        field("model name", cpuinfo) ?? "unknown CPU"
    }

    /// The value of the first line of /proc/cpuinfo text whose name (before the colon) is `name`, trimmed.
    static func field(_ name: String, _ cpuinfo: String) -> String? {
        for line in cpuinfo.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":"), line[..<colon].trimmingCharacters(in: " \t") == name else { continue }
            return line[line.index(after: colon)...].trimmingCharacters(in: " \t")
        }
        return nil
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}

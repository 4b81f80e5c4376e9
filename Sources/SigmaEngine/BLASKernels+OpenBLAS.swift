#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The shell: OpenBLAS's kernel table, switched in-process. A DYNAMIC_ARCH OpenBLAS keeps the running set in the
/// exported pointer `gotoblas`; `gotoblas_dynamic_init()` fills it (from `OPENBLAS_CORETYPE`, else its own CPU
/// detection) only while it is null and runs the set's `init` (its GEMM blocking). The symbols are looked up with
/// `dlsym`, so an OpenBLAS built without DYNAMIC_ARCH simply offers no choice.
extension BLASKernels {
    /// The start-up choice, made once per process (the first use of `startup` runs it). Call it before any BLAS call:
    /// switching while another thread is inside OpenBLAS would mix two sets' blocking and kernels.
    public static let startup: Status = chooseNow()

    /// The status of the last choice made in this process (`startup`'s, or a later `chooseNow()`'s), nil before any.
    public static var current: Status? { latest.withLock { $0 } }
    private static let latest = Mutex<Status?>(nil)

    /// Runs the choice now (not once: `sigma bench gemm --child --from-generic` and tests call it after forcing a set).
    /// `override`: the user's `OPENBLAS_CORETYPE`.
    @discardableResult
    public static func chooseNow(override: String? = environmentOverride) -> Status {
        let (flags, halfWidth) = thisCPU
        let status: Status
        if let t = OpenBLASTable.load() {
            let saved = t.pointer, threads = BLASInfo.threads
            var started = false
            defer { BLASInfo.setThreads(threads) }
            status = choose(running: BLASInfo.coreName, override: override, flags: flags, available: t.available, halfWidth: halfWidth,
                            switchTo: { name in
                                if !started {
                                    // OpenBLAS starts its threads when it loads, and a thread still starting up reads
                                    // the table: switching under it crashed, or broke the switch (5–9 in 10,000
                                    // start-ups of a C program under load; none once its threads had run a product).
                                    // So they run one first, on OpenBLAS's own set and all the threads it started
                                    // (the engine keeps it on one otherwise); then the switch and its check run on
                                    // one engine thread.
                                    startThreads()
                                    BLASInfo.setThreads(1)
                                    started = true
                                }
                                return t.install(name)
                            }, selfCheck: { selfCheck() }, restore: { t.pointer = saved })
        } else {
            status = choose(running: BLASInfo.coreName, override: override, flags: flags, available: [], halfWidth: halfWidth,
                            switchTo: { _ in false }, selfCheck: { false }, restore: {})
        }
        latest.withLock { $0 = status }
        return status
    }

    /// A product OpenBLAS splits over all the threads it started — (64·threads × 64) · (64 × 64·threads), ≥ 128 square: every
    /// thread gets rows and columns, yet it is a few million multiply-adds on a 2-core host (a 64-core one: 2 GFLOP,
    /// not the 137 of a cube that size) — so each has started, and taken its buffer, by the time it returns.
    static func startThreads() {
        let threads = BLASInfo.openBLASStarted
        let n = max(128, 64 * threads), k = 64
        let a = [Float](repeating: 1, count: n * k)
        var c = [Float](repeating: 0, count: n * n)
        BLASInfo.onOpenBLASThreads(threads) {
            a.withUnsafeBufferPointer { pa in
                c.withUnsafeMutableBufferPointer { pc in
                    // (a as both operands: n × k, and read as k × n through the transposed B)
                    BLAS.Call(transA: false, transB: true, m: n, n: n, k: k, alpha: 1, a: pa.baseAddress, lda: k, b: pa.baseAddress, ldb: k,
                              beta: 0, c: pc.baseAddress, ldc: n).run(0, n, 0, n)
                }
            }
        }
    }

    /// Installs `name`'s table by hand (what `OPENBLAS_CORETYPE=name` does at load time), leaving the environment as
    /// it was; true when OpenBLAS then reports that set. For benchmarks and for tests that simulate OpenBLAS picking
    /// a generic set. Same caveat as `startup`: no other thread may be inside OpenBLAS.
    @discardableResult
    public static func force(_ name: String) -> Bool {
        OpenBLASTable.load()?.install(name) ?? false
    }

    /// The names of the sets whose tables this OpenBLAS exports (empty without DYNAMIC_ARCH).
    public static var available: Set<String> { OpenBLASTable.load()?.available ?? [] }

    /// `OPENBLAS_CORETYPE` as the user set it (Sigma unsets what it sets itself).
    public static var environmentOverride: String? { getenv("OPENBLAS_CORETYPE").map { String(cString: $0) } }

    /// What the choice reads of this machine's CPU (/proc/cpuinfo, once): its flags and whether its AVX-512 units are
    /// half width.
    public static var thisCPU: (flags: Set<String>, halfWidth: Bool) {
        let info = procCPUInfo
        return (cpuFlags(cpuinfo: info), avx512HalfWidth(cpuinfo: info))
    }

    /// /proc/cpuinfo, or "" where there is none (no flags: no switch).
    public static var procCPUInfo: String {
        guard let f = fopen("/proc/cpuinfo", "r") else { return "" }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            bytes += buffer[0..<n]
            if bytes.count > 1 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Relative error allowed between a product and its Float64 reference: the engine's own bound for `matmul`
    /// (KernelTests.fastMatmulEqualsReference: ≤ 1e-5 with Float32 accumulation over K ≤ 300).
    public static let selfCheckTolerance: Float = 1e-5

    /// The shapes the self-check multiplies, (M, K, N): odd sizes that leave partial register blocks and partial
    /// cache panels, single rows and columns, and one large enough for OpenBLAS to split it over threads.
    public static let selfCheckShapes: [(Int, Int, Int)] = [(67, 129, 33), (96, 200, 80), (1, 300, 7), (7, 300, 1), (5, 3, 2)]

    /// The engine's randomized product check: `trials` products of random shapes (M, N ≤ 40, K ≤ 300) in every
    /// transpose combination, `Kernels.matmul` against `Kernels.matmulReference`; the shapes whose relative error
    /// exceeds `selfCheckTolerance` (empty: all good). Run by the engine's tests and by the kernel-switch check.
    public static func randomProductMismatches(seed: UInt64 = 99, trials: Int = 24) -> [String] {
        var rng = SeededRandom(seed: seed)
        var bad: [String] = []
        for trial in 0..<trials {
            let m = Int(rng.next() % 40) + 1, k = Int(rng.next() % 300) + 1, n = Int(rng.next() % 40) + 1
            let ta = trial % 2 == 1, tb = trial % 4 >= 2
            let a = Tensor.uniform(ta ? [k, m] : [m, k], low: -1, high: 1, rng: &rng)
            let b = Tensor.uniform(tb ? [n, k] : [k, n], low: -1, high: 1, rng: &rng)
            let fast = Kernels.matmul(a, b, transA: ta, transB: tb), ref = Kernels.matmulReference(a, b, transA: ta, transB: tb)
            let ok = fast.shape == ref.shape && (0..<ref.count).allSatisfy { abs(fast[$0] - ref[$0]) / max(1, abs(ref[$0])) <= selfCheckTolerance }
            if !ok { bad.append("m \(m) k \(k) n \(n) ta \(ta) tb \(tb)") }
        }
        return bad
    }

    /// True when `product` (default: the engine's `Kernels.matmul`, i.e. `cblas_sgemm` on the running set) matches
    /// `Kernels.matmulReference` within `selfCheckTolerance` for every shape, in all four transpose combinations the
    /// engine uses; a NaN fails. About 7 M multiply-adds in the reference: well under 0.1 s in a release build.
    public static func selfCheck(product given: ((Tensor, Tensor, Bool, Bool) -> Tensor)? = nil) -> Bool {
        // (the engine's matmul without the door's choice: this check runs inside it)
        let product = given ?? { Kernels.matmul($0, $1, transA: $2, transB: $3, into: nil, choosing: false) }
        var rng = SeededRandom(seed: 67)
        for (m, k, n) in selfCheckShapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = Tensor.uniform(ta ? [k, m] : [m, k], low: -1, high: 1, rng: &rng)
                let b = Tensor.uniform(tb ? [n, k] : [k, n], low: -1, high: 1, rng: &rng)
                let fast = product(a, b, ta, tb), ref = Kernels.matmulReference(a, b, transA: ta, transB: tb)
                guard fast.shape == ref.shape else { return false }
                for i in 0..<ref.count {
                    let err = abs(fast[i] - ref[i]) / max(1, abs(ref[i]))
                    if !(err <= selfCheckTolerance) { return false }
                }
            }
        }
        return true
    }
}

/// OpenBLAS's `gotoblas` pointer and `gotoblas_dynamic_init`, found with dlsym.
private struct OpenBLASTable {
    let slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    let dynamicInit: @convention(c) () -> Void
    let available: Set<String>

    static func load() -> OpenBLASTable? {
        guard let handle = dlopen(nil, RTLD_NOW),
              let slot = dlsym(handle, "gotoblas"), let initSymbol = dlsym(handle, "gotoblas_dynamic_init") else { return nil }
        let available = Set(BLASKernels.sets.filter { dlsym(handle, $0.symbol) != nil }.map(\.name))
        return OpenBLASTable(slot: slot.assumingMemoryBound(to: UnsafeMutableRawPointer?.self),
                             dynamicInit: unsafeBitCast(initSymbol, to: (@convention(c) () -> Void).self), available: available)
    }

    /// The running table.
    var pointer: UnsafeMutableRawPointer? {
        get { slot.pointee }
        nonmutating set { slot.pointee = newValue }
    }

    /// Clears the pointer and lets OpenBLAS load `name` as if `OPENBLAS_CORETYPE=name` had been set at start, then
    /// puts the environment back (so child processes and the user-override check see what the user set).
    func install(_ name: String) -> Bool {
        guard available.contains(name) else { return false }
        let saved = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        pointer = nil
        setenv("OPENBLAS_CORETYPE", name, 1)
        dynamicInit()
        if let s = saved { setenv("OPENBLAS_CORETYPE", s, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
        return BLASInfo.coreName.lowercased() == name.lowercased()
    }
}

extension BLASKernels {
    /// What the start-up choice would say, without switching anything (safe while other threads use BLAS).
    public static func reportOnly(override: String? = environmentOverride) -> Status {
        let running = BLASInfo.coreName, (flags, halfWidth) = thisCPU
        switch decide(running: running, override: override, flags: flags, available: available, halfWidth: halfWidth) {
        case .keep(let s): return s
        case .trySwitch(let target):
            return Status(running: running, choice: .openblas, best: target, note: "OpenBLAS chose \(running); \(target) not tried (report only)")
        }
    }
}

import COpenBLAS
import CSysShims

/// What the OpenBLAS library in this process is and does (reported in HELLO and by benchmarks).
public enum BLASInfo {
    /// The kernel set running (e.g. "Haswell", "SkylakeX"): OpenBLAS's choice, the user's `OPENBLAS_CORETYPE`, or the
    /// set `BLASKernels.startup` switched to.
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// Threads the engine's products and passes run on (`setThreads`; at start, what OpenBLAS would have used:
    /// `OPENBLAS_NUM_THREADS`, or the cores). OpenBLAS itself runs one thread from then on: the engine splits a large
    /// product by rows or columns over its own threads (`BLAS.sgemm`), each part one single-threaded `cblas_sgemm` — faster
    /// than OpenBLAS's threads for a training step's shapes, and the same bits whatever the thread count
    /// (docs/architecture.md, "Threads in the engine").
    public static var threads: Int { Int(csys_atomic_load_u64(engineThreads)) }

    public static func setThreads(_ n: Int) { csys_atomic_store_u64(engineThreads, UInt64(max(1, n))) }

    /// The threads OpenBLAS started with in this process (read before the engine sets it to one).
    public static let openBLASStarted = max(1, Int(openblas_get_num_threads()))

    nonisolated(unsafe) private static let engineThreads: UnsafeMutablePointer<UInt64> = {
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        p.initialize(to: UInt64(openBLASStarted))
        openblas_set_num_threads(1)
        return p
    }()
}

extension BLASInfo {
    /// `cblas_sgemm` on the tensors' buffers into a reused output, on OpenBLAS's own threads (`threads` of them, not
    /// the engine's split), for benchmarks (the baseline the engine is measured against).
    public static func sgemmDirect(_ a: Tensor, _ b: Tensor, n: Int, threads: Int = 1) {
        let c = scratch(n * n)
        _ = BLASKernels.startup
        onOpenBLASThreads(threads) {
            a.withData { pa in b.withData { pb in
                BLAS.Call(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: pa.baseAddress, lda: n, b: pb.baseAddress, ldb: n,
                          beta: 0, c: c, ldc: n).run(0, n, 0, n)
            } }
        }
    }

    /// Runs `body` with OpenBLAS on `n` threads of its own — the kernel choice's warm-up product, benchmarks' baseline —
    /// then puts it back on one.
    static func onOpenBLASThreads<T>(_ n: Int, _ body: () -> T) -> T {
        _ = threads   // (the engine sets OpenBLAS to one thread the first time: not after `body`)
        openblas_set_num_threads(Int32(n))
        defer { openblas_set_num_threads(1) }
        return body()
    }

    nonisolated(unsafe) private static var scratchBuffer: UnsafeMutablePointer<Float>? = nil
    nonisolated(unsafe) private static var scratchCount = 0
    private static func scratch(_ n: Int) -> UnsafeMutablePointer<Float> {
        if scratchCount < n {
            scratchBuffer?.deallocate()
            scratchBuffer = .allocate(capacity: n)
            scratchCount = n
        }
        return scratchBuffer!
    }
}

/// The engine's one door to OpenBLAS's GEMM: row-major C = alpha · op(A) · op(B) + beta · C. Before the first
/// product in a process it makes that process's kernel choice (`BLASKernels.startup`), so every process computing
/// with the engine — a worker, `--local`, a test, a program linking SigmaEngine — runs the same kernel set on the
/// same CPU and gets the same bits (a test process had run OpenBLAS's own generic pick while its workers ran the
/// better one, and a train job's model differed in the last bits).
enum BLAS {
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                      _ a: UnsafePointer<Float>?, lda: Int, _ b: UnsafePointer<Float>?, ldb: Int,
                      beta: Float, _ c: UnsafeMutablePointer<Float>?, ldc: Int, choosing: Bool = true) {
        if choosing { _ = BLASKernels.startup }
        let call = Call(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        let threads = BLASInfo.threads
        if threads > 1, let split = productSplit(m: m, n: n, k: k, threads: threads), PassTeam.shared.run(parts: split.bounds.count - 1, { i in
            let lo = split.bounds[i], hi = split.bounds[i + 1]
            if split.byRows { call.run(lo, hi, 0, n) } else { call.run(0, m, lo, hi) }
        }) { return }
        call.run(0, m, 0, n)
    }

    /// One product's operands, handed to the engine's threads (each writes its own part of C).
    struct Call: @unchecked Sendable {
        let transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float
        let a: UnsafePointer<Float>?, lda: Int, b: UnsafePointer<Float>?, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>?, ldc: Int

        /// Rows m0..<m1, columns n0..<n1 of C (row-major): from rows m0..<m1 of op(A) and columns n0..<n1 of op(B).
        func run(_ m0: Int, _ m1: Int, _ n0: Int, _ n1: Int) {
            let pa = a.map { transA ? $0 + m0 : $0 + m0 * lda }, pb = b.map { transB ? $0 + n0 * ldb : $0 + n0 }
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m1 - m0), Int32(n1 - n0), Int32(k), alpha, pa, Int32(lda), pb, Int32(ldb), beta, c.map { $0 + m0 * ldc + n0 }, Int32(ldc))
        }
    }

    /// How a product is split over the engine's threads: by rows or by columns of C, at multiples of the alignment
    /// measured for that side and the kernel set running (`BLASTiling`: 64 on the AVX-512 sets; rows at 24 and
    /// columns never on Haswell and Zen) — every part's tiles are the whole product's tiles, and OpenBLAS's K
    /// blocking depends on K alone, so each element is the same sum in the same order as one single-threaded call
    /// (tests check it) — into as many parts as leave each at least `smallestPart` multiply-adds. nil: no side both
    /// long enough for two such parts and cuttable.
    static func productSplit(m: Int, n: Int, k: Int, threads: Int,
                             align: (rows: Int?, columns: Int?) = BLASTiling.current.split)
        -> (byRows: Bool, bounds: [Int])? {
        guard m * n * k >= 2 * smallestPart else { return nil }
        // Each part packs all of the operand the parts share — op(B) (k × n) when split by rows, op(A) (m × k) by
        // columns — so split along the longer side: the smaller operand is the one packed twice.
        let rows = align.rows.map { m >= 2 * $0 } ?? false, columns = align.columns.map { n >= 2 * $0 } ?? false
        guard rows || columns else { return nil }
        let byRows = rows && (!columns || m >= n)
        let extent = byRows ? m : n, unit = byRows ? align.rows! : align.columns!, across = (byRows ? n : m) * k
        var parts = min(threads, extent / unit)
        while parts > 1 {
            // (each inner bound the multiple of `unit` nearest an even share: distinct, since the shares are ≥ unit apart)
            let bounds = (0...parts).map { p in p == parts ? extent : (extent * p / parts + unit / 2) / unit * unit }
            if zip(bounds, bounds.dropFirst()).allSatisfy({ ($1 - $0) * across >= smallestPart }) { return (byRows, bounds) }
            parts -= 1
        }
        return nil
    }

    /// The fewest multiply-adds in a part of a split product (2²¹): below it a helper's wake-up costs more than the
    /// part, and OpenBLAS's AVX-512 sets send a product of at most 100³ to their small-matrix kernel, which rounds a
    /// partial tile apart from the regular kernel — a 300 × 37 × 70 part of a 300 × 165 × 70 product changed bits on
    /// Cooperlake (AMD EPYC Zen 4, OpenBLAS 0.3.21) — so no part comes near that bound.
    static let smallestPart = 1 << 21
}

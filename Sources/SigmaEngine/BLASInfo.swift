import COpenBLAS

/// What the OpenBLAS library in this process is and does (reported in HELLO and by benchmarks).
public enum BLASInfo {
    /// The kernel set running (e.g. "Haswell", "SkylakeX"): OpenBLAS's choice, the user's `OPENBLAS_CORETYPE`, or the
    /// set `BLASKernels.startup` switched to.
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}

extension BLASInfo {
    /// `cblas_sgemm` on the tensors' buffers into a reused output, for benchmarks (the baseline the engine is
    /// measured against).
    public static func sgemmDirect(_ a: Tensor, _ b: Tensor, n: Int) {
        let c = scratch(n * n)
        a.withData { pa in b.withData { pb in
            BLAS.sgemm(transA: false, transB: false, m: n, n: n, k: n, pa.baseAddress, lda: n, pb.baseAddress, ldb: n, beta: 0, c, ldc: n)
        } }
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
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

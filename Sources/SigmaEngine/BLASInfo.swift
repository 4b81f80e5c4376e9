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
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, pa.baseAddress, Int32(n),
                        pb.baseAddress, Int32(n), 0, c, Int32(n))
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

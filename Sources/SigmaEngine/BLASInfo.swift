import COpenBLAS

/// What the OpenBLAS library in this process is and does (reported in HELLO and by benchmarks).
public enum BLASInfo {
    /// The kernel set OpenBLAS chose (e.g. "Haswell", "SkylakeX"); `OPENBLAS_CORETYPE` overrides it.
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}

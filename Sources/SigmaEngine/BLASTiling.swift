import COpenBLAS
import Synchronization

/// Where the running kernel set rounds an element of C the same way, measured once per kernel set in a process: the
/// engine's bitwise guarantees rest on it. A GEMM kernel computes C in register tiles; a kernel set may round an
/// element differently by where it sits in its tile — measured on 2-vCPU AMD EPYC (Zen 3) with Debian's OpenBLAS
/// 0.3.21: its Haswell and Zen sets compute 24-row tiles in two halves that round apart, and a partial tile a third
/// way, while its SkylakeX and Cooperlake sets (AVX-512) and Sandybridge round every position alike. So the row
/// block of row-stable products and the alignment of split products are measured here, not assumed.
public enum BLASTiling {
    public struct Measured: Equatable, Sendable {
        /// Rows per GEMM call of a row-stable product (`Kernels.linear(rowBlock:)`): the largest of 32, 16, 8, 4, 2
        /// for which a row's outputs are the same bits at every position of the block (1: one row per call).
        public let stableRows: Int
        /// Whether those blocks are multiplied transposed — W · blockᵀ, the block's rows as the product's columns —
        /// because that form is stable at a larger block than the plain one (Haswell and Zen: 16 rows against 8; W is
        /// packed once per block, so the larger block is the faster).
        public let stableTransposed: Bool
        /// The multiples of rows, and of columns, at which a product split over the engine's threads may be cut so
        /// that every part gives the whole product's bits: 64 where that holds (the AVX-512 sets), else the smallest of
        /// 24, 48, 96, 192 that does (Haswell and Zen: rows at 24 — their tiles — and no columns: they round by the
        /// product's width as well). nil: no cut of that side keeps the bits.
        public let splitRows: Int?
        public let splitColumns: Int?
        /// (both, as `BLAS.productSplit` takes them)
        public var split: (rows: Int?, columns: Int?) { (splitRows, splitColumns) }
    }

    /// The measure for the kernel set running now (`BLASInfo.coreName`), made on first use of that set.
    public static var current: Measured {
        // (keyed by the name's address: OpenBLAS returns one static string per kernel set — no String made per product)
        let core = Int(bitPattern: openblas_get_corename())
        if let m = cache.withLock({ $0[core] }) { return m }
        let rows = probeStableRows()
        let m = Measured(stableRows: rows.rows, stableTransposed: rows.transposed, splitRows: probeSplit(byRows: true), splitColumns: probeSplit(byRows: false))
        cache.withLock { $0[core] = m }
        return m
    }

    private static let cache = Mutex<[Int: Measured]>([:])

    static let rowCandidates = [32, 16, 8, 4, 2]
    static let alignCandidates = [64, 24, 48, 96, 192]

    /// Layer shapes (inputs k, outputs n) the row probe runs: narrow and wide, partial and full column tiles.
    static let probeShapes: [(k: Int, n: Int)] = [(64, 10), (100, 48), (384, 384), (784, 1024), (1024, 37)]

    /// For each candidate block, one row repeated over the whole block, with a bias as the initial C (as
    /// `Kernels.linear(rowBlock:)` calls GEMM): every position must give the same bits.
    /// (and the same in the transposed form, W · blockᵀ with the bias along each output's row; the plain form first)
    static func probeStableRows() -> (rows: Int, transposed: Bool) {
        var rng = ProbeRandom()
        let inputs = probeShapes.map { s in (s, rng.floats(s.k), rng.floats(s.n * s.k), rng.floats(s.n)) }
        for rows in rowCandidates {
            for transposed in [false, true] {
                let stable = inputs.allSatisfy { s, x, w, bias in
                    let block = (0..<rows).flatMap { _ in x }
                    if transposed {
                        var c = bias.flatMap { [Float](repeating: $0, count: rows) }
                        gemm(transB: true, m: s.n, n: rows, k: s.k, w, block, beta: 1, &c)
                        return (0..<s.n).allSatisfy { o in (1..<rows).allSatisfy { c[o * rows + $0].bitPattern == c[o * rows].bitPattern } }
                    }
                    var c = (0..<rows).flatMap { _ in bias }
                    gemm(transB: true, m: rows, n: s.n, k: s.k, block, w, beta: 1, &c)
                    return (1..<rows).allSatisfy { r in (0..<s.n).allSatisfy { c[r * s.n + $0].bitPattern == c[$0].bitPattern } }
                }
                if stable { return (rows, transposed) }
            }
        }
        return (1, false)
    }

    /// For each candidate alignment, a product with a partial tile at its end cut at it and at twice it, by rows or by
    /// columns (as `BLAS.sgemm` cuts them over threads): every part must give the whole product's bits. The side
    /// not cut is 300 wide (a kernel may round by the product's width: Haswell's rounds rows two ways at 1,024
    /// columns and one way at 10), and K 300, so every part has at least `BLAS.smallestPart` multiply-adds, as every
    /// part `BLAS.productSplit` makes has (with K 70, the 37-wide part went to the AVX-512 sets' small-matrix kernel,
    /// which the split never reaches, and columns were never cut on them).
    static func probeSplit(byRows: Bool) -> Int? {
        var rng = ProbeRandom()
        for align in alignCandidates {
            let extent = 2 * align + 37, side = 300, k = 300
            assert(side * min(align, 37) * k >= BLAS.smallestPart)
            let m = byRows ? extent : side, n = byRows ? side : extent
            let a = rng.floats(m * k), b = rng.floats(k * n)
            var whole = [Float](repeating: 0, count: m * n)
            gemm(transB: false, m: m, n: n, k: k, a, b, beta: 0, &whole)
            var cut = [Float](repeating: 0, count: m * n)
            let bounds = [0, align, 2 * align, extent]
            for (lo, hi) in zip(bounds, bounds.dropFirst()) {
                if byRows {
                    var c = [Float](repeating: 0, count: (hi - lo) * n)
                    gemm(transB: false, m: hi - lo, n: n, k: k, Array(a[lo * k..<hi * k]), b, beta: 0, &c)
                    cut.replaceSubrange(lo * n..<hi * n, with: c)
                } else {
                    var c = [Float](repeating: 0, count: m * (hi - lo))
                    gemm(transB: false, m: m, n: hi - lo, k: k, a, (0..<k).flatMap { r in b[r * n + lo..<r * n + hi] }, beta: 0, &c)
                    for r in 0..<m { cut.replaceSubrange(r * n + lo..<r * n + hi, with: c[r * (hi - lo)..<(r + 1) * (hi - lo)]) }
                }
            }
            if whole.map(\.bitPattern) == cut.map(\.bitPattern) { return align }
        }
        return nil
    }

    /// One single-threaded `cblas_sgemm` (OpenBLAS runs one thread unless a benchmark asks for more), row-major,
    /// A not transposed: C = A · op(B) + beta · C.
    private static func gemm(transB: Bool, m: Int, n: Int, k: Int, _ a: [Float], _ b: [Float], beta: Float, _ c: inout [Float]) {
        _ = BLASInfo.threads   // (the engine puts OpenBLAS on one thread the first time)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
                    b, Int32(transB ? k : n), beta, &c, Int32(n))
    }

    /// A fixed sequence of floats in [-1, 1) (the probes' operands: the same in every process).
    struct ProbeRandom {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        mutating func floats(_ count: Int) -> [Float] {
            (0..<count).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
            }
        }
    }
}

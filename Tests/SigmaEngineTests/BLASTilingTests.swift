@testable import SigmaEngine
import Testing

/// The row block and split alignment measured for the running kernel set (`BLASTiling`): what they promise holds,
/// and the probe is not merely conservative — where it chose fewer than 32 rows, 32 really rounds rows by position.
@Suite struct BLASTilingTests {
    func bits(_ t: Tensor) -> [UInt32] { t.scalars.map(\.bitPattern) }

    /// Each row of a row-stable product is the same bits alone as at any place in a batch, for layer shapes the probe
    /// did not run (odd widths: partial tiles both ways).
    @Test func rowStableProductsGiveEachRowTheSameBitsAloneAsInABatch() {
        let measured = Kernels.tiling
        #expect((BLASTiling.rowCandidates + [1]).contains(measured.stableRows))
        #expect(!measured.stableTransposed || measured.stableRows > 1)
        var rng = SeededRandom(seed: 12)
        for (k, n) in [(33, 7), (200, 130), (512, 96), (768, 3)] {
            let x = Tensor.uniform([53, k], low: -1, high: 1, rng: &rng), w = Tensor.uniform([n, k], low: -1, high: 1, rng: &rng)
            let b = Tensor.uniform([n], low: -1, high: 1, rng: &rng)
            let batch = Kernels.linearRowStable(x, w, b)
            for r in [0, 1, 6, 7, 8, 9, 23, 24, 31, 32, 52] {
                let alone = Kernels.linearRowStable(x.rows(r..<(r + 1)), w, b)
                #expect(bits(alone) == bits(batch.rows(r..<(r + 1))), "k \(k), n \(n), row \(r) of 53, \(measured.stableRows)-row blocks")
            }
        }
    }

    /// The probe takes the first stable block of 32, 16, 8 … rows, each plain then transposed: where it settled for
    /// less than 32 rows plain (Haswell and Zen kernels), the candidate just before its choice does round one row
    /// differently by its position — the reason for the choice; where it kept 32 plain, nothing to show.
    @Test(.enabled(if: Kernels.tiling.stableRows < 32 || Kernels.tiling.stableTransposed, "this kernel set keeps 32-row blocks: no smaller block to justify"))
    func aSmallerRowBlockIsChosenOnlyWhereTheLargerOneRoundsByPosition() {
        let measured = Kernels.tiling
        let order = BLASTiling.rowCandidates.flatMap { [($0, false), ($0, true)] }
        let i = order.firstIndex { $0 == (measured.stableRows, measured.stableTransposed) } ?? order.count
        let (larger, transposed) = order[i - 1]
        var rng = SeededRandom(seed: 5)
        var differs = false
        for (k, n) in BLASTiling.probeShapes where !differs {
            let row = Tensor.uniform([1, k], low: -1, high: 1, rng: &rng), w = Tensor.uniform([n, k], low: -1, high: 1, rng: &rng)
            let b = Tensor.uniform([n], low: -1, high: 1, rng: &rng)
            let block = Tensor(shape: [larger, k], (0..<larger).flatMap { _ in row.scalars })
            let y = Kernels.linear(block, w, b, rowBlock: larger, transposed: transposed)
            differs = (1..<larger).contains { bits(y.rows($0..<($0 + 1))) != bits(y.rows(0..<1)) }
        }
        #expect(differs, "the probe chose \(measured.stableRows)-row blocks\(measured.stableTransposed ? " transposed" : ""), yet \(larger) rows\(transposed ? " transposed" : "") round every position alike")
    }

    /// The transposed form gives the plain form's values within rounding, and is row-stable where measured so.
    @Test func theTransposedFormComputesTheSameLinearMap() {
        var rng = SeededRandom(seed: 21)
        let x = Tensor.uniform([37, 90], low: -1, high: 1, rng: &rng), w = Tensor.uniform([50, 90], low: -1, high: 1, rng: &rng)
        let b = Tensor.uniform([50], low: -1, high: 1, rng: &rng)
        let plain = Kernels.linear(x, w, b), t = Kernels.linear(x, w, b, rowBlock: 16, transposed: true)
        #expect(t.shape == [37, 50])
        #expect(zip(plain.scalars, t.scalars).allSatisfy { abs($0 - $1) <= 1e-4 })
        let noBias = Kernels.linear(x, w, nil, rowBlock: 16, transposed: true)
        #expect(zip(Kernels.linear(x, w, nil).scalars, noBias.scalars).allSatisfy { abs($0 - $1) <= 1e-4 })
    }

    /// Products cut at the measured alignments, by rows and (where the set allows it) by columns, keep the whole
    /// product's bits, for a product the probe did not run.
    @Test(.enabled(if: Kernels.tiling.splitRows != nil, "no cut of rows keeps this kernel set's bits: products are not split"))
    func productsCutAtTheMeasuredAlignmentKeepTheWholeProductsBits() throws {
        let measured = Kernels.tiling
        var rng = SeededRandom(seed: 8)
        for (m, n) in [(3 * measured.splitRows! + 11, 150), (150, 3 * (measured.splitColumns ?? 64) + 5)] {
            let a = Tensor.uniform([m, 400], low: -1, high: 1, rng: &rng), b = Tensor.uniform([400, n], low: -1, high: 1, rng: &rng)
            let saved = BLASInfo.threads
            defer { BLASInfo.setThreads(saved) }
            BLASInfo.setThreads(1)
            let whole = Kernels.matmul(a, b)
            BLASInfo.setThreads(3)
            let split = BLAS.productSplit(m: m, n: n, k: 400, threads: 3)
            #expect(split != nil || m < n && measured.splitColumns == nil, "(\(m), \(n)) was not split")
            #expect(bits(Kernels.matmul(a, b)) == bits(whole), "(\(m), \(n)) split \(String(describing: split))")
        }
    }
}

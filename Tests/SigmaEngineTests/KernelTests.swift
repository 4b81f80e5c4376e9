import Glibc
import SigmaEngine
import Testing

func maxRelativeError(_ a: Tensor, _ b: Tensor) -> Float {
    #expect(a.shape == b.shape)
    var worst: Float = 0
    for i in 0..<a.count { worst = max(worst, abs(a[i] - b[i]) / max(1, abs(b[i]))) }
    return worst
}

@Suite struct KernelTests {
    /// cblas_sgemm against the Float64 triple loop: relative error ≤ 1e-5 (Float32 accumulation over K ≤ 300).
    @Test func fastMatmulEqualsReference() {
        #expect(BLASKernels.selfCheckTolerance <= 1e-5)
        let bad = BLASKernels.randomProductMismatches(seed: 99, trials: 24)
        #expect(bad.isEmpty, "products beyond 1e-5 of the reference: \(bad)")
    }

    /// Broadcasting fast paths equal the general multi-index reference exactly.
    @Test func fastBroadcastEqualsReference() {
        let shapes: [([Int], [Int])] = [([4, 5], [4, 5]), ([4, 5], [5]), ([2, 3, 4], [3, 4]), ([4, 5], [4, 1]), ([3, 1], [1, 4]), ([6], []),
                                        ([3, 4, 4], [3, 1, 4]), ([2, 3, 4], [1, 3, 4]), ([2, 3, 4], [2, 3, 1])]
        for (i, (sa, sb)) in shapes.enumerated() {
            let a = random(sa, seed: UInt64(i)), b = random(sb, seed: UInt64(i + 100), low: 0.5, high: 2)
            for op in [Kernels.Binary.add, .sub, .mul, .div] {
                #expect(Kernels.binary(op, a, b) == Kernels.binaryReference(op, a, b), "\(sa) \(op) \(sb)")
            }
        }
        // sumTo inverts broadcasting: fast row-sum path and general path agree with a direct sum.
        let g = random([3, 4], seed: 7)
        let col = Kernels.sumTo(g, shape: [3, 1]), row = Kernels.sumTo(g, shape: [4])
        for r in 0..<3 { #expect(abs(col[r] - (0..<4).map { g[r * 4 + $0] }.reduce(0, +)) < 1e-6) }
        for c in 0..<4 { #expect(abs(row[c] - (0..<3).map { g[$0 * 4 + c] }.reduce(0, +)) < 1e-6) }
        // The row sums (bias gradients) go 8 lanes at a time: bitwise the sum of the rows in order, one by one,
        // whatever the width (with a tail of fewer than 8).
        for width in [1, 8, 21, 1024] {
            let t = random([37, width], seed: UInt64(width), low: -100, high: 100)
            var want = [Float](repeating: 0, count: width)
            for r in 0..<37 { for c in 0..<width { want[c] += t[r * width + c] } }
            #expect(Kernels.sumTo(t, shape: [width]).scalars.map(\.bitPattern) == want.map(\.bitPattern), "width \(width)")
        }
    }

    /// The fused, max-subtracted log-softmax against the Float64 composition of primitives: ≤ 1e-5.
    @Test func logSoftmaxEqualsReference() {
        let x = random([8, 10], seed: 5, low: -20, high: 20)
        #expect(maxRelativeError(Kernels.logSoftmax(x), Kernels.logSoftmaxReference(x)) <= 1e-5)
        // Stable where the naive form overflows.
        let big = Tensor(shape: [1, 3], [1000, 1001, 1002])
        #expect(Kernels.logSoftmax(big).scalars.allSatisfy { $0.isFinite })
    }

    /// The 16-lane ReLU and its backward against the scalar definitions, bit for bit, at lengths with every tail
    /// size, with NaN, ±0 and infinities among the inputs (x > 0 ? v : 0, so NaN and -0 give +0).
    @Test func simdReluEqualsScalarDefinition() {
        var rng = SeededRandom(seed: 3)
        for n in [0, 1, 15, 16, 17, 31, 33, 100, 1024 + 7] {
            var xs = Tensor.uniform([n], low: -1, high: 1, rng: &rng).scalars
            let specials: [Float] = [.nan, -0.0, 0.0, .infinity, -.infinity, .leastNonzeroMagnitude]
            for (k, v) in specials.enumerated() where k * 5 < n { xs[k * 5] = v }
            let x = Tensor(shape: [n], xs), g = Tensor.uniform([n], low: -2, high: 2, rng: &rng)
            let y = Kernels.unary(.relu, x), dx = Kernels.unaryBackward(.relu, x: x, y: y, g: g)
            for i in 0..<n {
                let want: Float = xs[i] > 0 ? xs[i] : 0, wantG: Float = xs[i] > 0 ? g[i] : 0
                #expect(y[i].bitPattern == want.bitPattern, "relu n \(n) i \(i): \(y[i]) vs \(want)")
                #expect(dx[i].bitPattern == wantG.bitPattern, "relu backward n \(n) i \(i)")
            }
        }
    }

    @Test func geluIsTheErfForm() {
        // Values from PyTorch's F.gelu (approximate='none').
        let x = Tensor(shape: [5], [-3, -1, 0, 0.5, 2])
        let expected: [Float] = [-0.0040496886, -0.15865526, 0, 0.34573123, 1.9544997]
        let y = Kernels.unary(.gelu, x)
        for i in 0..<5 { #expect(abs(y[i] - expected[i]) < 1e-6) }
    }
}

@Suite struct FastErfTests {
    /// The GELU's erf approximation against libm's erff over [-6, 6]: ≤ 1e-6 absolute (A&S 7.1.26 is within
    /// 1.5e-7 in exact arithmetic; evaluating it in Float32 adds a few ulps of 1.0, 6e-8 each).
    @Test func fastErfMatchesLibm() {
        var worst: Float = 0
        for i in 0...120_000 {
            let x = -6 + Float(i) * 1e-4
            worst = max(worst, abs(fastErf(x) - erff(x)))
        }
        #expect(worst <= 1e-6, "max |fastErf − erff| = \(worst)")
    }
}

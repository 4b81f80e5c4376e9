import Glibc
import SigmaEngine
import Testing

@Suite struct TransformerTests {
    @Test func gradientsOfTransformerPrimitives() {
        let a = random([2, 3, 4], seed: 50), b = random([2, 4, 5], seed: 51), bt = random([2, 5, 4], seed: 52)
        checkGradients([a, b, random([2, 3, 5], seed: 53)]) { ($0[0].bmm($0[1]) * $0[2]).sum() }
        checkGradients([a, bt, random([2, 3, 5], seed: 54)]) { ($0[0].bmm($0[1], transB: true) * $0[2]).sum() }
        checkGradients([a, random([4, 2, 3], seed: 55)]) { ($0[0].permuted([2, 0, 1]) * $0[1]).sum() }
        checkGradients([random([3, 6], seed: 56, low: -2, high: 2), random([3, 6], seed: 57)]) { ($0[0].softmax() * $0[1]).sum() }
        let x = random([4, 6], seed: 58, low: -2, high: 2), gamma = random([6], seed: 59, low: 0.5, high: 1.5), beta = random([6], seed: 60)
        checkGradients([x, gamma, beta, random([4, 6], seed: 61)]) { ($0[0].layerNorm($0[1], $0[2]) * $0[3]).sum() }
        checkGradients([random([5, 3], seed: 62), random([4, 3], seed: 63)]) { ($0[0].gather([4, 0, 4, 2]) * $0[1]).sum() }
    }

    @Test func fusedKernelsEqualReferences() {
        let x = random([7, 12], seed: 64, low: -3, high: 3), gamma = random([12], seed: 65), beta = random([12], seed: 66)
        let (y, _, _) = Kernels.layerNorm(x, gamma, beta, epsilon: 1e-5)
        #expect(maxRelativeError(y, Kernels.layerNormReference(x, gamma, beta, epsilon: 1e-5)) <= 1e-5)
        let s = Kernels.softmax(x)
        let ref = Kernels.logSoftmaxReference(x).scalars.map { Float(Glibc.exp(Double($0))) }
        #expect(maxRelativeError(s, Tensor(shape: x.shape, ref)) <= 1e-5)
        let p = Kernels.permute(random([2, 3, 4], seed: 67), [1, 2, 0])
        #expect(p.shape == [3, 4, 2])
        let src = random([2, 3, 4], seed: 67).scalars
        #expect(p[(1 * 4 + 2) * 2 + 1] == src[(1 * 3 + 1) * 4 + 2])
    }

    /// The vectorised kernels against their definitions: GELU (C, its own e^x) within 1e-6 of the scalar erf
    /// form over [-12, 12] and ±∞; softmax (C) within 1e-6 relative of the Float64 definition, also with masked
    /// (−1e9) entries and rows of width 1…67; a permute — keeping the last axis (contiguous runs copied) or not —
    /// equal to index-by-index placement.
    @Test func vectorisedKernelsEqualTheirDefinitions() {
        let xs = (0...24_000).map { -12 + Float($0) * 1e-3 } + [.infinity, 0, -0.0, 1e-30]
        let g = Kernels.unary(.gelu, Tensor(shape: [xs.count], xs))
        for (i, x) in xs.enumerated() {
            let want = 0.5 * x * (1 + fastErf(x * 0.70710678118654752))
            #expect(g[i] == want || abs(g[i] - want) <= 1e-6 * max(1, abs(want)), "gelu(\(x)) = \(g[i]), scalar \(want)")
        }
        for width in [1, 3, 16, 17, 67] {
            var t = random([5, width], seed: UInt64(width), low: -30, high: 30)
            t.withMutableData { if width > 2 { $0[1] = -1e9; $0[width + 2] = -1e9 } }
            let s = Kernels.softmax(t), ref = Kernels.softmaxReference(t)
            for i in 0..<t.count { #expect(abs(s[i] - ref[i]) <= 1e-6 * max(abs(ref[i]), 1e-30) + 1e-38, "softmax width \(width) [\(i)]") }
        }
        for (shape, order) in [([2, 3, 4, 5], [0, 2, 1, 3]), ([3, 4, 2], [1, 0, 2]), ([2, 2, 3, 4], [2, 0, 1, 3]),
                               ([2, 3, 4], [1, 2, 0]), ([2, 3, 4, 5], [3, 1, 0, 2]), ([7], [0]), ([3, 1], [0, 1])] {
            let a = random(shape, seed: 71), p = Kernels.permute(a, order)
            let outShape = order.map { shape[$0] }
            #expect(p.shape == outShape)
            var inStrides = [Int](repeating: 1, count: shape.count)
            for d in stride(from: shape.count - 2, through: 0, by: -1) { inStrides[d] = inStrides[d + 1] * shape[d + 1] }
            for o in 0..<p.count {
                var rest = o, src = 0
                for d in stride(from: outShape.count - 1, through: 0, by: -1) {
                    src += (rest % outShape[d]) * inStrides[order[d]]
                    rest /= outShape[d]
                }
                #expect(p[o] == a[src], "permute \(shape) by \(order) at \(o)")
            }
        }
    }

    /// Attention with a padding mask: masked keys get no weight, and gradients flow.
    @Test func attentionGradientsAndMask() {
        var rng = SeededRandom(seed: 68)
        let mha = MultiHeadSelfAttention(width: 8, heads: 2, rng: &rng)
        let x = random([6, 8], seed: 69)
        let pad = [[false, false, true], [false, false, false]]
        // Changing a padded position's input must not change any unpadded output.
        let g1 = Graph(), y1 = mha(g1.constant(x), batch: 2, keyPadding: pad).value
        var x2 = x
        x2.withMutableData { for j in 0..<8 { $0[2 * 8 + j] += 5 } }
        let g2 = Graph(), y2 = mha(g2.constant(x2), batch: 2, keyPadding: pad).value
        for r in [0, 1, 3, 4, 5] { for j in 0..<8 { #expect(abs(y1[r * 8 + j] - y2[r * 8 + j]) < 1e-5) } }
        checkGradients([x, random([6, 8], seed: 70)]) { v in (mha(v[0], batch: 2, keyPadding: pad) * v[1]).sum() }
    }

    /// Inference's fused attention kernel gives the recorded ops' bits: without a mask, with a per-key mask
    /// (B, 1, T) and with a full (B, T, T) mask, including rows whose every key is masked.
    @Test func fusedAttentionEqualsTheRecordedOps() {
        let q = random([3, 5, 4], seed: 71, low: -2, high: 2), k = random([3, 5, 4], seed: 72, low: -2, high: 2), v = random([3, 5, 4], seed: 73)
        var keyMask = [Float](repeating: 0, count: 3 * 5), full = [Float](repeating: 0, count: 3 * 5 * 5)
        for j in [1, 4] { keyMask[5 + j] = -1e30 }
        for i in 0..<full.count where i % 3 == 0 || (i >= 50 && i < 55) { full[i] = -1e30 }
        for mask in [nil, Tensor(shape: [3, 1, 5], keyMask), Tensor(shape: [3, 5, 5], full)] {
            let recorded = Graph(), quiet = Graph(recording: false)
            func run(_ g: Graph) -> Tensor {
                scaledDotProductAttention(g.constant(q), g.constant(k), g.constant(v), mask: mask.map { g.constant($0) }).value
            }
            let a = run(recorded), b = run(quiet)
            #expect(a.shape == [3, 5, 4] && b.shape == a.shape)
            #expect(a.scalars.map(\.bitPattern) == b.scalars.map(\.bitPattern), "mask \(mask?.shape ?? [])")
            #expect(recorded.values.count > 5 && quiet.values.isEmpty)
        }
    }

    /// One encoder layer equals PyTorch's nn.TransformerEncoderLayer (post-norm, GELU, padding mask): ≤ 1e-4.
    @Test func encoderLayerMatchesPyTorch() throws {
        let f = try SafeTensors.read(path: engineFixtures + "/encoder_layer.safetensors")
        var rng = SeededRandom(seed: 0)
        let layer = TransformerEncoderLayer(width: 16, heads: 4, hidden: 32, rng: &rng)
        var w = f
        let inW = f["self_attn.in_proj_weight"]!, inB = f["self_attn.in_proj_bias"]!
        for (i, part) in ["query", "key", "value"].enumerated() {
            w["self_attn.\(part).weight"] = inW.rows((16 * i)..<(16 * (i + 1)))
            w["self_attn.\(part).bias"] = inB.rows((16 * i)..<(16 * (i + 1)))
        }
        w["self_attn.output.weight"] = f["self_attn.out_proj.weight"]
        w["self_attn.output.bias"] = f["self_attn.out_proj.bias"]
        for p in layer.parameters {
            let t = try #require(w[p.name], "fixture has no \(p.name)")
            #expect(t.shape == p.value.shape, "\(p.name)")
            p.value = t
        }
        let pad = f["key_padding"]!.scalars
        let mask = (0..<2).map { b in (0..<5).map { pad[b * 5 + $0] != 0 } }
        let g = Graph()
        let y = layer(g.constant(f["input"]!.reshaped([10, 16])), batch: 2, keyPadding: mask).value
        #expect(maxAbsDiff(y.reshaped([2, 5, 16]), f["output"]!) <= 1e-4)
        // Inference on a graph that records nothing: row-stable (below), equal to the recorded forward within
        // rounding at its real positions, and no tape kept (the recording graph holds every intermediate of the layer).
        let quiet = Graph(recording: false)
        let yq = layer(quiet.constant(f["input"]!.reshaped([10, 16])), batch: 2, keyPadding: mask).value
        for r in (0..<10) where !mask[r / 5][r % 5] { #expect(maxAbsDiff(yq.rows(r..<(r + 1)), y.rows(r..<(r + 1))) <= 1e-5, "row \(r)") }
        #expect(quiet.values.isEmpty && !quiet.recording)
        #expect(g.values.count > 20)
        // Packed (no padding rows at all): the same bits as the padded call's real rows.
        let lengths = mask.map { $0.firstIndex(of: true) ?? 5 }
        let realRows = (0..<2).flatMap { b in (b * 5)..<(b * 5 + lengths[b]) }
        let input = f["input"]!.reshaped([10, 16])
        let packedInput = Tensor(shape: [realRows.count, 16], realRows.flatMap { input.rows($0..<($0 + 1)).scalars })
        let packed = layer(Graph(recording: false).constant(packedInput), lengths: lengths).value
        #expect(packed.scalars.map(\.bitPattern) == realRows.flatMap { yq.rows($0..<($0 + 1)).scalars.map(\.bitPattern) })
        // Row-stable: each sequence's outputs are the same bits alone (unpadded) as beside the other one.
        for b in 0..<2 {
            let n = mask[b].firstIndex(of: true) ?? 5
            let alone = layer(Graph(recording: false).constant(f["input"]!.reshaped([10, 16]).rows((b * 5)..<(b * 5 + n))), batch: 1).value
            #expect(alone.scalars.map(\.bitPattern) == yq.rows((b * 5)..<(b * 5 + n)).scalars.map(\.bitPattern), "sequence \(b)")
        }
    }
}

@Suite struct BatchedMatmulTests {
    /// Batched GEMM against the Float64 reference applied per batch, all four layouts: ≤ 1e-5 relative.
    @Test func bmmEqualsPerBatchReference() {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = random(ta ? [3, 7, 5] : [3, 5, 7], seed: 90), b = random(tb ? [3, 4, 7] : [3, 7, 4], seed: 91)
            let fast = Kernels.bmm(a, b, transA: ta, transB: tb)
            #expect(fast.shape == [3, 5, 4])
            for i in 0..<3 {
                let ref = Kernels.matmulReference(a.rows(i..<(i + 1)).reshaped(Array(a.shape.dropFirst())),
                                                  b.rows(i..<(i + 1)).reshaped(Array(b.shape.dropFirst())), transA: ta, transB: tb)
                #expect(maxRelativeError(fast.rows(i..<(i + 1)).reshaped([5, 4]), ref) <= 1e-5, "ta \(ta) tb \(tb) batch \(i)")
            }
        }
    }
}

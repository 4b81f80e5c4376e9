import COpenBLAS
import CSysShims
import Glibc

/// Kernels for transformer layers: batched matmul, permutes, softmax, layer norm, embedding gather.
extension Kernels {
    /// a (B, M, K) · b (B, K, N) → (B, M, N) (b read as (B, N, K) when `transB`), one `cblas_sgemm` per batch.
    public static func bmm(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
        precondition(a.rank == 3 && b.rank == 3 && a.shape[0] == b.shape[0], "bmm needs (B, M, K) and (B, K, N), got \(a.shape), \(b.shape)")
        let batch = a.shape[0]
        let m = transA ? a.shape[2] : a.shape[1], k = transA ? a.shape[1] : a.shape[2]
        let n = transB ? b.shape[1] : b.shape[2], k2 = transB ? b.shape[2] : b.shape[1]
        precondition(k == k2, "bmm: inner dimensions differ: \(a.shape) · \(b.shape)")
        var out = Tensor(zeros: [batch, m, n])
        if m == 0 || n == 0 || k == 0 { return out }
        a.withData { pa in b.withData { pb in out.withMutableData { po in
            for i in 0..<batch {
                BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, pa.baseAddress! + i * m * k, lda: a.shape[2],
                           pb.baseAddress! + i * k * n, ldb: b.shape[2], beta: 0, po.baseAddress! + i * m * n, ldc: n)
            }
        } } }
        return out
    }

    /// softmax(q kᵀ · scale + mask) v for q, k, v (B, T, d) and a mask (B, 1, T) or (B, T, T), one (T, T) score
    /// matrix at a time: the steps `scaledDotProductAttention` records, in the same order with the same roundings
    /// (so the same bits), without the (B, T, T) intermediates — for inference, where nothing needs them later.
    public static func attention(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: Tensor?, scale: Float) -> Tensor {
        precondition(q.rank == 3 && k.shape == q.shape && v.shape == q.shape, "attention needs q, k, v of one shape (B, T, d), got \(q.shape), \(k.shape), \(v.shape)")
        let batch = q.shape[0], t = q.shape[1], d = q.shape[2]
        let maskRows = mask?.shape[1] ?? 0
        if let m = mask {
            precondition(m.shape == [batch, 1, t] || m.shape == [batch, t, t], "attention mask \(m.shape) for scores \([batch, t, t])")
        }
        var out = Tensor(zeros: [batch, t, d])
        if t == 0 || d == 0 { return out }
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * t)
        defer { scores.deallocate() }
        q.withData { pq in k.withData { pk in v.withData { pv in out.withMutableData { po in
            for i in 0..<batch {
                BLAS.sgemm(transA: false, transB: true, m: t, n: t, k: d, pq.baseAddress! + i * t * d, lda: d,
                           pk.baseAddress! + i * t * d, ldb: d, beta: 0, scores, ldc: t)
                for j in 0..<(t * t) { scores[j] = scores[j] * scale }
                if let m = mask {
                    m.withData { pm in
                        let rows = pm.baseAddress! + i * maskRows * t
                        for r in 0..<t {
                            let mr = rows + (maskRows == 1 ? 0 : r * t), sr = scores + r * t
                            for j in 0..<t { sr[j] = sr[j] + mr[j] }
                        }
                    }
                }
                csys_softmax_rows(scores, scores, t, t)
                BLAS.sgemm(transA: false, transB: false, m: t, n: d, k: t, scores, lda: t,
                           pv.baseAddress! + i * t * d, ldb: d, beta: 0, po.baseAddress! + i * t * d, ldc: d)
            }
        } } } }
        return out
    }

    /// softmax(q kᵀ · scale) v for q, k, v (B, T, d) where sequence i is its first `lengths[i]` positions (the rest
    /// padding: never attended to, and zero in the output). Each sequence's products have its own length, so its
    /// bits are the same in any batch (row-stable inference).
    public static func attention(_ q: Tensor, _ k: Tensor, _ v: Tensor, lengths: [Int], scale: Float) -> Tensor {
        precondition(q.rank == 3 && k.shape == q.shape && v.shape == q.shape && lengths.count == q.shape[0], "attention needs q, k, v (B, T, d) and B lengths")
        let batch = q.shape[0], t = q.shape[1], d = q.shape[2]
        var out = Tensor(zeros: [batch, t, d])
        if t == 0 || d == 0 { return out }
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * t)
        defer { scores.deallocate() }
        q.withData { pq in k.withData { pk in v.withData { pv in out.withMutableData { po in
            for i in 0..<batch {
                let n = min(max(lengths[i], 0), t)
                if n == 0 { continue }
                let at = i * t * d
                sequenceAttention(n: n, d: d, pq.baseAddress! + at, pk.baseAddress! + at, pv.baseAddress! + at, into: po.baseAddress! + at,
                                  scores: scores, scale: scale)
            }
        } } } }
        return out
    }

    /// Multi-head attention over packed sequences: q, k, v (Σ lengths, heads · dh), sequence after sequence; each
    /// head of each sequence attends over that sequence only. Each (sequence, head) block is gathered into the same
    /// contiguous (n, dh) layout `attention(_:_:_:lengths:scale:)` reads, so the bits are the same.
    public static func attention(packed q: Tensor, _ k: Tensor, _ v: Tensor, lengths: [Int], heads: Int, scale: Float) -> Tensor {
        precondition(q.rank == 2 && k.shape == q.shape && v.shape == q.shape && q.shape[0] == lengths.reduce(0, +) && q.shape[1] % heads == 0,
                     "packed attention needs q, k, v (Σ lengths, heads · dh), got \(q.shape) for \(lengths.reduce(0, +)) rows")
        let rows = q.shape[0], width = q.shape[1], d = width / heads
        var out = Tensor(zeros: [rows, width])
        let t = lengths.max() ?? 0
        if rows == 0 || d == 0 || t == 0 { return out }
        let qs = UnsafeMutablePointer<Float>.allocate(capacity: t * d), ks = UnsafeMutablePointer<Float>.allocate(capacity: t * d)
        let vs = UnsafeMutablePointer<Float>.allocate(capacity: t * d), os = UnsafeMutablePointer<Float>.allocate(capacity: t * d)
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * t)
        defer { for p in [qs, ks, vs, os, scores] { p.deallocate() } }
        q.withData { pq in k.withData { pk in v.withData { pv in out.withMutableData { po in
            var offset = 0
            for n in lengths {
                defer { offset += n }
                if n == 0 { continue }
                for h in 0..<heads {
                    for r in 0..<n {
                        let src = (offset + r) * width + h * d
                        (qs + r * d).update(from: pq.baseAddress! + src, count: d)
                        (ks + r * d).update(from: pk.baseAddress! + src, count: d)
                        (vs + r * d).update(from: pv.baseAddress! + src, count: d)
                    }
                    sequenceAttention(n: n, d: d, qs, ks, vs, into: os, scores: scores, scale: scale)
                    for r in 0..<n { (po.baseAddress! + (offset + r) * width + h * d).update(from: os + r * d, count: d) }
                }
            }
        } } } }
        return out
    }

    /// One sequence's (one head's) attention over its `n` positions: q, k, v and `out` contiguous (n, d) rows;
    /// `scores` room for n × n. The one computation both row-stable attentions run, so their bits agree.
    static func sequenceAttention(n: Int, d: Int, _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                                  into out: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>, scale: Float) {
        BLAS.sgemm(transA: false, transB: true, m: n, n: n, k: d, q, lda: d, k, ldb: d, beta: 0, scores, ldc: n)
        for j in 0..<(n * n) { scores[j] = scores[j] * scale }
        csys_softmax_rows(scores, scores, n, n)
        BLAS.sgemm(transA: false, transB: false, m: n, n: d, k: n, scores, lda: n, v, ldb: d, beta: 0, out, ldc: d)
    }

    /// Reorders axes: output axis i is input axis `order[i]`.
    public static func permute(_ a: Tensor, _ order: [Int]) -> Tensor {
        precondition(order.sorted() == Array(0..<a.rank), "permute: \(order) is not a permutation of \(a.rank) axes")
        let outShape = order.map { a.shape[$0] }
        var inStrides = [Int](repeating: 1, count: a.rank)
        for d in stride(from: a.rank - 2, through: 0, by: -1) { inStrides[d] = inStrides[d + 1] * a.shape[d + 1] }
        let strides = order.map { inStrides[$0] }
        var out = Tensor(uninitialized: outShape)
        // One odometer over the output: when the last axis stays last (attention's head split and merge) it steps
        // over contiguous runs, copied whole; otherwise over single elements.
        let keepsLast = a.rank > 1 && order.last == a.rank - 1 && (a.shape.last ?? 0) > 1
        let run = keepsLast ? a.shape[a.rank - 1] : 1
        let outer = keepsLast ? Array(outShape.dropLast()) : outShape
        let outerStrides = keepsLast ? Array(strides.dropLast()) : strides
        a.withData { pa in out.withMutableData { po in
            guard let src0 = pa.baseAddress, let dst0 = po.baseAddress else { return }
            var idx = [Int](repeating: 0, count: outer.count)
            var src = 0
            for o in stride(from: 0, to: po.count, by: run) {
                if run == 1 { dst0[o] = src0[src] } else { (dst0 + o).update(from: src0 + src, count: run) }
                var d = outer.count - 1
                while d >= 0 {
                    idx[d] += 1
                    src += outerStrides[d]
                    if idx[d] < outer[d] { break }
                    src -= outerStrides[d] * outer[d]
                    idx[d] = 0
                    d -= 1
                }
            }
        } }
        return out
    }

    /// Softmax over the last axis, max-subtracted: e^(x − max) / Σ, as PyTorch computes it, with one vectorised
    /// exponential per element (C, CSysShims); `softmaxReference` is the Float64 definition.
    public static func softmax(_ a: Tensor) -> Tensor {
        let c = a.shape.last ?? 1
        var y = Tensor(uninitialized: a.shape)
        guard a.count > 0 else { return y }
        a.withData { pa in y.withMutableData { py in csys_softmax_rows(pa.baseAddress, py.baseAddress, a.count / c, c) } }
        return y
    }

    /// Reference for `softmax`, in Float64.
    public static func softmaxReference(_ a: Tensor) -> Tensor {
        let c = a.shape.last ?? 1
        let x = a.scalars
        var out = [Float](repeating: 0, count: x.count)
        for base in stride(from: 0, to: x.count, by: c) {
            let m = x[base..<base + c].max() ?? 0
            let e = (0..<c).map { Foundation_exp(Double(x[base + $0] - m)) }
            let s = e.reduce(0, +)
            for j in 0..<c { out[base + j] = Float(e[j] / s) }
        }
        return Tensor(shape: a.shape, out)
    }

    /// Layer normalisation over the last axis: (x − mean) / √(var + ε) · γ + β, with the biased variance (as PyTorch).
    /// Returns y and, per row, the mean and 1/σ for the backward pass.
    public static func layerNorm(_ x: Tensor, _ gamma: Tensor, _ beta: Tensor, epsilon: Float) -> (Tensor, [Float], [Float]) {
        let d = x.shape.last ?? 1
        precondition(gamma.shape == [d] && beta.shape == [d], "layerNorm: γ \(gamma.shape), β \(beta.shape) for width \(d)")
        let rows = x.count / max(1, d)
        var y = Tensor(uninitialized: x.shape)
        var means = [Float](repeating: 0, count: rows), inv = [Float](repeating: 0, count: rows)
        x.withData { px in gamma.withData { pg in beta.withData { pb in y.withMutableData { py in
            for r in 0..<rows {
                let base = r * d
                var mean: Float = 0
                for j in 0..<d { mean += px[base + j] }
                mean /= Float(d)
                var v: Float = 0
                for j in 0..<d { let c = px[base + j] - mean; v += c * c }
                let s = 1 / (v / Float(d) + epsilon).squareRoot()
                means[r] = mean
                inv[r] = s
                for j in 0..<d { py[base + j] = (px[base + j] - mean) * s * pg[j] + pb[j] }
            }
        } } } }
        return (y, means, inv)
    }

    /// Reference for `layerNorm`, in Float64, two-pass.
    public static func layerNormReference(_ x: Tensor, _ gamma: Tensor, _ beta: Tensor, epsilon: Float) -> Tensor {
        let d = x.shape.last ?? 1
        let X = x.scalars, G = gamma.scalars, B = beta.scalars
        var out = [Float](repeating: 0, count: X.count)
        for base in stride(from: 0, to: X.count, by: d) {
            let row = X[base..<(base + d)].map(Double.init)
            let mean = row.reduce(0, +) / Double(d)
            let v = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(d)
            for j in 0..<d { out[base + j] = Float((row[j] - mean) / (v + Double(epsilon)).squareRoot() * Double(G[j]) + Double(B[j])) }
        }
        return Tensor(shape: x.shape, out)
    }

    /// Rows of `table` (V, D) at `ids` → (ids.count, D). Ids outside 0..<V are a programming error (callers check).
    public static func gather(_ table: Tensor, _ ids: [Int32]) -> Tensor {
        let v = table.shape[0], d = table.shape[1]
        var out = Tensor(uninitialized: [ids.count, d])
        table.withData { pt in out.withMutableData { po in
            for (i, id) in ids.enumerated() {
                precondition(id >= 0 && Int(id) < v, "embedding id \(id) outside 0..<\(v)")
                (po.baseAddress! + i * d).update(from: pt.baseAddress! + Int(id) * d, count: d)
            }
        } }
        return out
    }
}

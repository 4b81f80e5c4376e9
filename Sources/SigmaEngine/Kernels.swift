import COpenBLAS
import CSysShims
import Glibc

/// Compute kernels. Each fast kernel has a simple reference beside it (`…Reference`); tests check one against the
/// other. Shapes are in the doc comments.
public enum Kernels {
    // MARK: matmul

    /// a (M, K) · b (K, N) → (M, N); `transA`/`transB` read a as (K, M) / b as (N, K). Fast: `cblas_sgemm`.
    /// With `into`, the product is written there (m·n floats, caller-owned) and the result reads it in place.
    public static func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false,
                              into external: UnsafeMutableBufferPointer<Float>? = nil) -> Tensor {
        matmul(a, b, transA: transA, transB: transB, into: external, choosing: true)
    }

    /// `matmul`, with `choosing: false` only for the kernel choice's own self-check (which runs inside it).
    static func matmul(_ a: Tensor, _ b: Tensor, transA: Bool, transB: Bool, into external: UnsafeMutableBufferPointer<Float>?,
                       choosing: Bool) -> Tensor {
        let (m, k, n) = matmulDims(a, b, transA, transB)
        func gemm(_ pc: UnsafeMutableBufferPointer<Float>) {
            if k == 0 { pc.update(repeating: 0); return }
            a.withData { pa in
                b.withData { pb in
                    BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, pa.baseAddress, lda: a.shape[1], pb.baseAddress,
                               ldb: b.shape[1], beta: 0, pc.baseAddress, ldc: n, choosing: choosing)
                }
            }
        }
        if let external, let base = external.baseAddress {
            precondition(external.count == m * n, "matmul into \(external.count) floats for a (\(m), \(n)) product")
            gemm(external)
            return Tensor(borrowing: base, shape: [m, n], owner: Tensor.externalMemory)
        }
        if m == 0 || n == 0 || k == 0 { return Tensor(zeros: [m, n]) }
        var out = Tensor(uninitialized: [m, n])
        out.withMutableData { gemm($0) }
        return out
    }

    /// Where the kernel set this process computes with rounds alike (`BLASTiling`), read after the process's kernel
    /// choice (not the set OpenBLAS loaded before Sigma's switch): the rows per GEMM call of a row-stable product — a
    /// kernel may round a row by where it sits in its tile; every call of exactly that many rows computes each row the
    /// same way at every position: 32 plain on the AVX-512 sets, 16 transposed on Haswell and Zen — and where split
    /// products may be cut.
    public static var tiling: BLASTiling.Measured {
        _ = BLASKernels.startup
        return BLASTiling.current
    }

    /// `linear` with every row's outputs the same bits whatever other rows share its batch (`tiling`;
    /// docs/architecture.md, "Row-stable inference").
    public static func linearRowStable(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        let t = tiling
        return linear(x, w, b, rowBlock: t.stableRows, transposed: t.stableTransposed)
    }

    /// `linear` with every row's outputs independent of the other rows: the rows go through GEMM `rowBlock` at a
    /// time, the last block padded with zero rows (docs/architecture.md, "Row-stable inference"); `transposed`: each
    /// block as the columns of W · blockᵀ (n × rowBlock), then turned back.
    public static func linear(_ x: Tensor, _ w: Tensor, _ b: Tensor?, rowBlock: Int, transposed: Bool = false) -> Tensor {
        let (m, k, n) = matmulDims(x, w, false, true)
        if b != nil { precondition(b!.shape == [n], "linear: bias \(b!.shape) for \(n) outputs") }
        var out = Tensor(uninitialized: [m, n])
        if m == 0 || n == 0 { return Tensor(zeros: [m, n]) }
        let block = UnsafeMutablePointer<Float>.allocate(capacity: rowBlock * max(k, 1))
        let result = UnsafeMutablePointer<Float>.allocate(capacity: rowBlock * n)
        defer { block.deallocate(); result.deallocate() }
        let bias = b?.scalars
        x.withData { px in w.withData { pw in out.withMutableData { po in
            for start in stride(from: 0, to: m, by: rowBlock) {
                let rows = min(rowBlock, m - start)
                block.update(from: px.baseAddress! + start * k, count: rows * k)
                if rows < rowBlock { (block + rows * k).update(repeating: 0, count: (rowBlock - rows) * k) }
                if transposed {
                    // (result: n × rowBlock, each output's bias along its row)
                    for o in 0..<n { (result + o * rowBlock).update(repeating: bias?[o] ?? 0, count: rowBlock) }
                    if k > 0 {
                        BLAS.sgemm(transA: false, transB: true, m: n, n: rowBlock, k: k, pw.baseAddress, lda: k, block, ldb: k, beta: 1, result, ldc: rowBlock)
                    }
                    for r in 0..<rows {
                        let row = po.baseAddress! + (start + r) * n
                        for o in 0..<n { row[o] = result[o * rowBlock + r] }
                    }
                    continue
                }
                for r in 0..<rowBlock {
                    if let bias { (result + r * n).update(from: bias, count: n) } else { (result + r * n).update(repeating: 0, count: n) }
                }
                if k > 0 {
                    BLAS.sgemm(transA: false, transB: true, m: rowBlock, n: n, k: k, block, lda: k, pw.baseAddress, ldb: k, beta: 1, result, ldc: n)
                }
                (po.baseAddress! + start * n).update(from: result, count: rows * n)
            }
        } } }
        return out
    }

    /// x (N, in) · w (out, in)ᵀ + b (out) → (N, out): the bias rows are the GEMM's initial C (beta 1).
    public static func linear(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        guard let b else { return matmul(x, w, transB: true) }
        let (m, k, n) = matmulDims(x, w, false, true)
        precondition(b.shape == [n], "linear: bias \(b.shape) for \(n) outputs")
        var out = Tensor(uninitialized: [m, n])
        x.withData { px in w.withData { pw in b.withData { pb in out.withMutableData { po in
            for r in 0..<m { (po.baseAddress! + r * n).update(from: pb.baseAddress!, count: n) }
            if k > 0 {
                BLAS.sgemm(transA: false, transB: true, m: m, n: n, k: k, px.baseAddress, lda: k, pw.baseAddress, ldb: k, beta: 1,
                           po.baseAddress, ldc: n)
            }
        } } } }
        return out
    }

    /// Reference for `matmul`: the triple loop, accumulating in Float64.
    public static func matmulReference(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
        let (m, k, n) = matmulDims(a, b, transA, transB)
        let A = a.scalars, B = b.scalars
        var out = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = transA ? A[p * m + i] : A[i * k + p]
                    let y = transB ? B[j * k + p] : B[p * n + j]
                    s += Double(x) * Double(y)
                }
                out[i * n + j] = Float(s)
            }
        }
        return Tensor(shape: [m, n], out)
    }

    static func matmulDims(_ a: Tensor, _ b: Tensor, _ ta: Bool, _ tb: Bool) -> (Int, Int, Int) {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs 2-D tensors, got \(a.shape) and \(b.shape)")
        let m = ta ? a.shape[1] : a.shape[0], k = ta ? a.shape[0] : a.shape[1]
        let k2 = tb ? b.shape[1] : b.shape[0], n = tb ? b.shape[0] : b.shape[1]
        precondition(k == k2, "matmul: inner dimensions differ: \(a.shape)\(ta ? "ᵀ" : "") · \(b.shape)\(tb ? "ᵀ" : "")")
        return (m, k, n)
    }

    // MARK: broadcasting

    /// NumPy broadcasting of two shapes.
    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let x = i < r - a.count ? 1 : a[i - (r - a.count)]
            let y = i < r - b.count ? 1 : b[i - (r - b.count)]
            precondition(x == y || x == 1 || y == 1, "shapes \(a) and \(b) do not broadcast")
            out[i] = x == 1 ? y : x   // (an axis of 0 against 1 stays 0: an empty batch plus a bias is empty)
        }
        return out
    }

    /// Element strides of `shape` inside `out` (0 where broadcast).
    static func broadcastStrides(_ shape: [Int], in out: [Int]) -> [Int] {
        let pad = out.count - shape.count
        var strides = [Int](repeating: 0, count: out.count)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i + pad] = shape[i] == 1 ? 0 : s
            s *= shape[i]
        }
        return strides
    }

    public enum Binary { case add, sub, mul, div }

    @inline(__always)
    static func apply(_ op: Binary, _ x: Float, _ y: Float) -> Float {
        switch op {
        case .add: x + y
        case .sub: x - y
        case .mul: x * y
        case .div: x / y
        }
    }

    /// Elementwise `a op b` with broadcasting. Fast paths: equal shapes, and `b` broadcast along leading dims
    /// (a bias (N) added to (M, N)).
    public static func binary(_ op: Binary, _ a: Tensor, _ b: Tensor) -> Tensor {
        if a.shape == b.shape {
            var out = Tensor(uninitialized: a.shape)
            a.withData { pa in b.withData { pb in out.withMutableData { po in
                switch op {
                case .add: for i in 0..<po.count { po[i] = pa[i] + pb[i] }
                case .sub: for i in 0..<po.count { po[i] = pa[i] - pb[i] }
                case .mul: for i in 0..<po.count { po[i] = pa[i] * pb[i] }
                case .div: for i in 0..<po.count { po[i] = pa[i] / pb[i] }
                }
            } } }
            return out
        }
        let shape = broadcastShape(a.shape, b.shape)
        if shape == a.shape, b.count > 0, a.count % b.count == 0, Array(a.shape.suffix(b.rank)) == b.shape {
            var out = Tensor(uninitialized: shape)
            let n = b.count
            a.withData { pa in b.withData { pb in out.withMutableData { po in
                var base = 0
                while base < po.count {
                    switch op {
                    case .add: for j in 0..<n { po[base + j] = pa[base + j] + pb[j] }
                    case .sub: for j in 0..<n { po[base + j] = pa[base + j] - pb[j] }
                    case .mul: for j in 0..<n { po[base + j] = pa[base + j] * pb[j] }
                    case .div: for j in 0..<n { po[base + j] = pa[base + j] / pb[j] }
                    }
                    base += n
                }
            } } }
            return out
        }
        // b broadcast along one axis of a (e.g. a mask (X, 1, T) over scores (X, T, T)).
        if shape == a.shape, b.rank == a.rank {
            let axes = (0..<a.rank).filter { b.shape[$0] != a.shape[$0] }
            if axes.count == 1, b.shape[axes[0]] == 1 {
                let k = axes[0]
                let outer = a.shape[..<k].reduce(1, *), mid = a.shape[k], inner = a.shape[(k + 1)...].reduce(1, *)
                var out = Tensor(uninitialized: shape)
                a.withData { pa in b.withData { pb in out.withMutableData { po in
                    for o in 0..<outer {
                        for m in 0..<mid {
                            let base = (o * mid + m) * inner, bb = o * inner
                            for j in 0..<inner { po[base + j] = apply(op, pa[base + j], pb[bb + j]) }
                        }
                    }
                } } }
                return out
            }
        }
        return binaryReference(op, a, b)
    }

    /// Reference for `binary`: general broadcasting by multi-index.
    public static func binaryReference(_ op: Binary, _ a: Tensor, _ b: Tensor) -> Tensor {
        let shape = broadcastShape(a.shape, b.shape)
        let sa = broadcastStrides(a.shape, in: shape), sb = broadcastStrides(b.shape, in: shape)
        let A = a.scalars, B = b.scalars
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        var idx = [Int](repeating: 0, count: shape.count)
        for o in 0..<out.count {
            var ia = 0, ib = 0
            for d in 0..<shape.count { ia += idx[d] * sa[d]; ib += idx[d] * sb[d] }
            out[o] = apply(op, A[ia], B[ib])
            var d = shape.count - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < shape[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return Tensor(shape: shape, out)
    }

    /// Sums `t` down to `shape` (undoing a broadcast): the gradient rule of every broadcasting op.
    public static func sumTo(_ t: Tensor, shape: [Int]) -> Tensor {
        if t.shape == shape { return t }
        let target = shape.reduce(1, *)
        // Fast path: `shape` is a suffix of t's shape (bias gradients): sum rows.
        if Array(t.shape.suffix(shape.count)) == shape || (shape.allSatisfy { $0 == 1 } && target == 1) {
            var out = Tensor(zeros: shape)
            t.withData { pt in out.withMutableData { po in
                guard let src = pt.baseAddress, let dst = po.baseAddress else { return }
                // Row after row into the sum, 8 lanes at a time (each lane adds its rows in the same order: the same
                // bits as one element at a time, which the compiler did not vectorize: the pointers might alias);
                // columns split over the engine's threads (each column's sum is the same whoever makes it).
                let (rs, rd, count) = (Unchecked(UnsafeRawPointer(src)), Unchecked(UnsafeMutableRawPointer(dst)), pt.count)
                splitOverThreads(total: target, threads: BLASInfo.threads, minimumPart: max(64, 65_536 / max(1, count / target))) { cols in
                    var base = 0
                    while base < count {
                        var j = cols.lowerBound
                        while j + 8 <= cols.upperBound {
                            let sum = rd.v.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                                + rs.v.loadUnaligned(fromByteOffset: (base + j) * 4, as: SIMD8<Float>.self)
                            rd.v.storeBytes(of: sum, toByteOffset: j * 4, as: SIMD8<Float>.self)
                            j += 8
                        }
                        while j < cols.upperBound {
                            rd.v.storeBytes(of: rd.v.load(fromByteOffset: j * 4, as: Float.self) + rs.v.load(fromByteOffset: (base + j) * 4, as: Float.self),
                                            toByteOffset: j * 4, as: Float.self)
                            j += 1
                        }
                        base += target
                    }
                }
            } }
            return out
        }
        let st = broadcastStrides(shape, in: t.shape)
        var out = [Float](repeating: 0, count: target)
        let T = t.scalars
        var idx = [Int](repeating: 0, count: t.rank)
        for o in 0..<T.count {
            var j = 0
            for d in 0..<t.rank { j += idx[d] * st[d] }
            out[j] += T[o]
            var d = t.rank - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < t.shape[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return Tensor(shape: shape, out)
    }

    // MARK: unary

    public enum Unary: Sendable { case relu, tanh, gelu, exp, log, neg, sqrt }

    @inline(__always)
    static func apply(_ op: Unary, _ x: Float) -> Float {
        switch op {
        case .relu: x > 0 ? x : 0
        case .tanh: tanhf(x)
        case .gelu: 0.5 * x * (1 + fastErf(x * 0.70710678118654752))
        case .exp: expf(x)
        case .log: logf(x)
        case .neg: -x
        case .sqrt: x.squareRoot()
        }
    }

    public static func unary(_ op: Unary, _ a: Tensor) -> Tensor {
        var out = Tensor(uninitialized: a.shape)
        a.withData { pa in out.withMutableData { po in
            if op == .relu { reluSelect(pa, pa, po) } else { unary(op, pa, into: po) }
        } }
        return out
    }

    /// out[i] = op(x[i]) on the calling thread (`x` may be `out`'s memory): the vector forms of ReLU and GELU, the
    /// scalar rule for the rest.
    @inline(__always)
    static func unary(_ op: Unary, _ x: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>) {
        switch op {
        case .relu: reluSelectRange(x, x, out)
        case .gelu: csys_gelu(x.baseAddress, out.baseAddress, out.count)
        default: for i in 0..<out.count { out[i] = apply(op, x[i]) }
        }
    }

    /// out[i] = x[i] > 0 ? v[i] : 0 (NaN → 0), 16 lanes at a time without branches: ReLU is v = x, its backward
    /// v = the upstream gradient. (A branch per element mispredicts half the time on real activations.) Split over
    /// the engine's threads.
    static func reluSelect(_ x: UnsafeBufferPointer<Float>, _ v: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>) {
        let (x, v, out) = (Unchecked(x), Unchecked(v), Unchecked(out))
        splitOverThreads(total: out.v.count, threads: BLASInfo.threads) { r in
            reluSelectRange(UnsafeBufferPointer(rebasing: x.v[r]), UnsafeBufferPointer(rebasing: v.v[r]), UnsafeMutableBufferPointer(rebasing: out.v[r]))
        }
    }

    @inline(__always)
    static func reluSelectRange(_ x: UnsafeBufferPointer<Float>, _ v: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>) {
        let n = out.count
        guard n > 0, let px = x.baseAddress, let pv = v.baseAddress, let po = out.baseAddress else { return }
        let rx = UnsafeRawPointer(px), rv = UnsafeRawPointer(pv), ro = UnsafeMutableRawPointer(po)
        var i = 0
        while i + 16 <= n {
            let xs = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            let vs = rv.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            ro.storeBytes(of: SIMD16<Float>(repeating: 0).replacing(with: vs, where: xs .> 0), toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { po[i] = px[i] > 0 ? pv[i] : 0; i += 1 }
    }

    /// d op(x) / dx, elementwise, times `g`.
    public static func unaryBackward(_ op: Unary, x: Tensor, y: Tensor, g: Tensor) -> Tensor {
        var out = Tensor(uninitialized: x.shape)
        x.withData { px in y.withData { py in g.withData { pg in out.withMutableData { po in
            if op == .relu {
                reluSelect(px, pg, po)
                return
            }
            for i in 0..<po.count {
                let d: Float
                switch op {
                case .relu: d = px[i] > 0 ? 1 : 0
                case .tanh: d = 1 - py[i] * py[i]
                case .gelu:
                    let x = px[i]
                    d = 0.5 * (1 + fastErf(x * 0.70710678118654752)) + x * 0.39894228040143268 * expf(-0.5 * x * x)
                case .exp: d = py[i]
                case .log: d = 1 / px[i]
                case .neg: d = -1
                case .sqrt: d = 0.5 / py[i]
                }
                po[i] = d * pg[i]
            }
        } } } }
        return out
    }

    // MARK: reductions and softmax

    public static func sum(_ a: Tensor) -> Tensor {
        var s = 0.0
        a.withData { for v in $0 { s += Double(v) } }
        return .scalar(Float(s))
    }

    /// Log-softmax over the last axis: x (…, C) → (…, C), computed stably (max subtracted).
    public static func logSoftmax(_ a: Tensor) -> Tensor {
        let c = a.shape.last ?? 1
        var out = Tensor(zeros: a.shape)
        a.withData { pa in out.withMutableData { po in
            var base = 0
            while base < pa.count {
                var m = -Float.infinity
                for j in 0..<c { m = max(m, pa[base + j]) }
                var s: Float = 0
                for j in 0..<c { s += expf(pa[base + j] - m) }
                let lse = m + logf(s)
                for j in 0..<c { po[base + j] = pa[base + j] - lse }
                base += c
            }
        } }
        return out
    }

    /// Reference for `logSoftmax` from primitives, in Float64: x − log Σ exp x.
    public static func logSoftmaxReference(_ a: Tensor) -> Tensor {
        let c = a.shape.last ?? 1
        let x = a.scalars
        var out = [Float](repeating: 0, count: x.count)
        for base in stride(from: 0, to: x.count, by: c) {
            let s = (0..<c).reduce(0.0) { $0 + Foundation_exp(Double(x[base + $1])) }
            for j in 0..<c { out[base + j] = Float(Double(x[base + j]) - Foundation_log(s)) }
        }
        return Tensor(shape: a.shape, out)
    }
}

/// erf(x) to ≤ 1e-6 absolute (Abramowitz & Stegun 7.1.26, 1.5e-7, plus Float32 rounding), branch-free so loops vectorise better
/// than libm's `erff`. Checked against `erff` in the tests.
@inline(__always)
public func fastErf(_ x: Float) -> Float {
    let a = abs(x)
    let t = 1 / (1 + 0.3275911 * a)
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    let r = 1 - poly * expf(-a * a)
    return x < 0 ? -r : r
}

@inline(__always) func Foundation_exp(_ x: Double) -> Double { Glibc.exp(x) }
@inline(__always) func Foundation_log(_ x: Double) -> Double { Glibc.log(x) }

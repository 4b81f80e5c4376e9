import COpenBLAS

/// 2-D convolution and pooling on NCHW tensors.
public enum ConvKernels {
    public struct Geometry: Sendable, Equatable {
        public let n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int, stride: Int, padding: Int
        public var ho: Int { (h + 2 * padding - kh) / stride + 1 }
        public var wo: Int { (w + 2 * padding - kw) / stride + 1 }
        public var patch: Int { c * kh * kw }
    }

    public static func geometry(_ x: Tensor, _ w: Tensor, stride: Int, padding: Int) -> Geometry {
        precondition(x.rank == 4 && w.rank == 4, "conv2d needs x (N, C, H, W) and w (O, C, kh, kw), got \(x.shape), \(w.shape)")
        precondition(x.shape[1] == w.shape[1], "conv2d: x has \(x.shape[1]) channels, w expects \(w.shape[1])")
        let g = Geometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3], o: w.shape[0], kh: w.shape[2], kw: w.shape[3],
                         stride: stride, padding: padding)
        precondition(stride >= 1 && g.ho >= 1 && g.wo >= 1, "conv2d: kernel \(w.shape) does not fit \(x.shape) with padding \(padding)")
        return g
    }

    /// The output columns 0..<wo whose input column ox·stride − padding + j lies inside 0..<w: lo..<hi.
    @inline(__always)
    static func validColumns(_ g: Geometry, wo: Int, j: Int) -> (lo: Int, hi: Int) {
        let lo = g.padding - j <= 0 ? 0 : (g.padding - j + g.stride - 1) / g.stride
        let top = g.w - 1 + g.padding - j
        let hi = top < 0 ? 0 : min(wo, top / g.stride + 1)
        return (min(lo, wo), max(min(lo, wo), hi))
    }

    /// One image's patches: x_n (C, H, W) → cols (C·kh·kw, Ho·Wo): per kernel offset and output row, the inside
    /// run is one copy (stride 1) and the padding zeros around it.
    static func im2col(_ x: UnsafePointer<Float>, _ g: Geometry, _ cols: UnsafeMutablePointer<Float>) {
        let ho = g.ho, wo = g.wo, hw = ho * wo, s = g.stride
        for c in 0..<g.c {
            for i in 0..<g.kh {
                for j in 0..<g.kw {
                    let row = cols + ((c * g.kh + i) * g.kw + j) * hw
                    let (lo, hi) = validColumns(g, wo: wo, j: j)
                    for oy in 0..<ho {
                        let y = oy * s - g.padding + i
                        let out = row + oy * wo
                        guard y >= 0 && y < g.h && hi > lo else { out.update(repeating: 0, count: wo); continue }
                        if lo > 0 { out.update(repeating: 0, count: lo) }
                        let src = x + (c * g.h + y) * g.w + (lo * s - g.padding + j)
                        if s == 1 { (out + lo).update(from: src, count: hi - lo) } else { for k in 0..<(hi - lo) { out[lo + k] = src[k * s] } }
                        if hi < wo { (out + hi).update(repeating: 0, count: wo - hi) }
                    }
                }
            }
        }
    }

    /// Adjoint of `im2col`: accumulates cols back into dx_n.
    static func col2im(_ cols: UnsafePointer<Float>, _ g: Geometry, _ dx: UnsafeMutablePointer<Float>) {
        let ho = g.ho, wo = g.wo, hw = ho * wo, s = g.stride
        for c in 0..<g.c {
            for i in 0..<g.kh {
                for j in 0..<g.kw {
                    let row = cols + ((c * g.kh + i) * g.kw + j) * hw
                    let (lo, hi) = validColumns(g, wo: wo, j: j)
                    for oy in 0..<ho {
                        let y = oy * s - g.padding + i
                        guard y >= 0 && y < g.h else { continue }
                        let src = row + oy * wo + lo
                        let dst = dx + (c * g.h + y) * g.w + (lo * s - g.padding + j)
                        if s == 1 {
                            for k in 0..<(hi - lo) { dst[k] += src[k] }
                        } else {
                            for k in 0..<(hi - lo) { dst[k * s] += src[k] }
                        }
                    }
                }
            }
        }
    }

    /// y (N, O, Ho, Wo) = conv(x (N, C, H, W), w (O, C, kh, kw)) + b (O): im2col + `cblas_sgemm` per image.
    public static func conv2d(_ x: Tensor, _ w: Tensor, _ b: Tensor?, stride: Int = 1, padding: Int = 0) -> Tensor {
        let g = geometry(x, w, stride: stride, padding: padding)
        let hw = g.ho * g.wo
        var y = Tensor(uninitialized: [g.n, g.o, g.ho, g.wo])   // (every element written: the bias, or the product with beta 0)
        let cols = UnsafeMutablePointer<Float>.allocate(capacity: g.patch * hw)
        defer { cols.deallocate() }
        x.withData { px in w.withData { pw in y.withMutableData { py in
            for n in 0..<g.n {
                im2col(px.baseAddress! + n * g.c * g.h * g.w, g, cols)
                let out = py.baseAddress! + n * g.o * hw
                if let b {
                    b.withData { pb in for o in 0..<g.o { (out + o * hw).update(repeating: pb[o], count: hw) } }
                }
                BLAS.sgemm(transA: false, transB: false, m: g.o, n: hw, k: g.patch, pw.baseAddress, lda: g.patch, cols, ldb: hw,
                           beta: b == nil ? 0 : 1, out, ldc: hw)
            }
        } } }
        return y
    }

    /// Gradients of `conv2d`: (dx, dw, db) from dy.
    /// dx is computed only when `inputGradient` (a network's input needs none); it is nil otherwise.
    public static func conv2dBackward(_ x: Tensor, _ w: Tensor, _ dy: Tensor, stride: Int, padding: Int, hasBias: Bool,
                                      inputGradient: Bool = true) -> (Tensor?, Tensor, Tensor?) {
        let g = geometry(x, w, stride: stride, padding: padding)
        let hw = g.ho * g.wo
        var dx = Tensor(zeros: inputGradient ? x.shape : [0]), dw = Tensor(zeros: w.shape)
        var db: Tensor? = hasBias ? Tensor(zeros: [g.o]) : nil
        let cols = UnsafeMutablePointer<Float>.allocate(capacity: g.patch * hw)
        let dcols = UnsafeMutablePointer<Float>.allocate(capacity: g.patch * hw)
        defer { cols.deallocate(); dcols.deallocate() }
        x.withData { px in w.withData { pw in dy.withData { pdy in dx.withMutableData { pdx in dw.withMutableData { pdw in
            for n in 0..<g.n {
                let dyn = pdy.baseAddress! + n * g.o * hw
                im2col(px.baseAddress! + n * g.c * g.h * g.w, g, cols)
                // dW += dy_n (O, HW) · cols_nᵀ (HW, patch)
                BLAS.sgemm(transA: false, transB: true, m: g.o, n: g.patch, k: hw, dyn, lda: hw, cols, ldb: hw, beta: 1,
                           pdw.baseAddress, ldc: g.patch)
                guard inputGradient else { continue }
                // dcols = Wᵀ (patch, O) · dy_n (O, HW)
                BLAS.sgemm(transA: true, transB: false, m: g.patch, n: hw, k: g.o, pw.baseAddress, lda: g.patch, dyn, ldb: hw, beta: 0,
                           dcols, ldc: hw)
                col2im(dcols, g, pdx.baseAddress! + n * g.c * g.h * g.w)
            }
        } } } } }
        if hasBias {
            db!.withMutableData { pdb in dy.withData { pdy in
                // (each channel's sum in a register: a store to pdb[o] per element made the loop wait on memory)
                for n in 0..<g.n {
                    for o in 0..<g.o {
                        let row = pdy.baseAddress! + (n * g.o + o) * hw
                        var acc: Float = 0
                        for k in 0..<hw { acc += row[k] }
                        pdb[o] += acc
                    }
                }
            } }
        }
        return (inputGradient ? dx : nil, dw, db)
    }

    /// Reference for `conv2d`: the direct loop nest, accumulating in Float64.
    public static func conv2dReference(_ x: Tensor, _ w: Tensor, _ b: Tensor?, stride: Int = 1, padding: Int = 0) -> Tensor {
        let g = geometry(x, w, stride: stride, padding: padding)
        let X = x.scalars, W = w.scalars, B = b?.scalars
        var y = [Float](repeating: 0, count: g.n * g.o * g.ho * g.wo)
        for n in 0..<g.n { for o in 0..<g.o { for oy in 0..<g.ho { for ox in 0..<g.wo {
            var s = Double(B?[o] ?? 0)
            for c in 0..<g.c { for i in 0..<g.kh { for j in 0..<g.kw {
                let yy = oy * g.stride - g.padding + i, xx = ox * g.stride - g.padding + j
                if yy >= 0 && yy < g.h && xx >= 0 && xx < g.w {
                    s += Double(X[((n * g.c + c) * g.h + yy) * g.w + xx]) * Double(W[((o * g.c + c) * g.kh + i) * g.kw + j])
                }
            } } }
            y[((n * g.o + o) * g.ho + oy) * g.wo + ox] = Float(s)
        } } } }
        return Tensor(shape: [g.n, g.o, g.ho, g.wo], y)
    }

    // MARK: pooling

    public enum Pool: Sendable { case max, average }

    /// x (N, C, H, W) → (N, C, Ho, Wo) with a k×k window and the given stride (no padding); for max pooling also
    /// the flat input index each output came from (for backward).
    public static func pool2d(_ kind: Pool, _ x: Tensor, kernel k: Int, stride s: Int) -> (Tensor, [Int32]) {
        precondition(x.rank == 4 && k >= 1 && s >= 1 && x.shape[2] >= k && x.shape[3] >= k, "pool2d: window \(k) does not fit \(x.shape)")
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let ho = (h - k) / s + 1, wo = (w - k) / s + 1
        var y = Tensor(zeros: [n, c, ho, wo])
        var argmax = [Int32](repeating: 0, count: kind == .max ? y.count : 0)
        if kind == .max && k == 2 && s == 2 {
            // (the common 2×2/2 max-pool without the generic window loops: the same comparisons in the same order)
            x.withData { px in y.withMutableData { py in
                var o = 0
                for plane in 0..<(n * c) {
                    let base = plane * h * w
                    for oy in 0..<ho {
                        let r0 = base + 2 * oy * w, r1 = r0 + w
                        for ox in 0..<wo {
                            var best = -Float.infinity, bestAt = 0
                            let a = r0 + 2 * ox, b = r1 + 2 * ox
                            if px[a] > best { best = px[a]; bestAt = a }
                            if px[a + 1] > best { best = px[a + 1]; bestAt = a + 1 }
                            if px[b] > best { best = px[b]; bestAt = b }
                            if px[b + 1] > best { best = px[b + 1]; bestAt = b + 1 }
                            py[o] = best
                            argmax[o] = Int32(bestAt)
                            o += 1
                        }
                    }
                }
            } }
            return (y, argmax)
        }
        x.withData { px in y.withMutableData { py in
            var o = 0
            for plane in 0..<(n * c) {
                let base = plane * h * w
                for oy in 0..<ho { for ox in 0..<wo {
                    var best = -Float.infinity, bestAt = 0
                    var sum: Float = 0
                    for i in 0..<k { for j in 0..<k {
                        let at = base + (oy * s + i) * w + ox * s + j
                        let v = px[at]
                        sum += v
                        if v > best { best = v; bestAt = at }
                    } }
                    if kind == .max { py[o] = best; argmax[o] = Int32(bestAt) } else { py[o] = sum / Float(k * k) }
                    o += 1
                } }
            }
        } }
        return (y, argmax)
    }

    public static func pool2dBackward(_ kind: Pool, inputShape: [Int], dy: Tensor, argmax: [Int32], kernel k: Int, stride s: Int) -> Tensor {
        var dx = Tensor(zeros: inputShape)
        let h = inputShape[2], w = inputShape[3], ho = dy.shape[2], wo = dy.shape[3]
        dy.withData { pdy in dx.withMutableData { pdx in
            if kind == .max {
                for o in 0..<pdy.count { pdx[Int(argmax[o])] += pdy[o] }
            } else {
                let scale = 1 / Float(k * k)
                var o = 0
                for plane in 0..<(inputShape[0] * inputShape[1]) {
                    for oy in 0..<ho { for ox in 0..<wo {
                        for i in 0..<k { for j in 0..<k { pdx[plane * h * w + (oy * s + i) * w + ox * s + j] += pdy[o] * scale } }
                        o += 1
                    } }
                }
            }
        } }
        return dx
    }
}

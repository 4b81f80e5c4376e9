import SigmaEngine
import Testing

/// Checks every input's backward gradient against central finite differences of the same Float32 forward.
/// Tolerance: |analytic − numeric| ≤ atol + rtol·|numeric|, with atol 2e-3, rtol 2e-2 (Float32 differences with
/// step 1e-2 on O(1) values carry ~1e-3 of rounding noise).
func checkGradients(_ inputs: [Tensor], step: Float = 1e-2, atol: Float = 2e-3, rtol: Float = 2e-2,
                    sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Var]) -> Var) {
    let g = Graph()
    let params = inputs.enumerated().map { Parameter("x\($0.offset)", $0.element) }
    let vars = params.map { g.param($0) }
    g.backward(from: f(vars))
    for (k, p) in params.enumerated() {
        let analytic = p.grad ?? Tensor(zeros: p.value.shape)
        for i in 0..<p.value.count {
            func loss(_ delta: Float) -> Double {
                var xs = inputs
                xs[k].withMutableData { $0[i] += delta }
                let h = Graph()
                return Double(f(xs.map { h.constant($0) }).value.item)
            }
            let numeric = Float((loss(step) - loss(-step)) / Double(2 * step))
            let a = analytic[i]
            #expect(abs(a - numeric) <= atol + rtol * abs(numeric),
                    "input \(k) element \(i): backward \(a) vs finite difference \(numeric)", sourceLocation: sourceLocation)
        }
    }
}

func random(_ shape: [Int], seed: UInt64, low: Float = -1, high: Float = 1) -> Tensor {
    var r = SeededRandom(seed: seed)
    return .uniform(shape, low: low, high: high, rng: &r)
}

/// Keeps values away from a kink (ReLU at 0) so finite differences are meaningful.
func awayFromZero(_ t: Tensor) -> Tensor {
    Tensor(shape: t.shape, t.scalars.map { abs($0) < 0.05 ? ($0 < 0 ? -0.2 : 0.2) : $0 })
}

@Suite struct GradientTests {
    /// Inputs (constants) get no gradient — backward skips e.g. the first layer's dx GEMM — and skipping it leaves
    /// every parameter's gradient bit for bit what it is when the input is differentiated too (a parameter).
    /// A parameter with a gradient buffer gets its gradient there, bit for bit what it gets without one: the
    /// linear weight's GEMM writes in place, other gradients (bias; a weight used twice) are copied in at the end.
    @Test func gradientBuffersReceiveTheSameGradientsInPlace() {
        let x = random([6, 5], seed: 41), w1 = random([4, 5], seed: 42), b1 = random([4], seed: 43), w2 = random([4, 4], seed: 44)
        func run(buffers: Bool) -> ([[UInt32]], [Bool]) {
            let ps = [Parameter("w1", w1), Parameter("b1", b1), Parameter("w2", w2)]
            let memory = UnsafeMutableBufferPointer<Float>.allocate(capacity: 20 + 4 + 16)
            memory.initialize(repeating: .nan)
            defer { memory.deallocate() }
            if buffers {
                ps[0].gradientBuffer = UnsafeMutableBufferPointer(rebasing: memory[0..<20])
                ps[1].gradientBuffer = UnsafeMutableBufferPointer(rebasing: memory[20..<24])
                ps[2].gradientBuffer = UnsafeMutableBufferPointer(rebasing: memory[24..<40])
            }
            let g = Graph()
            let w2v = g.param(ps[2])
            // w2 is used by two linear ops: its gradient is the sum of two contributions.
            let h = g.constant(x).linear(g.param(ps[0]), g.param(ps[1])).relu().linear(w2v, nil).linear(w2v, nil)
            g.backward(from: h.sum())
            let bits = ps.map { $0.grad!.scalars.map(\.bitPattern) }
            let inPlace = ps.map { p in p.gradientBuffer.map { p.grad!.isStored(at: $0.baseAddress) } ?? false }
            if buffers {
                #expect(Array(memory).map(\.bitPattern) == bits.flatMap { $0 }, "the buffers hold the gradients")
            }
            return (bits, inPlace)
        }
        let (plain, _) = run(buffers: false), (buffered, inPlace) = run(buffers: true)
        #expect(plain == buffered)
        #expect(inPlace == [true, true, true])

        // Gradients accumulated over two backward passes, and a layer fed into one graph twice (weight sharing):
        // with a buffer, the same sums as without.
        func twice(buffer: Bool, shared: Bool) -> [UInt32] {
            var r = SeededRandom(seed: 7)
            let layer = Linear(5, 4, name: "l", rng: &r)
            let memory = UnsafeMutableBufferPointer<Float>.allocate(capacity: 20)
            defer { memory.deallocate() }
            if buffer { layer.weight.gradientBuffer = memory }
            for k in 0..<2 {
                let g = Graph()
                let h = layer(g.constant(random([3, 5], seed: 50 + UInt64(k))))
                g.backward(from: (shared ? layer(g.constant(random([2, 5], seed: 60 + UInt64(k)))).sum() + h.sum() : h.sum()))
            }
            let bits = layer.weight.grad!.scalars.map(\.bitPattern)
            if buffer { #expect(Array(memory).map(\.bitPattern) == bits) }
            return bits
        }
        for shared in [false, true] { #expect(twice(buffer: false, shared: shared) == twice(buffer: true, shared: shared), "shared \(shared)") }
    }

    @Test func constantsGetNoGradientAndParametersTheSameOne() {
        let x = random([6, 5], seed: 31), w1 = random([4, 5], seed: 32), b1 = random([4], seed: 33)
        let w2 = random([3, 4], seed: 34), img = random([2, 1, 5, 5], seed: 35), k = random([2, 1, 3, 3], seed: 36)
        func grads(inputIsParameter: Bool) -> ([Tensor], Tensor?) {
            let g = Graph()
            let ps = [Parameter("w1", w1), Parameter("b1", b1), Parameter("w2", w2), Parameter("k", k)]
            let xp = Parameter("x", x), ip = Parameter("img", img)
            let xv = inputIsParameter ? g.param(xp) : g.constant(x), iv = inputIsParameter ? g.param(ip) : g.constant(img)
            let h = xv.linear(g.param(ps[0]), g.param(ps[1])).relu().matmul(g.param(ps[2]), transB: true)
            let c = iv.conv2d(g.param(ps[3]), nil, padding: 1)
            let all = g.backward(from: h.sum() + c.sum())
            return (ps.map { $0.grad! }, all[xv.id])
        }
        let (withInput, xGrad) = grads(inputIsParameter: true), (without, none) = grads(inputIsParameter: false)
        #expect(xGrad != nil)
        #expect(none == nil, "a constant input got a gradient")
        for (a, b) in zip(withInput, without) { #expect(a.scalars.map(\.bitPattern) == b.scalars.map(\.bitPattern)) }
    }

    @Test func binaryOpsWithBroadcasting() {
        let a = random([3, 4], seed: 1), b = random([4], seed: 2), c = random([3, 1], seed: 3)
        checkGradients([a, b]) { ($0[0] + $0[1]).sum() }
        checkGradients([a, c]) { ($0[0] - $0[1]).sum() }
        checkGradients([a, b]) { ($0[0] * $0[1]).sum() }
        checkGradients([a, random([3, 4], seed: 4, low: 0.5, high: 2)]) { ($0[0] / $0[1]).sum() }
        checkGradients([a, random([4], seed: 5, low: 0.5, high: 2)]) { ($0[0] / $0[1]).mean() }
    }

    @Test func matmulInAllFourLayouts() {
        let a = random([3, 5], seed: 6), b = random([5, 2], seed: 7)
        let at = random([5, 3], seed: 8), bt = random([2, 5], seed: 9)
        let w = random([3, 2], seed: 10)
        checkGradients([a, b, w]) { ($0[0].matmul($0[1]) * $0[2]).sum() }
        checkGradients([a, bt, w]) { ($0[0].matmul($0[1], transB: true) * $0[2]).sum() }
        checkGradients([at, b, w]) { ($0[0].matmul($0[1], transA: true) * $0[2]).sum() }
        checkGradients([at, bt, w]) { ($0[0].matmul($0[1], transA: true, transB: true) * $0[2]).sum() }
    }

    @Test func unaryOps() {
        let x = random([2, 6], seed: 11, low: -2, high: 2), w = random([2, 6], seed: 12)
        checkGradients([awayFromZero(x), w]) { ($0[0].relu() * $0[1]).sum() }
        checkGradients([x, w]) { ($0[0].tanh() * $0[1]).sum() }
        checkGradients([x, w]) { ($0[0].gelu() * $0[1]).sum() }
        checkGradients([x, w]) { ($0[0].exp() * $0[1]).sum() }
        checkGradients([random([2, 6], seed: 13, low: 0.5, high: 3), w]) { ($0[0].log() * $0[1]).sum() }
        checkGradients([x, w]) { ($0[0].unary(.neg) * $0[1]).sum() }
        checkGradients([random([2, 6], seed: 14, low: 0.5, high: 3), w]) { ($0[0].unary(.sqrt) * $0[1]).sum() }
    }

    @Test func reductionsReshapeScale() {
        let x = random([3, 4], seed: 15), w = random([4, 3], seed: 16)
        checkGradients([x]) { $0[0].mean() }
        checkGradients([x]) { $0[0].scaled(3).sum() }
        checkGradients([x, w]) { ($0[0].reshaped([4, 3]) * $0[1]).sum() }
    }

    @Test func logSoftmaxCrossEntropyMSE() {
        let logits = random([4, 5], seed: 17, low: -3, high: 3), w = random([4, 5], seed: 18)
        checkGradients([logits, w]) { ($0[0].logSoftmax() * $0[1]).sum() }
        checkGradients([logits]) { $0[0].crossEntropy([0, 4, 2, 2]) }
        checkGradients([logits, random([4, 5], seed: 19)]) { $0[0].mse($0[1]) }
    }

    @Test func gradientsAccumulateWhenAVarIsUsedTwice() {
        let x = random([3], seed: 20)
        checkGradients([x]) { ($0[0] * $0[0] + $0[0]).sum() }
    }
}

@Suite struct LinearTests {
    @Test func fusedLinearEqualsMatmulPlusBiasAndHasGradients() {
        let x = random([4, 6], seed: 40), w = random([3, 6], seed: 41), b = random([3], seed: 42)
        let fused = Kernels.linear(x, w, b)
        let ref = Kernels.binaryReference(.add, Kernels.matmulReference(x, w, transB: true), b)
        #expect(maxRelativeError(fused, ref) <= 1e-5)
        checkGradients([x, w, b, random([4, 3], seed: 43)]) { ($0[0].linear($0[1], $0[2]) * $0[3]).sum() }
        checkGradients([x, w, random([4, 3], seed: 44)]) { ($0[0].linear($0[1], nil) * $0[2]).sum() }
    }
}

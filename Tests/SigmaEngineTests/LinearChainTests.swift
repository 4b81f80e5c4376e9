@testable import SigmaEngine
import Testing

/// Linear layers with activations between them as one feature-major op (`Var.linearChain`: what `Sequential` makes of
/// each such run on a graph that records): the values and gradients of the same layers applied op by op, gradients
/// against finite differences, weight gradients straight into gradient buffers. (Bitwise the same on 1, 2 and 3
/// threads: `EngineThreadsTests`.)
@Suite struct LinearChainTests {
    /// 37 → 64 → 48 → 5 over 19 rows: relu, then tanh; the second layer without a bias.
    struct Net {
        let x = random([19, 37], seed: 71)
        let w1 = random([64, 37], seed: 72), b1 = random([64], seed: 73)
        let w2 = random([48, 64], seed: 74)
        let w3 = random([5, 48], seed: 75), b3 = random([5], seed: 76)
        var tensors: [Tensor] { [x, w1, b1, w2, w3, b3] }

        /// The loss and every input's gradient (x included), through the chain or op by op.
        func run(chain: Bool) -> (loss: Tensor, grads: [Tensor]) {
            let g = Graph()
            let ps = tensors.enumerated().map { Parameter("p\($0.offset)", $0.element) }
            let v = ps.map { g.param($0) }
            let y = chain
                ? v[0].linearChain([(v[1], v[2]), (v[3], nil), (v[4], v[5])], activations: [.relu, .tanh])
                : v[0].linear(v[1], v[2]).relu().linear(v[3], nil).tanh().linear(v[4], v[5])
            let loss = y.crossEntropy((0..<19).map { Int32($0 % 5) })
            g.backward(from: loss)
            return (loss.value, ps.map { $0.grad! })
        }
    }

    @Test func aChainGivesItsLayersValuesAndGradients() {
        let net = Net()
        let (chained, layered) = (net.run(chain: true), net.run(chain: false))
        #expect(abs(chained.loss.item - layered.loss.item) <= 1e-6)
        for (k, (a, b)) in zip(chained.grads, layered.grads).enumerated() {
            #expect(a.shape == b.shape, "input \(k)")
            // (rounding apart only: 6e-7 at most on this machine's kernel sets, gradients up to 0.63)
            #expect(maxAbsDiff(a, b) <= 1e-5, "input \(k): the chain's gradient differs from the layers' by \(maxAbsDiff(a, b))")
        }
    }

    @Test func chainGradientsMatchFiniteDifferences() {
        let x = random([5, 6], seed: 81), w1 = random([7, 6], seed: 82), b1 = random([7], seed: 83)
        let w2 = random([4, 7], seed: 84), b2 = random([4], seed: 85)
        checkGradients([x, w1, b1, w2, b2]) { v in
            (v[0].linearChain([(v[1], v[2]), (v[3], v[4])], activations: [.gelu]) * v[0].graph.constant(random([5, 4], seed: 86))).sum()
        }
    }

    /// Each run of two or more Linear layers with an activation between each two becomes one chain; a lone Linear, a
    /// trailing activation and other layers stay as they are; the result is the layers' own up to rounding.
    @Test func sequentialMakesAChainOfEachRunOfLinearLayers() {
        var rng = SeededRandom(seed: 3)
        let layers: [Layer] = [Linear(12, 16, rng: &rng), Activation(.relu), Linear(16, 16, rng: &rng), Activation(.tanh),
                               Linear(16, 8, rng: &rng), Activation(.relu), Flatten(), Linear(8, 8, rng: &rng), Activation(.gelu)]
        let model = Sequential(layers)
        let x = random([9, 12], seed: 4)
        let g = Graph()
        let y = model(g.constant(x))
        let chains = g.ops.compactMap { op -> Int? in if case .linearChain(_, let c) = op { c.weights.count } else { nil } }
        #expect(chains == [3], "one chain of the first three Linear layers, got \(chains)")
        let layered = layers.reduce(Graph().constant(x)) { v, layer in
            if let l = layer as? Linear { return v.linear(v.graph.param(l.weight), l.bias.map { v.graph.param($0) }) }
            return layer(v)
        }
        #expect(maxAbsDiff(y.value, layered.value) <= 1e-6)
    }

    /// With gradient buffers (a train shard's outgoing message), the chain's weight products write there, and every
    /// gradient is bit for bit the one computed without buffers.
    @Test func weightGradientsGoStraightIntoGradientBuffers() {
        let model = Sequential.mlp([30, 40, 20, 6], seed: 9)
        let x = random([11, 30], seed: 10), labels = (0..<11).map { Int32($0 % 6) }
        func gradients(buffers: Bool) -> (bits: [[UInt32]], inPlace: [Bool]) {
            let counts = model.parameters.map(\.value.count)
            let memory = UnsafeMutableBufferPointer<Float>.allocate(capacity: counts.reduce(0, +))
            memory.initialize(repeating: .nan)
            defer { memory.deallocate() }
            var offset = 0
            for (p, n) in zip(model.parameters, counts) {
                p.zeroGrad()
                p.gradientBuffer = buffers ? UnsafeMutableBufferPointer(rebasing: memory[offset..<offset + n]) : nil
                offset += n
            }
            defer { for p in model.parameters { p.gradientBuffer = nil; p.zeroGrad() } }
            let g = Graph()
            g.backward(from: model(g.constant(x)).crossEntropy(labels))
            let inPlace = model.parameters.map { p in p.gradientBuffer.map { p.grad!.isStored(at: $0.baseAddress!) } ?? false }
            return (model.parameters.map { $0.grad!.scalars.map(\.bitPattern) }, inPlace)
        }
        let (direct, plain) = (gradients(buffers: true), gradients(buffers: false))
        #expect(direct.bits == plain.bits)
        #expect(direct.inPlace == [true, true, true, true, true, true])
    }

    /// A batch of no rows goes through (a shard's empty micro-batch): an empty output, zero weight gradients.
    @Test func anEmptyBatchGivesEmptyOutputsAndZeroGradients() {
        let model = Sequential.mlp([6, 8, 8, 3], seed: 2)
        let g = Graph()
        let y = model(g.constant(Tensor(zeros: [0, 6])))
        #expect(y.shape == [0, 3])
        #expect(Kernels.binary(.add, Tensor(zeros: [0, 3]), Tensor(zeros: [3])).shape == [0, 3], "an empty batch plus a bias")
        g.backward(from: y.sum())
        for p in model.parameters { #expect(p.grad.map { $0.scalars.allSatisfy { $0 == 0 } } ?? true, "\(p.name)") }
        for p in model.parameters { p.zeroGrad() }
    }

    /// Inference (a graph that does not record) keeps the layer-by-layer ops, whose rows are stable whatever else
    /// shares the batch (served requests equal batch jobs).
    @Test func inferenceStaysLayerByLayer() {
        let model = Sequential.mlp([20, 32, 32, 4], seed: 5)
        let x = random([7, 20], seed: 6)
        let batch = model(Graph(recording: false).constant(x)).value
        let one = model(Graph(recording: false).constant(Tensor(shape: [1, 20], Array(x.scalars[40..<60])))).value
        #expect(Array(batch.scalars[8..<12]).map(\.bitPattern) == one.scalars.map(\.bitPattern))
    }
}

import SigmaEngine
import Testing

@Suite struct ConvTests {
    /// im2col + GEMM against the direct loop nest: relative error ≤ 1e-5, for strides and paddings.
    @Test(arguments: [(1, 0), (1, 1), (2, 1), (2, 0)])
    func fastConvEqualsReference(_ stride: Int, _ padding: Int) {
        let x = random([2, 3, 7, 6], seed: 30), w = random([4, 3, 3, 3], seed: 31), b = random([4], seed: 32)
        let fast = ConvKernels.conv2d(x, w, b, stride: stride, padding: padding)
        let ref = ConvKernels.conv2dReference(x, w, b, stride: stride, padding: padding)
        #expect(maxRelativeError(fast, ref) <= 1e-5)
        #expect(ConvKernels.conv2d(x, w, nil, stride: stride, padding: padding).shape == ref.shape)
    }

    @Test(arguments: [(1, 0), (2, 1)])
    func convGradients(_ stride: Int, _ padding: Int) {
        let x = random([2, 2, 5, 5], seed: 33), w = random([3, 2, 3, 3], seed: 34), b = random([3], seed: 35)
        let outShape = ConvKernels.conv2dReference(x, w, b, stride: stride, padding: padding).shape
        let m = random(outShape, seed: 36)
        checkGradients([x, w, b, m]) { v in (v[0].conv2d(v[1], v[2], stride: stride, padding: padding) * v[3]).sum() }
    }

    @Test func poolingForwardAndGradients() {
        let x = Tensor(shape: [1, 1, 4, 4], (0..<16).map { Float(($0 * 7) % 16) })
        let (mx, _) = ConvKernels.pool2d(.max, x, kernel: 2, stride: 2)
        #expect(mx.scalars == [12, 14, 15, 13])   // NumPy: x.reshape(2,2,2,2).transpose(0,2,1,3).max over windows
        let (avg, _) = ConvKernels.pool2d(.average, x, kernel: 2, stride: 2)
        #expect(avg.scalars == [5.5, 7.5, 9.5, 7.5])
        let xr = random([2, 2, 4, 6], seed: 37)   // distinct values: max is differentiable almost everywhere
        checkGradients([xr, random([2, 2, 2, 3], seed: 38)]) { ($0[0].pool2d(.max, kernel: 2) * $0[1]).sum() }
        checkGradients([xr, random([2, 2, 3, 5], seed: 39)]) { ($0[0].pool2d(.average, kernel: 2, stride: 1) * $0[1]).sum() }
    }
}

extension TrainingTests {
    /// A small CNN (conv-relu-pool ×2, linear) trained with Adam reaches ≥ 97 % held-out accuracy on the digits.
    @Test func cnnLearnsDigits() throws {
        let d = try Digits.load()
        var rng = SeededRandom(seed: 5)
        let model = Sequential([
            Conv2d(1, 16, kernel: 3, padding: 1, name: "0", rng: &rng), Activation(.relu), Pool2d(.max, kernel: 2),
            Conv2d(16, 32, kernel: 3, padding: 1, name: "3", rng: &rng), Activation(.relu), Pool2d(.max, kernel: 2),
            Flatten(), Linear(128, 10, name: "7", rng: &rng),
        ])
        trainDigits(model, d, optimizer: Adam(learningRate: 0.003), epochs: 12, rng: &rng, inputShape: [1, 8, 8])
        let acc = accuracy(model, d.testX.reshaped([d.testY.count, 1, 8, 8]), d.testY)
        #expect(acc >= 0.97, "held-out accuracy \(acc)")
    }
}

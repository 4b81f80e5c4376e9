import Foundation
import SigmaEngine
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// scikit-learn's 8×8 digits (data/digits.csv): pixels scaled to [0, 1], shuffled with a fixed seed, 80/20 split.
struct Digits {
    let trainX: Tensor, trainY: [Int32], testX: Tensor, testY: [Int32]

    static func load(seed: UInt64 = 0) throws -> Digits {
        let (rows, cols, v) = try CSVFile.readFloats(path: repoRoot + "/data/digits.csv")
        #expect(rows == 1797 && cols == 65)
        var order = Array(0..<rows)
        var rng = SeededRandom(seed: seed)
        order.shuffle(using: &rng)
        let nTest = 360
        func take(_ idx: ArraySlice<Int>) -> (Tensor, [Int32]) {
            var x: [Float] = [], y: [Int32] = []
            for r in idx {
                x += v[(r * cols)..<(r * cols + 64)].map { $0 / 16 }
                y.append(Int32(v[r * cols + 64]))
            }
            return (Tensor(shape: [idx.count, 64], x), y)
        }
        let (tx, ty) = take(order[nTest...]), (vx, vy) = take(order[..<nTest])
        return Digits(trainX: tx, trainY: ty, testX: vx, testY: vy)
    }
}

/// Parameters of these shapes with fixed, varied values (the same every call).
func testParameters(_ shapes: [[Int]]) -> [Parameter] {
    shapes.enumerated().map { k, shape in
        let n = shape.reduce(1, *)
        return Parameter("p\(k)", Tensor(shape: shape, (0..<n).map { Float(sin(Double($0 + k * 7))) * 2.1 }))
    }
}

/// Each parameter's gradient: its part of `sum` (the parameters laid end to end) ÷ `divisor`.
func setGradients(_ parameters: [Parameter], to sum: [Float], dividedBy divisor: Float) {
    var offset = 0
    for p in parameters {
        let n = p.value.count, o = offset
        p.grad = Tensor(shape: p.value.shape, (0..<n).map { sum[o + $0] / divisor })
        offset += n
    }
}

/// Each parameter's values: its part of `values` (laid end to end), copied.
func setValues(_ parameters: [Parameter], to values: [Float]) {
    var o = 0
    for p in parameters { let n = p.value.count; p.value = Tensor(shape: p.value.shape, Array(values[o..<o + n])); o += n }
}

func batch(_ x: Tensor, _ y: [Int32], _ idx: ArraySlice<Int>) -> (Tensor, [Int32]) {
    let d = x.shape[1]
    let xs = x.scalars
    var out: [Float] = []
    out.reserveCapacity(idx.count * d)
    for i in idx { out += xs[(i * d)..<((i + 1) * d)] }
    return (Tensor(shape: [idx.count, d], out), idx.map { y[$0] })
}

func accuracy(_ model: Layer, _ x: Tensor, _ y: [Int32]) -> Double {
    Metrics.accuracy(logits: model(Graph().constant(x)).value, labels: y)
}

/// Mini-batch training on the digits; `inputShape` reshapes each batch (e.g. to NCHW); `schedule` sets the rate.
func trainDigits(_ model: Layer, _ d: Digits, optimizer opt: Optimizer, epochs: Int, rng: inout SeededRandom,
                 inputShape: [Int]? = nil, schedule: ((Int) -> Float)? = nil) {
    var order = Array(0..<d.trainY.count)
    var step = 0
    for _ in 0..<epochs {
        order.shuffle(using: &rng)
        for start in stride(from: 0, to: order.count, by: 32) {
            let (x, y) = batch(d.trainX, d.trainY, order[start..<min(start + 32, order.count)])
            do {
                let g = Graph()
                let input = inputShape.map { x.reshaped([y.count] + $0) } ?? x
                opt.zeroGrad(model.parameters)
                g.backward(from: model(g.constant(input)).crossEntropy(y))
            }
            if let s = schedule { opt.learningRate = s(step) }
            opt.step(model.parameters)
            step += 1
        }
    }
}

@Suite struct TrainingTests {
    /// An MLP trained with SGD + momentum on the digits reaches ≥ 96 % held-out accuracy (fixed seeds).
    @Test func mlpLearnsDigits() throws {
        let d = try Digits.load()
        let model = Sequential.mlp([64, 128, 10], seed: 1)
        var rng = SeededRandom(seed: 2)
        trainDigits(model, d, optimizer: SGD(learningRate: 0.05, momentum: 0.9), epochs: 20, rng: &rng)
        let acc = accuracy(model, d.testX, d.testY)
        #expect(acc >= 0.96, "held-out accuracy \(acc)")
        let trainLoss = model(Graph().constant(d.trainX)).crossEntropy(d.trainY).value.item
        #expect(trainLoss < 0.2)
    }

    /// AdamW with a warm-up + cosine schedule trains the same MLP too.
    @Test func adamWWithScheduleLearnsDigits() throws {
        let d = try Digits.load()
        let model = Sequential.mlp([64, 64, 10], activation: .gelu, seed: 3)
        let schedule = WarmupCosine(peak: 0.01, warmupSteps: 50, totalSteps: 15 * 45)
        var rng = SeededRandom(seed: 4)
        trainDigits(model, d, optimizer: Adam.adamW(learningRate: 0, weightDecay: 0.01), epochs: 15, rng: &rng,
                    schedule: { schedule.rate(at: $0) })
        #expect(accuracy(model, d.testX, d.testY) >= 0.96)
    }
}

@Suite struct OptimizerTests {
    /// One parameter, a fixed gradient sequence: updates equal PyTorch's documented formulas computed in Float64.
    @Test func sgdMomentumAndWeightDecayFollowPyTorch() {
        let p = Parameter("w", Tensor(shape: [2], [1, -2]))
        let opt = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
        var w: [Double] = [1, -2], v: [Double] = [0, 0]
        let grads: [[Float]] = [[0.5, -1], [0.25, 0.5], [-1, 2]]
        for (t, g) in grads.enumerated() {
            p.grad = Tensor(shape: [2], g)
            opt.step([p])
            for i in 0..<2 {
                let gi = Double(g[i]) + 0.01 * w[i]
                v[i] = t == 0 ? gi : 0.9 * v[i] + gi
                w[i] -= 0.1 * v[i]
            }
        }
        for i in 0..<2 { #expect(abs(Double(p.value[i]) - w[i]) < 1e-6) }
    }

    /// Without weight decay no decay term is added at all, as PyTorch does: an infinite weight stays infinite (adding
    /// 0·∞ would have made its gradient, its velocity and then the weight NaN), and the finite ones move as usual.
    @Test func sgdWithoutWeightDecayAddsNoDecayTerm() {
        let p = Parameter("w", Tensor(shape: [2], [.infinity, 1]))
        p.grad = Tensor(shape: [2], [0.5, 0.5])
        SGD(learningRate: 0.5, momentum: 0.9).step([p])
        #expect(p.value[0] == .infinity)
        #expect(p.value[1] == 0.75)
    }

    /// `step` splits its in-place pass over threads: 1, 2 and 3 threads give the same bits, and those are the
    /// scalar float32 update (g = grad + λ·w, v = μ·v + g — v = g on the first step — and w − lr·v, in that order).
    @Test func sgdStepOnSeveralThreadsIsTheScalarUpdate() {
        let shapes = [[257, 509], [3], [70_001]]   // (more than 64 Ki elements each way: the split really happens)
        let total = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        var w = (0..<total).map { Float(sin(Double($0) * 0.37)) * 1.7 }
        var v = [Float](repeating: 0, count: total)
        let runs = [1, 2, 3].map { t -> ([Parameter], SGD) in
            var o = 0
            let ps = shapes.enumerated().map { k, shape -> Parameter in
                let n = shape.reduce(1, *)
                defer { o += n }
                return Parameter("p\(k)", Tensor(shape: shape, Array(w[o..<o + n])))
            }
            let opt = SGD(learningRate: 0.03, momentum: 0.9, weightDecay: 0.01)
            opt.threads = t
            return (ps, opt)
        }
        for step in 0..<3 {
            let g = (0..<total).map { Float(cos(Double($0 * 5 + step * 11))) * ($0 % 89 == 0 ? 1e-38 : 0.8) }
            for i in 0..<total {
                let gi = g[i] * 1 + 0.01 * w[i]
                v[i] = step == 0 ? gi : 0.9 * v[i] + gi
                w[i] = w[i] - 0.03 * v[i]
            }
            for (ps, opt) in runs {
                var o = 0
                for p in ps {
                    let n = p.value.count
                    p.grad = Tensor(shape: p.value.shape, Array(g[o..<o + n]))
                    o += n
                }
                opt.step(ps)
                let got = ps.flatMap { $0.value.withData { Array($0) } }
                #expect(got.map(\.bitPattern) == w.map(\.bitPattern), "\(opt.threads!) threads, step \(step)")
            }
        }
    }

    /// The coordinator's fused step — gradient = (a + b) / divisor read from raw operands, update, weights written
    /// out, split over threads — gives the same bits as setting the gradients and calling `step`, with and without
    /// momentum and weight decay, with one operand and with two, dividing or (powers of two) multiplying by the
    /// exact reciprocal. (Large enough that 2 threads really split it.)
    @Test func fusedSGDStepIsBitwiseTheSameAsGradientsThenStep() {
        let shapes = [[300, 500], [70_001]]
        let total = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        for (mu, wd) in [(Float(0), Float(0)), (0.9, 0), (0.9, 0.01)] {
            let (pa, pb) = (testParameters(shapes), testParameters(shapes))
            let (oa, ob) = (SGD(learningRate: 0.05, momentum: mu, weightDecay: wd), SGD(learningRate: 0.05, momentum: mu, weightDecay: wd))
            var out = [Float](repeating: 0, count: total)
            for step in 0..<4 {
                // (every 97th value tiny: ÷ 256 makes it subnormal, where a reciprocal must still round the same)
                let a = (0..<total).map { Float(sin(Double($0 * 7 + step * 13))) * ($0 % 97 == 0 ? 3.3e-37 : 3.3) }
                let b: [Float]? = step % 2 == 0 ? (0..<total).map { Float(cos(Double($0 * 3 + step))) * 1e-3 } : nil
                let divisor: Float = [3, 4, 5, 256][step]   // powers of two multiply by the reciprocal instead
                // Reference: the gradient as a tensor per parameter, then `step`.
                var sum = a
                if let b { for i in 0..<total { sum[i] = a[i] + b[i] } }
                setGradients(pa, to: sum, dividedBy: divisor)
                oa.step(pa)
                let before = pb.flatMap { $0.value.withData { Array($0) } }
                a.withUnsafeBytes { ra in
                    out.withUnsafeMutableBytes { o in
                        if let b { b.withUnsafeBytes { rb in ob.step(pb, sumOf: ra, rb, divisor: divisor, writingTo: o, threads: 2) } }
                        else { ob.step(pb, sumOf: ra, nil, divisor: divisor, writingTo: o, threads: step == 1 ? 1 : 2) }
                    }
                }
                let expected = pa.flatMap { $0.value.withData { Array($0) } }
                // The fused step leaves the parameters' values alone (read-only) and writes the new weights to `out`.
                #expect(pb.flatMap { $0.value.withData { Array($0) } } == before, "the fused step wrote the parameters, μ \(mu), λ \(wd), step \(step)")
                #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "written weights, μ \(mu), λ \(wd), step \(step)")
                // The caller points the parameters at the new weights (here by copy) for the next step.
                setValues(pb, to: out)
            }
        }
    }

    /// Adam's and AdamW's step from a sum tree in one pass (the coordinator's) gives the bits of setting the gradients to
    /// sum ÷ divisor and calling `step`, on 1 and 2 threads, over several steps (moments and bias correction carried).
    @Test func fusedAdamStepIsBitwiseTheSameAsGradientsThenStep() {
        let shapes = [[300, 500], [70_001], [3]]
        let total = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        for (decoupled, wd) in [(false, Float(0)), (false, 0.01), (true, 0.01)] {
            let (pa, pb) = (testParameters(shapes), testParameters(shapes))
            let (oa, ob) = (Adam(learningRate: 0.003, weightDecay: wd, decoupled: decoupled), Adam(learningRate: 0.003, weightDecay: wd, decoupled: decoupled))
            var out = [Float](repeating: 0, count: total)
            for step in 0..<4 {
                let vectors = (0..<3).map { j in (0..<total).map { Float(sin(Double($0 * (7 + j) + step * 13))) * 3.3 } }
                let divisor: Float = [3, 4, 5, 256][step]
                // Reference: ((v0 + v1) + v2) ÷ divisor as a tensor per parameter, then `step`.
                var sum = vectors[0]
                for i in 0..<total { sum[i] = (sum[i] + vectors[1][i]) + vectors[2][i] }
                setGradients(pa, to: sum, dividedBy: divisor)
                oa.step(pa)
                vectors[0].withUnsafeBytes { r0 in vectors[1].withUnsafeBytes { r1 in vectors[2].withUnsafeBytes { r2 in
                    out.withUnsafeMutableBytes { o in
                        ob.step(pb, sumOf: .add(.add(.vector(r0), .vector(r1)), .vector(r2)), divisor: divisor, writingTo: o, threads: step % 2 + 1)
                    }
                } } }
                let expected = pa.flatMap { $0.value.withData { Array($0) } }
                // (compared as one Bool: a failure would print 220,000 bit patterns twice)
                let same = out.map(\.bitPattern) == expected.map(\.bitPattern)
                #expect(same, "decoupled \(decoupled), λ \(wd), step \(step)")
                setValues(pb, to: out)
            }
            #expect(ob.stepCount == 4)
        }
    }

    @Test func adamAndAdamWFollowPyTorch() {
        for decoupled in [false, true] {
            let p = Parameter("w", Tensor(shape: [2], [0.5, -1.5]))
            let opt = Adam(learningRate: 0.01, weightDecay: 0.1, decoupled: decoupled)
            var w: [Double] = [0.5, -1.5], m: [Double] = [0, 0], v: [Double] = [0, 0]
            let grads: [[Float]] = [[1, -1], [0.5, 0.5], [-2, 0.1], [0.3, -0.7]]
            for (k, g) in grads.enumerated() {
                p.grad = Tensor(shape: [2], g)
                opt.step([p])
                let t = Double(k + 1)
                for i in 0..<2 {
                    if decoupled { w[i] -= 0.01 * 0.1 * w[i] }
                    let gi = decoupled ? Double(g[i]) : Double(g[i]) + 0.1 * w[i]
                    m[i] = 0.9 * m[i] + 0.1 * gi
                    v[i] = 0.999 * v[i] + 0.001 * gi * gi
                    w[i] -= 0.01 * (m[i] / (1 - pow(0.9, t))) / ((v[i] / (1 - pow(0.999, t))).squareRoot() + 1e-8)
                }
            }
            for i in 0..<2 { #expect(abs(Double(p.value[i]) - w[i]) < 1e-5, "decoupled \(decoupled)") }
        }
    }

    @Test func warmupCosineSchedule() {
        let s = WarmupCosine(peak: 1, warmupSteps: 10, totalSteps: 110)
        #expect(abs(s.rate(at: 0) - 0.1) < 1e-6)
        #expect(abs(s.rate(at: 9) - 1) < 1e-6)
        #expect(abs(s.rate(at: 60) - 0.5) < 1e-6)
        #expect(abs(s.rate(at: 110)) < 1e-6)
    }

    @Test func csvErrorsNameFileAndLine() throws {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).csv").path
        try "1,2,3\n4,x,6\n".write(toFile: p, atomically: true, encoding: .utf8)
        #expect { _ = try CSVFile.readFloats(path: p) } throws: { "\($0)".contains("line 2 column 2") && "\($0)".contains(p) }
        try "1,2,3\n4,5\n".write(toFile: p, atomically: true, encoding: .utf8)
        #expect { _ = try CSVFile.readFloats(path: p) } throws: { "\($0)".contains("line 2 has 2 fields") }
        // Blank lines are skipped, and still counted: the line named is the one an editor shows (and a header is
        // the first line that is not blank).
        try "\na,b,c\n1,2,3\n\n\n4,x,6\n".write(toFile: p, atomically: true, encoding: .utf8)
        #expect { _ = try CSVFile.readFloats(path: p, header: true) } throws: { "\($0)".contains("line 6 column 2") }
    }
}

import ArgumentParser
import Foundation
import SigmaEngine
import SigmaModel

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model from a `kind: train` spec.",
        discussion: """
        Example:
          sigma train examples/train-digits.yaml --local
        Prints loss and held-out accuracy per epoch, then writes the weights (safetensors, PyTorch state-dict names).
        Only --local is implemented so far: distributed training is the next step.
        """)

    @Argument(help: "Training spec (YAML or JSON).") var spec: String
    @Flag(help: "Train in this process.") var local = false
    @Flag(help: "Print the final metrics as JSON.") var json = false

    func run() throws {
        do {
            guard local else { throw CLIError.usage("distributed training is not implemented yet; run with --local") }
            let s: TrainSpec
            do { s = try TrainSpec.load(path: spec) } catch { throw CLIError.usage("\(spec): \(error)") }
            let table: (rows: Int, columns: Int, values: [Float])
            do { table = try CSVFile.readFloats(path: s.csv) } catch { throw CLIError.usage("\(error)") }
            guard case .mlp(let sizes, let activation) = s.model else { return }
            let features = table.columns - 1
            guard features == sizes[0] else {
                throw CLIError.usage("\(s.csv) has \(features) feature columns (plus the label), model.mlp[0] is \(sizes[0])")
            }
            let classes = sizes.last!
            var x: [Float] = [], y: [Int32] = []
            for r in 0..<table.rows {
                x += table.values[(r * table.columns)..<(r * table.columns + features)].map { $0 * Float(s.scale) }
                let label = table.values[r * table.columns + features]
                guard label >= 0, label < Float(classes), label == label.rounded() else {
                    throw CLIError.usage("\(s.csv): row \(r + 1) has label \(label), expected an integer in 0..<\(classes)")
                }
                y.append(Int32(label))
            }
            var rng = SeededRandom(seed: s.seed)
            var order = Array(0..<table.rows)
            order.shuffle(using: &rng)
            let nTest = Int(Double(table.rows) * s.holdout)
            let testIdx = Array(order[..<nTest]), trainIdx = Array(order[nTest...])
            func gather(_ idx: ArraySlice<Int>) -> (Tensor, [Int32]) {
                var out: [Float] = []
                out.reserveCapacity(idx.count * features)
                for i in idx { out += x[(i * features)..<((i + 1) * features)] }
                return (Tensor(shape: [idx.count, features], out), idx.map { y[$0] })
            }
            let act: Kernels.Unary = activation == "gelu" ? .gelu : activation == "tanh" ? .tanh : .relu
            let model = Sequential.mlp(sizes, activation: act, seed: s.seed &+ 1)
            let opt: Optimizer
            switch s.optimizer {
            case .sgd(let lr, let mu, let wd): opt = SGD(learningRate: Float(lr), momentum: Float(mu), weightDecay: Float(wd))
            case .adam(let lr, let wd): opt = Adam(learningRate: Float(lr), weightDecay: Float(wd))
            case .adamw(let lr, let wd): opt = Adam(learningRate: Float(lr), weightDecay: Float(wd), decoupled: true)
            }
            let (testX, testY) = gather(testIdx[...])
            var train = trainIdx
            var metrics: [String: Any] = [:]
            for epoch in 1...s.epochs {
                train.shuffle(using: &rng)
                var lossSum = 0.0, batches = 0
                for start in stride(from: 0, to: train.count, by: s.batchSize) {
                    let (bx, by) = gather(train[start..<min(start + s.batchSize, train.count)])
                    var loss: Float = 0
                    do {
                        let g = Graph()
                        let l = model(g.constant(bx)).crossEntropy(by)
                        opt.zeroGrad(model.parameters)
                        g.backward(from: l)
                        loss = l.value.item
                    }
                    opt.step(model.parameters)
                    lossSum += Double(loss)
                    batches += 1
                }
                var acc = Double.nan
                if nTest > 0 { acc = Metrics.accuracy(logits: model(Graph().constant(testX)).value, labels: testY) }
                let line = String(format: "epoch %d/%d  loss %.4f  held-out accuracy %.4f", epoch, s.epochs, lossSum / Double(max(1, batches)), acc)
                FileHandle.standardError.write(Data((line + "\n").utf8))
                metrics = ["epoch": epoch, "loss": lossSum / Double(max(1, batches)), "accuracy": acc]
            }
            if let out = s.output {
                do { try SafeTensors.write(model.stateDict, path: out, metadata: ["sigma.job": s.name]) } catch { throw CLIError.usage("\(error)") }
                metrics["weights"] = out
                FileHandle.standardError.write(Data("weights → \(out)\n".utf8))
            }
            if json { print(jsonString(metrics)) }
        } catch {
            exitWith(error)
        }
    }
}

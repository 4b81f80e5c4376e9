import Foundation
import SigmaEngine
import SigmaModel

public final class PredictDriver: ReducingDriver, @unchecked Sendable {
    public let spec: PredictJob
    public let isEval: Bool
    public let rows: Int
    let labels: [Int32]?
    var outputs: RowOutputs

    public var kind: String { isEval ? "eval" : "infer" }
    public var unit: String { "rows" }
    public var round: UInt32 { 0 }
    public var params: Frame? { nil }

    public init(spec: PredictJob, eval: Bool, data: LabeledData) {
        self.spec = spec
        isEval = eval
        rows = data.rows
        labels = data.y
        outputs = RowOutputs(items: data.rows, batch: spec.batchSize, width: spec.model.outputs, what: "logits")
    }

    public var roundItems: Int { rows }

    public func plan(shares: [Double]) -> [ShardPlan] { outputs.plan(shares: shares) }

    public func accept(shard index: Int, payload: Frame) throws { try outputs.accept(shard: index, payload: payload) }

    public var progress: RoundProgress { RoundProgress(step: 0, steps: 0, loss: .nan, accuracy: .nan) }

    /// −log softmax(logits)[label] per row, in Float64.
    static func rowLosses(_ logits: Tensor, _ labels: [Int32]) -> [Double] {
        let c = logits.shape[1]
        return logits.withData { p in
            labels.indices.map { i in
                var m = -Double.infinity
                for k in 0..<c { m = max(m, Double(p[i * c + k])) }
                var s = 0.0
                for k in 0..<c { s += Foundation.exp(Double(p[i * c + k]) - m) }
                return m + Foundation.log(s) - Double(p[i * c + Int(labels[i])])
            }
        }
    }

    public func reduceRound() throws -> RoundEnd {
        var end = RoundEnd()
        end.finished = true
        guard isEval else {
            end.results = try outputs.bundle("predictions.npy")
            return end
        }
        let logits = try outputs.joined()
        var files: [(String, Data)] = [("predictions.npy", NumPyFormat.npyData(logits))]
        if isEval, let y = labels {
            let c = spec.model.outputs
            var confusion = Array(repeating: Array(repeating: 0, count: c), count: c)
            logits.withData { p in for i in 0..<rows { confusion[Int(y[i])][Metrics.argmax(p, row: i, classes: c)] += 1 } }
            let loss = PredictDriver.rowLosses(logits, y).reduce(0, +) / Double(rows)
            let metrics: [String: Any] = ["rows": rows, "accuracy": Double(Metrics.correct(logits: logits, labels: y)) / Double(rows),
                                          "loss": loss, "confusion_matrix": confusion]
            files.append(("metrics.json", jsonData(metrics)))
        }
        end.results = ResultBundle.encode(files)
        return end
    }
}

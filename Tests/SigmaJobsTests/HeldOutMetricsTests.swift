import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

/// A train job's held-out figures against a reference computed here, in Float64, from the model's weights.
@Suite struct HeldOutMetricsTests {
    /// A regressor (`loss: mse`, MLP 3-8-1 over a CSV whose last column is a float target): the held-out mean squared
    /// error, its root, the mean absolute error and R² equal those of the same weights' forward pass written out by
    /// hand — within float32's rounding of the forward pass.
    @Test func aRegressorsHeldOutErrorsAndR2MatchAReference() throws {
        var rng = SeededRandom(seed: 11)
        var lines: [String] = []
        for _ in 0..<80 {
            let x = (0..<3).map { _ in Double(rng.next() % 1000) / 1000 }
            lines.append((x + [2 * x[0] - x[1] + 0.5 * x[2] + Double(rng.next() % 100) / 1000]).map { String($0) }.joined(separator: ","))
        }
        let (driver, data) = try Self.regressor(csv: lines, layers: [3, 8, 1], extra: "steps: 2\nbatch_size: 16\nseed: 3")
        let got = driver.evaluate()

        // The reference: Linear(3, 8) → ReLU → Linear(8, 1) in Float64 from the state dict.
        let state = driver.stateDict
        let layers = state.keys.filter { $0.hasSuffix(".weight") }.sorted { Int($0.split(separator: ".")[0])! < Int($1.split(separator: ".")[0])! }
        try #require(layers.count == 2, "\(state.keys.sorted())")
        func values(_ k: String) -> [Double] { state[k]!.scalars.map(Double.init) }
        let (w1, b1) = (values(layers[0]), values(layers[0].replacingOccurrences(of: ".weight", with: ".bias")))
        let (w2, b2) = (values(layers[1]), values(layers[1].replacingOccurrences(of: ".weight", with: ".bias")))
        var predictions: [Double] = [], targets: [Double] = []
        for r in driver.plan.holdout {
            let x = (0..<3).map { Double(data.x[r * 3 + $0]) }
            var p = b2[0]
            for j in 0..<8 {
                var z = b1[j]
                for i in 0..<3 { z += w1[j * 3 + i] * x[i] }
                p += w2[j] * max(0, z)
            }
            predictions.append(p)
            targets.append(Double(data.targets![r]))
        }
        let n = Double(targets.count)
        #expect(n == 20)
        let mse = zip(predictions, targets).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / n
        let mae = zip(predictions, targets).reduce(0.0) { $0 + abs($1.0 - $1.1) } / n
        let mean = targets.reduce(0, +) / n
        let r2 = 1 - mse * n / targets.reduce(0.0) { $0 + ($1 - mean) * ($1 - mean) }
        func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-5 * max(1, abs(b)) }
        #expect(close(got.loss, mse) && close(got.meanAbsoluteError, mae) && close(got.r2, r2), "\(got) against mse \(mse), mae \(mae), R² \(r2)")
        #expect(got.accuracy.isNaN)
        #expect(r2 < 0.9, "an untrained model's R² (\(r2)) is no fit: the comparison is not a trivial one")
    }

    /// R² is left out, not reported as −∞ or NaN, when the held-out targets are all equal (nothing to explain).
    @Test func constantTargetsHaveNoR2() throws {
        let (driver, _) = try Self.regressor(csv: (0..<40).map { "\(Double($0) / 40),\(Double($0 % 7) / 7),1.5" }, layers: [2, 4, 1],
                                             extra: "steps: 1\nbatch_size: 8")
        let e = driver.evaluate()
        #expect(e.loss.isFinite && e.meanAbsoluteError.isFinite && e.r2.isNaN, "\(e)")
    }

    /// A `loss: mse` train job's driver over these CSV rows (the last column the target), a quarter held out, and its data.
    static func regressor(csv lines: [String], layers: [Int], extra: String) throws -> (TrainDriver, LabeledData) {
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-heldout-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try lines.joined(separator: "\n").write(toFile: dir + "/r.csv", atomically: true, encoding: .utf8)
        let spec = try JobSpec.parse("""
            kind: train
            model: {mlp: \(layers)}
            data: {csv: \(dir)/r.csv}
            loss: mse
            optimizer: {sgd: {lr: 0.05}}
            micro_batch: 8
            holdout: 0.25
            \(extra)
            """).decode(as: TrainJob.self)
        // (the data is read here: the folder may go once the driver has it)
        let data = try LabeledData.load(spec.data, for: spec.model, needLabels: true, regression: true)
        return (try TrainDriver(spec: spec, data: data), data)
    }
}

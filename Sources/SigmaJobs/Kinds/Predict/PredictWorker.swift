import Foundation
import SigmaEngine
import SigmaModel

/// infer / eval shards: logits for a row range, computed batch by batch on absolute batch boundaries.
public final class PredictWorker {
    public let spec: PredictJob
    public let data: LabeledData
    let model: Layer

    public init(spec: PredictJob, data: LabeledData) throws {
        self.spec = spec
        self.data = data
        model = try MLModels.build(spec.model, seed: 0)
    }

    /// Logits of rows `start ..< start+count` (row-major, `classes` per row), batch by batch on the free compute
    /// lanes (a batch's logits do not depend on where it ran).
    public func logits(start: Int, count: Int, lanes: ComputeLanes = .shared) throws -> [Float] {
        guard start >= 0, count >= 0, start + count <= data.rows else {
            throw JobError("rows \(start)..<\(start + count) outside the data's 0..<\(data.rows)")
        }
        let classes = spec.model.outputs
        return try Batches.run(start: start, count: count, batch: spec.batchSize, width: classes, lanes: lanes) { r in
            let (x, _) = self.data.batch(r)
            return self.model(Graph(recording: false).constant(x)).value
        }
    }
}

extension PredictWorker: @unchecked Sendable {}   // the model is only read while shards run

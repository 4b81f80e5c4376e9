import Foundation
import SigmaModel

/// `kind: infer` (predictions: logits in input order) and `kind: eval` (accuracy, loss, confusion matrix).
public struct PredictJob: JobKindSpec {
    public var name: String
    public var model: ModelSpec
    public var data: LabeledDataSpec
    /// Rows per batch; shards are whole batches, so results do not depend on how the job was split.
    public var batchSize: Int
    public var output: String?
    /// Where workers get the data and weights files (nil: shared).
    public var inputTransport: InputTransport?

    public init(name: String, model: ModelSpec, data: LabeledDataSpec, batchSize: Int = 256, output: String? = nil) {
        self.name = name
        self.model = model
        self.data = data
        self.batchSize = batchSize
        self.output = output
    }

    public func validate(eval: Bool, limits: SpecLimits = .standard) throws {
        try model.validate("model.", limits: limits)
        guard model.weights != nil else { throw SpecError(field: "model.weights", problem: "missing; infer and eval need trained weights (safetensors)") }
        try data.validate("data.", needsLabels: eval)
        guard batchSize >= 1, batchSize <= 1 << 20 else { throw SpecError(field: "batch_size", problem: "must be between 1 and 1048576, got \(batchSize)") }
        try limits.checkMemory("model." + model.kind, bytes: model.memoryEstimate(batch: batchSize, states: 0),
                               what: "\(model.summary) (\(model.parameterCount) parameters) with batch_size \(batchSize)")
        if eval {
            // (eval counts a confusion matrix of outputs × outputs on the coordinator)
            let n = UInt64(max(0, model.outputs))
            try limits.checkMemory("model." + model.kind, bytes: n.multipliedReportingOverflow(by: n * 8).overflow ? .max : n * n * 8,
                                   what: "the confusion matrix of \(n) × \(n) classes")
        }
    }
}

extension PredictJob {
    static func parse(_ f: inout Fields, base: String?, eval: Bool) throws -> PredictJob {
        var spec = PredictJob(name: try f.optionalString("name") ?? (eval ? "eval" : "infer"), model: try ModelSpec.parse(&f, base: base),
                              data: try LabeledDataSpec.parse(&f, base: base), batchSize: try f.optionalInt("batch_size") ?? 256,
                              output: try f.optionalString("output"))
        spec.inputTransport = try InputTransport.parse(f.optionalString("input_transport"))
        try f.rejectUnknown()
        return spec
    }
}

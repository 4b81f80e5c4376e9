import Foundation
import SigmaModel

/// `kind: infer`: a trained model's logits for every row, in input order (predictions.npy).
public enum InferKind: PredictKind {
    public static let name = "infer"
}

/// `kind: eval`: accuracy, loss and a confusion matrix of a trained model on labeled rows.
public enum EvalKind: PredictKind {
    public static let name = "eval"
}

/// What infer and eval share: one round of whole batches through a trained model.
public protocol PredictKind: JobKind where Spec == PredictJob {}

extension PredictKind {
    static var isEval: Bool { name == EvalKind.name }

    public static func parse(_ fields: inout Fields, base: String?) throws -> PredictJob {
        try PredictJob.parse(&fields, base: base, eval: isEval)
    }

    public static func validate(_ spec: PredictJob, limits: SpecLimits) throws {
        try spec.validate(eval: isEval, limits: limits)
    }

    public static func mapPaths(_ spec: PredictJob, _ rewrite: (SpecPath) throws -> String) rethrows -> PredictJob {
        var s = spec
        s.data = try spec.data.mapPaths(rewrite)
        s.model = try spec.model.mapPaths(rewrite)
        return s
    }

    /// Data shaped for the model (labels in range for eval), weights present, named and shaped as the model says.
    public static func prepare(_ spec: PredictJob, context: KindContext) throws -> any RoundDriver {
        let data = try LabeledData.load(spec.data, for: spec.model, needLabels: isEval, limits: context.limits)
        _ = try MLModels.build(spec.model, seed: 0)
        return PredictDriver(spec: spec, eval: isEval, data: data)
    }

    public static func worker(_ spec: PredictJob, context: KindContext) throws -> any ShardWorker {
        try PredictWorker(spec: spec, data: LabeledData.load(spec.data, for: spec.model,
                                                            needLabels: isEval, limits: context.limits))
    }

    public static func report(_ result: [UInt8], spec: PredictJob) throws -> JobReport {
        try ResultBundle.report(result)
    }
}

extension JobSpec {
    public static func infer(_ s: PredictJob) -> JobSpec { InferKind.spec(s) }
    public static func eval(_ s: PredictJob) -> JobSpec { EvalKind.spec(s) }
}

extension PredictWorker: ShardWorker {
    public func run(round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        try checkedRange(start, count)
        return Frame(floats: try logits(start: Int(start), count: Int(count)))
    }
}

func checkedRange(_ start: UInt64, _ count: UInt64) throws {
    guard count <= UInt64(Int32.max), start <= UInt64(Int32.max) else { throw JobError("shard range \(start)+\(count) too large") }
}

extension Frame {
    /// The floats' bytes.
    init(floats v: [Float]) {
        self.init(count: v.count * 4) { dst in v.withUnsafeBytes { dst.copyMemory(from: $0) } }
    }
}

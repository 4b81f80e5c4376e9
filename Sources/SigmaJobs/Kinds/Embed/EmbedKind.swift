import Foundation
import SigmaModel

/// `kind: embed`: sentence embeddings of a text file with a BERT-family encoder (embeddings.npy).
public enum EmbedKind: JobKind {
    public static let name = "embed"

    public static func parse(_ fields: inout Fields, base: String?) throws -> EmbedJob {
        try EmbedJob.parse(&fields, base: base)
    }

    public static func validate(_ spec: EmbedJob, limits: SpecLimits) throws {
        try spec.validate(limits: limits)
    }

    public static func mapPaths(_ spec: EmbedJob, _ rewrite: (SpecPath) throws -> String) rethrows -> EmbedJob {
        var s = spec
        s.input = try rewrite(SpecPath(field: "input", path: spec.input))
        s.model = try rewrite(SpecPath(field: "model", path: spec.model, folder: (["config.json", "vocab.txt", "model.safetensors"], ["sentence_bert_config.json"]),
                                       model: true))
        return s
    }

    public static func prepare(_ spec: EmbedJob, context: KindContext) throws -> any RoundDriver {
        let w = try EmbedWorker(spec: spec, limits: context.limits)
        return EmbedDriver(spec: spec, lines: w.lines.count, dimension: w.dimension)
    }

    public static func worker(_ spec: EmbedJob, context: KindContext) throws -> any ShardWorker {
        try EmbedWorker(spec: spec, limits: context.limits)
    }

    public static func report(_ result: [UInt8], spec: EmbedJob) throws -> JobReport {
        try ResultBundle.report(result)
    }
}

extension JobSpec {
    public static func embed(_ s: EmbedJob) -> JobSpec { EmbedKind.spec(s) }
}

extension EmbedWorker: ShardWorker {
    public func run(round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        try checkedRange(start, count)
        return Frame(floats: try embeddings(start: Int(start), count: Int(count)))
    }
}

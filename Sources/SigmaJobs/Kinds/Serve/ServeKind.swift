import Foundation
import SigmaModel

/// `kind: serve`: a deployment's spec (`sigma deploy`). It shares the job kinds' spec machinery — parsing, checks,
/// paths under the data roots — but it is never a job: the coordinator keeps it as a deployment (docs/serving.md).
public enum ServeKind: JobKind {
    public static let name = "serve"

    public static func parse(_ fields: inout Fields, base: String?) throws -> ServeSpec {
        try ServeSpec.parse(&fields, base: base)
    }

    public static func validate(_ spec: ServeSpec, limits: SpecLimits) throws {
        try spec.validate(limits: limits)
    }

    public static func mapPaths(_ spec: ServeSpec, _ rewrite: (SpecPath) throws -> String) rethrows -> ServeSpec {
        var s = spec
        switch spec.model {
        case .embed(let folder):
            s.model = .embed(folder: try rewrite(SpecPath(field: "model.embed", path: folder, folder: (["config.json", "vocab.txt", "model.safetensors"],
                                                                                                    ["sentence_bert_config.json"]), model: true)))
        case .mlp(let m):
            s.model = .mlp(try m.mapPaths(rewrite))
        }
        return s
    }

    static let notAJob = JobError("a serve spec is a deployment, not a job: start it with sigma deploy FILE (and stop it with sigma undeploy NAME)")

    public static func prepare(_ spec: ServeSpec, context: KindContext) throws -> any RoundDriver { throw notAJob }

    public static func worker(_ spec: ServeSpec, context: KindContext) throws -> any ShardWorker { throw notAJob }

    public static func report(_ result: [UInt8], spec: ServeSpec) throws -> JobReport { JobReport() }
}

extension JobSpec {
    public static func serve(_ s: ServeSpec) -> JobSpec { ServeKind.spec(s) }
}

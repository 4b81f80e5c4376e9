import Foundation
import SigmaEngine
import SigmaModel

/// S = reduce(f(x_i)): one round of row-range shards, each a `Partial`, combined in shard order.
public enum MapReduceKind: JobKind {
    public static let name = "map-reduce"
    public static let quickItems = true

    public static func parse(_ fields: inout Fields, base: String?) throws -> MapReduceSpec {
        try MapReduceSpec.parse(&fields, baseDirectory: base)
    }

    public static func validate(_ spec: MapReduceSpec, limits: SpecLimits) throws {
        try spec.validate(limits: limits)
    }

    public static func mapPaths(_ spec: MapReduceSpec, _ rewrite: (SpecPath) throws -> String) rethrows -> MapReduceSpec {
        guard case .npy(let path) = spec.input else { return spec }
        var s = spec
        s.input = .npy(path: try rewrite(SpecPath(field: "input.npy", path: path)))
        s.modelLoss = try spec.modelLoss?.mapPaths(rewrite)
        if let g = spec.modelGradient { s.modelGradient?.model = try g.model.mapPaths(rewrite) }
        return s
    }

    /// Rows counted (an `.npy` file's header: within the limits before any data is read), then cut by `sharding`.
    public static func prepare(_ spec: MapReduceSpec, context: KindContext) throws -> any RoundDriver {
        let rows: UInt64
        switch spec.input {
        case .npy(let path):
            let header = try NpyFile(path: path).header
            rows = UInt64(header.rows)
            try context.limits.checkRows("input.npy", rows)
            if let job = spec.gradientJob(rows: Int(rows)) {
                let driver = try TrainDriver(spec: job, data: try LabeledData.rowsWithLabels(path, model: job.model, limits: context.limits))
                guard driver.plan.microBatches(step: 0) <= 4096 else {
                    throw JobError("model_gradient: \(rows) rows in micro-batches of \(job.microBatch) are \(driver.plan.microBatches(step: 0)) micro-batches; at most 4096 — raise micro_batch")
                }
                return driver
            }
            if let m = spec.modelLoss {
                guard header.columns == m.inputs + 1 else {
                    throw JobError("\(path): rows of \(header.columns) values; model_loss needs \(m.inputs + 1) (\(m.inputField) inputs, then the label)")
                }
                _ = try MLModels.build(m, seed: 0)   // (weights present, named and shaped as the model says)
            }
            if spec.reduce.contains(.concat) {
                try context.limits.checkMemory("reduce.concat", bytes: saturating(saturating(rows, UInt64(header.columns)), 16),
                                               what: "concat of \(rows) × \(header.columns) values")
            }
        default:
            rows = spec.input.generatedCount ?? 0
        }
        return try driver(spec, rows: rows, limits: context.limits)
    }

    /// The driver of a job over `rows` rows, once they are counted and within `limits`.
    public static func driver(_ spec: MapReduceSpec, rows: UInt64, limits: SpecLimits) throws -> any RoundDriver {
        guard rows > 0 else { throw JobError("input has no rows") }
        // (counted before the ranges are made: a count of 2^64 - 1 rows must not become an array of them)
        do { try spec.sharding.check(rows: rows, limits: limits) } catch { throw JobError("\(error)") }
        return MapReduceDriver(spec: spec, rows: rows)
    }

    public static func worker(_ spec: MapReduceSpec, context: KindContext) throws -> any ShardWorker {
        if spec.modelGradient != nil, case .npy(let path) = spec.input {
            let rows = try NpyFile(path: path).header.rows
            return try TrainWorker(spec: spec.gradientJob(rows: rows)!, data: LabeledData.rowsWithLabels(path, model: spec.modelGradient!.model, limits: context.limits))
        }
        return try MapReduceWorker(spec: spec)
    }

    public static func items(_ spec: MapReduceSpec) -> (count: UInt64, unit: String)? {
        spec.input.generatedCount.map { ($0, "rows") }
    }

    public static func report(_ result: [UInt8], spec: MapReduceSpec) throws -> JobReport {
        if spec.modelGradient != nil { return try ResultBundle.report(result) }
        let r = try result.withUnsafeBytes { try MapReduceResult.decode($0) }
        return JobReport(files: r.files, lines: r.lines, json: r.jsonObject)
    }
}

extension JobSpec {
    public static func mapReduce(_ s: MapReduceSpec) -> JobSpec { MapReduceKind.spec(s) }
}

/// The coordinator's side of a map-reduce job: one round; partials kept by shard, reduced in shard order.
final class MapReduceDriver: RoundDriver, @unchecked Sendable {
    let spec: MapReduceSpec
    let rows: UInt64
    let ranges: [ShardPlan]
    var partials: [Partial?]
    let shape: PartialShape

    init(spec: MapReduceSpec, rows: UInt64) {
        self.spec = spec
        self.rows = rows
        ranges = spec.sharding.ranges(rows: rows).map { ShardPlan(start: $0.start, count: $0.count) }
        partials = Array(repeating: nil, count: ranges.count)
        shape = spec.shape
    }

    var kind: String { MapReduceKind.name }
    var round: UInt32 { 0 }
    var params: Frame? { nil }
    var unit: String { "rows" }
    var roundItems: Int { Int(clamping: rows) }
    var planSummary: String? { "\(rows) rows in \(ranges.count) shards" }
    var progress: RoundProgress { RoundProgress(step: 0, steps: 0, loss: .nan, accuracy: .nan) }

    /// The sharding decides the shards, whatever the workers.
    func plan(shares: [Double]) -> [ShardPlan] { ranges }

    func accept(shard index: Int, payload: Frame) throws {
        let p = try Partial.decode(payload, shape: shape)
        if spec.input.generatedCount != nil, p.count != ranges[index].count {
            throw ByteReadError(field: "partial.count", problem: "\(p.count) values for a shard of \(ranges[index].count) rows")
        }
        partials[index] = p
    }

    func completeRound() throws -> RoundEnd {
        var end = RoundEnd()
        end.finished = true
        end.results = MapReduceResult.reduce(spec, partials: partials.map { $0! }).encoded
        partials = []
        return end
    }
}

/// A worker's side: f over a shard's rows, accumulated into a `Partial` (an `.npy` input is opened once).
final class MapReduceWorker: ShardWorker {
    let spec: MapReduceSpec
    let files = NpyFileCache()

    /// model_loss's model, loaded once.
    let model: Layer?

    init(spec: MapReduceSpec) throws {
        self.spec = spec
        model = try spec.modelLoss.map { try MLModels.build($0, seed: 0) }
    }

    func run(round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        Frame(try MapReduceKernel.run(spec, start: start, count: count, files: files, model: model).encoded)
    }
}

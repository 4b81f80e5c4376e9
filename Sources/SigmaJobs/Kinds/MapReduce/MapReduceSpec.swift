import Foundation
import SigmaModel

/// S = reduce(f(x_i)) over an input split into index-range shards.
public struct MapReduceSpec: JobKindSpec {
    public var name: String
    public var input: DataSource
    public var map: ElementFunction
    public var reduce: [Reducer]
    public var sharding: Sharding
    /// `input_transport` of an `npy` input (nil: shared).
    public var inputTransport: InputTransport?
    /// `map: {model_loss: {model: …}}`: each row of a 2-D `.npy` (the model's inputs, then the label) becomes one
    /// value, the model's cross-entropy on it (float64 from the logits) — then `map` is identity.
    public var modelLoss: ModelSpec?
    /// `map: {model_gradient: {model: …, micro_batch: M}}`: Σ over the rows of the model's cross-entropy gradient,
    /// reduced as a train step reduces it (micro-batches of M rows in input order, the fixed tree), written as
    /// gradient.safetensors — bitwise a train step's gradient over the same micro-batches.
    public var modelGradient: ModelGradient?

    public struct ModelGradient: Codable, Sendable, Equatable {
        public var model: ModelSpec
        public var microBatch: Int
        public init(model: ModelSpec, microBatch: Int) { (self.model, self.microBatch) = (model, microBatch) }
    }

    /// The train job a `model_gradient` runs as: one step over every row in input order.
    public func gradientJob(rows: Int) -> TrainJob? {
        guard let g = modelGradient else { return nil }
        var t = TrainJob(name: name, model: g.model, data: LabeledDataSpec(), optimizer: OptimizerSpec(kind: "sgd", lr: 1), steps: 1,
                         batchSize: max(1, rows), microBatch: g.microBatch, holdout: 0)
        t.gradientOnly = true
        return t
    }

    public init(name: String = "map-reduce", input: DataSource, map: ElementFunction = .identity,
                reduce: [Reducer], sharding: Sharding = .count(64), inputTransport: InputTransport? = nil) {
        self.name = name
        self.input = input
        self.map = map
        self.reduce = reduce
        self.sharding = sharding
        self.inputTransport = inputTransport
    }

    /// What every partial of this job holds (histograms, squares, ranked values, class counts, values).
    public var shape: PartialShape { PartialShape(reduce) }
}

/// The values x_i. Generated sources are pure functions of (seed, i), so any shard can compute its range alone.
public enum DataSource: Codable, Sendable, Equatable {
    /// A `.npy` file (float32 or float64, 1-D or 2-D) at a path every worker can read; shards are row ranges.
    case npy(path: String)
    /// x_i = start + i × step.
    case range(count: UInt64, start: Double, step: Double)
    /// x_i uniform in [low, high), from a counter-based generator.
    case uniform(count: UInt64, seed: UInt64, low: Double, high: Double)
    /// x_i normal(mean, std), Box–Muller over a counter-based generator.
    case normal(count: UInt64, seed: UInt64, mean: Double, std: Double)

    /// Row count for generated sources; `nil` for files (read from the file header).
    public var generatedCount: UInt64? {
        switch self {
        case .npy: nil
        case .range(let n, _, _), .uniform(let n, _, _, _), .normal(let n, _, _, _): n
        }
    }
}

/// f, applied to each value in Float64 (NumPy's semantics: log of a negative is NaN, of 0 is −∞; clip keeps NaN).
public enum ElementFunction: Codable, Sendable, Equatable {
    case identity, square, abs, log, exp
    case affine(a: Double, b: Double)
    /// Values below `low` become `low`, above `high` become `high` (nil: no bound on that side).
    case clip(low: Double?, high: Double?)
    /// The functions in order: `[abs, {affine: {a: 2}}, square]` is square(2·|x|).
    case compose([ElementFunction])

    @inline(__always)
    public func apply(_ x: Double) -> Double {
        switch self {
        case .identity: x
        case .square: x * x
        case .abs: Swift.abs(x)
        case .log: Foundation.log(x)
        case .exp: Foundation.exp(x)
        case .affine(let a, let b): a * x + b
        case .clip(let lo, let hi): x.isNaN ? x : Swift.min(Swift.max(x, lo ?? -.infinity), hi ?? .infinity)
        case .compose(let fs): fs.reduce(x) { $1.apply($0) }
        }
    }

    public var description: String {
        switch self {
        case .identity: "identity"
        case .square: "square"
        case .abs: "abs"
        case .log: "log"
        case .exp: "exp"
        case .affine(let a, let b): "affine(a: \(a), b: \(b))"
        case .clip(let lo, let hi): "clip(low: \(lo.map { "\($0)" } ?? "none"), high: \(hi.map { "\($0)" } ?? "none"))"
        case .compose(let fs): "[" + fs.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// How values are combined, in Float64; each is exact or a function of exact sums, so the same bits whatever the split.
public enum Reducer: Codable, Sendable, Equatable {
    case sum, mean, min, max, count
    /// Population variance (NumPy's `var`, ddof 0), from exact Σx and Σx².
    case variance
    /// `bins` equal-width bins over [low, high]; the last bin includes `high`; values outside are not counted
    /// (NumPy's `histogram` semantics). A job may ask for several.
    case histogram(bins: Int, low: Double, high: Double)
    /// The k largest values with their indices in the input, largest first, ties by the smaller index (NaN not ranked).
    case topK(Int)
    /// How many times each distinct value occurs.
    case classCounts
    /// Every mapped value, in input order (written as concat.npy).
    case concat

    public var name: String {
        switch self {
        case .sum: "sum"
        case .mean: "mean"
        case .min: "min"
        case .max: "max"
        case .count: "count"
        case .histogram: "histogram"
        case .variance: "variance"
        case .topK: "top_k"
        case .classCounts: "class_counts"
        case .concat: "concat"
        }
    }
}

/// How the input is cut into index ranges.
public enum Sharding: Codable, Sendable, Equatable {
    /// About this many shards of equal size (fewer if there are fewer rows).
    case count(Int)
    /// Shards of this many rows (the last may be shorter).
    case size(UInt64)

    /// Contiguous `[start, start+count)` row ranges covering `0..<rows` exactly once, in order. Never traps: empty
    /// when there are no rows, or when there would be more than `SpecLimits.ceiling.shards` ranges (check
    /// `shardCount(rows:)` against the limits first).
    public func ranges(rows: UInt64) -> [(start: UInt64, count: UInt64)] {
        let shards = shardCount(rows: rows)
        guard shards > 0, shards <= UInt64(SpecLimits.ceiling.shards) else { return [] }
        var out: [(UInt64, UInt64)] = []
        out.reserveCapacity(Int(shards))
        switch self {
        case .count:
            let base = rows / shards, extra = rows % shards
            var start: UInt64 = 0
            for i in 0..<shards {
                let c = base + (i < extra ? 1 : 0)
                out.append((start, c))
                start += c
            }
        case .size(let k):
            var start: UInt64 = 0
            while start < rows {
                let c = Swift.min(Swift.max(1, k), rows - start)
                out.append((start, c))
                start += c
            }
        }
        return out
    }
}

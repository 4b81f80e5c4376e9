/// Upper bounds on every size a job spec can ask for, checked before anything is allocated (cluster.yaml
/// `limits:`; docs/jobs.md, "Data roots and limits"). A spec from YAML, from JSON and from the wire goes through
/// the same `JobSpec.validate(limits:)`; sizes only a file knows (rows of a data file, a model folder's
/// config) are checked against the same limits when the file's header has been read, before its data is.
public struct SpecLimits: Sendable, Equatable {
    /// Shards one job may have (map-reduce: `shards`, or rows / `shard_size`).
    public var shards = 1_000_000
    /// Bins of a histogram reducer.
    public var histogramBins = 1 << 20
    /// Rows of a job's input: a generated `count`, an `.npy` file's first dimension, an ML data file's rows, an
    /// embed input's lines.
    public var rows: UInt64 = 1 << 36
    /// Layers of a model (an `mlp` list's widths − 1; an embed model's `num_hidden_layers`).
    public var layers = 64
    /// Width of one layer (an `mlp` entry; an embed model's `hidden_size` and `intermediate_size`).
    public var width = 1 << 20
    /// Parameters of one model.
    public var parameters = 1 << 28
    /// bytes: estimated memory of one job's model on one process (weights, gradients, optimizer state, a batch's
    /// activations) plus the data it loads.
    public var memoryBytes: UInt64 = 16 << 30

    public init() {}

    public init(shards: Int, histogramBins: Int, rows: UInt64, layers: Int, width: Int, parameters: Int, memoryBytes: UInt64) {
        self.shards = shards
        self.histogramBins = histogramBins
        self.rows = rows
        self.layers = layers
        self.width = width
        self.parameters = parameters
        self.memoryBytes = memoryBytes
    }

    /// The defaults: generous for the examples and benchmarks.
    public static let standard = SpecLimits()

    /// The most any configuration may set. A spec decoded from the wire is checked against this first (so a
    /// decoded spec's sizes never overflow an `Int` or trap), then by its receiver against its own limits.
    public static let ceiling = SpecLimits(shards: 1 << 22, histogramBins: 1 << 24, rows: 1 << 44, layers: 4096, width: 1 << 24,
                                           parameters: 1 << 34, memoryBytes: 1 << 44)

    /// A `SpecError` naming `field`, the size asked for, and the limit and where to raise it.
    func exceeded(_ field: String, _ value: some BinaryInteger, _ limit: some BinaryInteger, key: String, unit: String = "") -> SpecError {
        SpecError(field: field, problem: "\(value)\(unit) exceeds the limit of \(limit)\(unit) (cluster.yaml limits.\(key))")
    }

    /// Throws when `bytes` (an estimate) exceeds `memoryBytes`.
    public func checkMemory(_ field: String, bytes: UInt64, what: String) throws {
        guard bytes <= memoryBytes else {
            throw SpecError(field: field, problem: "\(what) needs about \(bytes) bytes, over the limit of \(memoryBytes) (cluster.yaml limits.memory_bytes)")
        }
    }

    /// Throws when a file input has more rows than `rows`.
    public func checkRows(_ field: String, _ n: UInt64) throws {
        guard n <= rows else { throw exceeded(field, n, rows, key: "rows", unit: " rows") }
    }
}

/// `a × b + …` in `UInt64`, saturating instead of overflowing (sizes are compared against limits far below 2^64).
func saturatingProduct(_ xs: [UInt64]) -> UInt64 {
    var p: UInt64 = 1
    for x in xs {
        let (r, o) = p.multipliedReportingOverflow(by: x)
        if o { return .max }
        p = r
    }
    return p
}

func saturatingSum(_ xs: [UInt64]) -> UInt64 {
    var s: UInt64 = 0
    for x in xs {
        let (r, o) = s.addingReportingOverflow(x)
        if o { return .max }
        s = r
    }
    return s
}

extension ModelSpec {
    /// Weights and biases of the MLP (saturating; 0 for an invalid spec).
    public var parameterCount: UInt64 {
        guard mlp.count >= 2, mlp.allSatisfy({ $0 >= 1 }) else { return 0 }
        return saturatingSum(zip(mlp, mlp.dropFirst()).map { saturatingSum([saturatingProduct([UInt64($0), UInt64($1)]), UInt64($1)]) })
    }

    /// bytes: the model on one process (weights, a gradient, `states` optimizer state vectors, the reduce's partial
    /// sums) and `batch` rows of activations (forward and backward) through every layer.
    func memoryEstimate(batch: Int, states: UInt64) -> UInt64 {
        let floats = saturatingProduct([parameterCount, 3 + states])
        let widths = saturatingSum(mlp.map { UInt64(max(0, $0)) })
        let activations = saturatingProduct([UInt64(max(0, batch)), widths, 4])
        return saturatingProduct([saturatingSum([floats, activations]), 4])
    }

    func validate(_ path: String, limits: SpecLimits) throws {
        guard mlp.count >= 2 else { throw SpecError(field: path + "mlp", problem: "needs at least input and output widths, got \(mlp)") }
        guard mlp.count - 1 <= limits.layers else { throw limits.exceeded(path + "mlp", mlp.count - 1, limits.layers, key: "layers", unit: " layers") }
        for (i, v) in mlp.enumerated() where v < 1 || v > limits.width {
            throw SpecError(field: path + "mlp[\(i)]", problem: "expected a width between 1 and \(limits.width) (cluster.yaml limits.width), got \(v)")
        }
        guard parameterCount <= UInt64(limits.parameters) else {
            throw limits.exceeded(path + "mlp", parameterCount, limits.parameters, key: "parameters", unit: " parameters")
        }
        guard ["relu", "gelu", "tanh"].contains(activation) else {
            throw SpecError(field: path + "activation", problem: "'\(activation)' is not one of relu, gelu, tanh")
        }
        if let w = weights, w.isEmpty { throw SpecError(field: path + "weights", problem: "empty path") }
    }
}

extension JobSpec {
    /// Every check a spec gets, from YAML, JSON or the wire: fields in range and every size it asks for within
    /// `limits`. Sizes only its files know are checked when they are read (`SpecLimits.checkRows`, `checkMemory`).
    public func validate(limits: SpecLimits = .standard) throws {
        switch self {
        case .mapReduce(let s): try s.validate(limits: limits)
        case .train(let s): try s.validate(limits: limits)
        case .infer(let s): try s.validate(eval: false, limits: limits)
        case .eval(let s): try s.validate(eval: true, limits: limits)
        case .embed(let s): try s.validate(limits: limits)
        }
    }
}

extension Sharding {
    /// How many ranges `ranges(rows:)` makes for `rows` rows; never traps (any `rows`, any count or size).
    public func shardCount(rows: UInt64) -> UInt64 {
        if rows == 0 { return 0 }
        switch self {
        case .count(let n): return Swift.min(UInt64(Swift.max(1, n)), rows)
        case .size(let k):
            let k = Swift.max(1, k)
            return rows / k + (rows % k == 0 ? 0 : 1)
        }
    }

    /// Throws unless `rows` rows make at most `limits.shards` shards.
    public func check(rows: UInt64, limits: SpecLimits) throws {
        let n = shardCount(rows: rows)
        guard n <= UInt64(limits.shards) else {
            let field = if case .size = self { "shard_size" } else { "shards" }
            throw SpecError(field: field, problem: "\(rows) rows give \(n) shards, over the limit of \(limits.shards) (cluster.yaml limits.shards); use a larger shard_size")
        }
    }
}

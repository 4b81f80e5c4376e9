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
    public func exceeded(_ field: String, _ value: some BinaryInteger, _ limit: some BinaryInteger, key: String, unit: String = "") -> SpecError {
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
public func saturatingProduct(_ xs: [UInt64]) -> UInt64 {
    var p: UInt64 = 1
    for x in xs {
        let (r, o) = p.multipliedReportingOverflow(by: x)
        if o { return .max }
        p = r
    }
    return p
}

public func saturatingSum(_ xs: [UInt64]) -> UInt64 {
    var s: UInt64 = 0
    for x in xs {
        let (r, o) = s.addingReportingOverflow(x)
        if o { return .max }
        s = r
    }
    return s
}

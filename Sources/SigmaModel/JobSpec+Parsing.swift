import Foundation
import Yams

/// A job spec could not be accepted: which field, and what was wrong with it.
public struct SpecError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let problem: String
    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }
    public var description: String { "job spec field '\(field)': \(problem)" }
}

/// A job spec file: the job, and how the submitter wants it scheduled (`policy:`, optional).
public struct JobFile: Sendable {
    public var spec: JobSpec
    /// A `SchedulingPolicy` name, or nil for the cluster's policy.
    public var policy: String?
}

extension JobSpec {
    /// Parses a YAML or JSON job spec. Relative `npy` paths are resolved against `baseDirectory`.
    /// A `policy:` key is checked and dropped (see `parseFile` to keep it).
    public static func parse(_ text: String, baseDirectory: String? = nil, limits: SpecLimits = .standard) throws -> JobSpec {
        try parseFile(text, baseDirectory: baseDirectory, limits: limits).spec
    }

    /// A spec as written, without `validate`: for tests and tools that need the value of a spec validation would
    /// refuse (to send it over the wire, say). Structural errors (types, missing and unknown fields) still throw.
    public static func parseUnchecked(_ text: String, baseDirectory: String? = nil) throws -> JobSpec {
        try parseFile(text, baseDirectory: baseDirectory, checking: nil).spec
    }

    /// Parses a job spec file, keeping its `policy:` (scheduling is the submission's, not part of the job).
    /// Every spec is checked by `validate(limits:)`, as one from the wire is.
    public static func parseFile(_ text: String, baseDirectory: String? = nil, limits: SpecLimits = .standard) throws -> JobFile {
        try parseFile(text, baseDirectory: baseDirectory, checking: limits)
    }

    static func parseFile(_ text: String, baseDirectory: String?, checking limits: SpecLimits?) throws -> JobFile {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw SpecError(field: "(document)", problem: "not valid YAML/JSON: \(error)")
        }
        guard let root = node, let map = root.mapping else {
            throw SpecError(field: "(document)", problem: "expected a mapping with at least 'kind'")
        }
        var fields = Fields(map, path: "")
        let kind = try fields.string("kind")
        let policy = try fields.optionalString("policy")
        if let p = policy { _ = try SchedulingPolicy.parse(p) }
        let spec: JobSpec
        switch kind {
        case "map-reduce":
            spec = .mapReduce(try MapReduceSpec.parse(&fields, baseDirectory: baseDirectory))
        case "train":
            spec = .train(try TrainJob.parse(&fields, base: baseDirectory))
        case "infer":
            spec = .infer(try PredictJob.parse(&fields, base: baseDirectory, eval: false))
        case "eval":
            spec = .eval(try PredictJob.parse(&fields, base: baseDirectory, eval: true))
        case "embed":
            spec = .embed(try EmbedJob.parse(&fields, base: baseDirectory))
        default:
            throw SpecError(field: "kind", problem: "unknown job kind '\(kind)'; expected one of: map-reduce, train, infer, eval, embed")
        }
        if let limits { try spec.validate(limits: limits) }
        return JobFile(spec: spec, policy: policy)
    }

    /// Reads a spec file; errors name the file.
    public static func load(path: String, limits: SpecLimits = .standard) throws -> JobSpec {
        try loadFile(path: path, limits: limits).spec
    }

    /// Reads a spec file keeping its `policy:`; errors name the file.
    public static func loadFile(path: String, limits: SpecLimits = .standard) throws -> JobFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SpecError(field: "(file)", problem: "cannot read job spec file '\(path)'")
        }
        let dir = (URL(fileURLWithPath: path).deletingLastPathComponent().path)
        return try parseFile(String(decoding: data, as: UTF8.self), baseDirectory: dir, limits: limits)
    }
}

extension MapReduceSpec {
    static func parse(_ f: inout Fields, baseDirectory: String?) throws -> MapReduceSpec {
        let name = try f.optionalString("name") ?? "map-reduce"
        // input
        guard let inputNode = f.take("input") else { throw SpecError(field: "input", problem: "missing") }
        guard let inputMap = inputNode.mapping else {
            throw SpecError(field: "input", problem: "expected a mapping such as {npy: values.npy} or {generate: uniform, count: 1000}")
        }
        var inp = Fields(inputMap, path: "input.")
        let input: DataSource
        if let p = try inp.optionalString("npy") {
            let path = (p.hasPrefix("/") || baseDirectory == nil) ? p : baseDirectory! + "/" + p
            input = .npy(path: path)
        } else if let gen = try inp.optionalString("generate") {
            guard let count = try inp.optionalUInt("count") else { throw SpecError(field: "input.count", problem: "missing") }
            switch gen {
            case "range":
                input = .range(count: count, start: try inp.optionalDouble("start") ?? 0, step: try inp.optionalDouble("step") ?? 1)
            case "uniform":
                let lo = try inp.optionalDouble("low") ?? 0, hi = try inp.optionalDouble("high") ?? 1
                input = .uniform(count: count, seed: try inp.optionalUInt("seed") ?? 0, low: lo, high: hi)
            case "normal":
                let std = try inp.optionalDouble("std") ?? 1
                input = .normal(count: count, seed: try inp.optionalUInt("seed") ?? 0, mean: try inp.optionalDouble("mean") ?? 0, std: std)
            default:
                throw SpecError(field: "input.generate", problem: "unknown generator '\(gen)'; expected range, uniform or normal")
            }
        } else {
            throw SpecError(field: "input", problem: "needs either 'npy: PATH' or 'generate: range|uniform|normal'")
        }
        try inp.rejectUnknown()

        // map
        var fn = ElementFunction.identity
        if let m = f.take("map") {
            fn = try ElementFunction.parse(m, field: "map")
        }
        // reduce
        guard let r = f.take("reduce") else {
            throw SpecError(field: "reduce", problem: "missing; expected one or more of sum, mean, min, max, count, histogram")
        }
        var reducers: [Reducer] = []
        if let seq = r.sequence {
            for (i, item) in seq.enumerated() { reducers.append(try Reducer.parse(item, field: "reduce[\(i)]")) }
        } else {
            reducers.append(try Reducer.parse(r, field: "reduce"))
        }
        // sharding (its limits are checked by `validate`)
        let shards = try f.optionalUInt("shards")
        let size = try f.optionalUInt("shard_size")
        let sharding: Sharding
        switch (shards, size) {
        case (.some, .some):
            throw SpecError(field: "shards", problem: "give either 'shards' or 'shard_size', not both")
        case (.some(let n), nil): sharding = .count(Int(clamping: n))
        case (nil, .some(let k)): sharding = .size(k)
        case (nil, nil): sharding = .count(64)
        }
        let transport = try InputTransport.parse(f.optionalString("input_transport"))
        if transport == .coordinator, input.generatedCount != nil {
            throw SpecError(field: "input_transport", problem: "applies to an npy input; a generated input has no file to ship")
        }
        try f.rejectUnknown()
        return MapReduceSpec(name: name, input: input, map: fn, reduce: reducers, sharding: sharding, inputTransport: transport)
    }
}

extension ElementFunction {
    static func parse(_ node: Node, field: String) throws -> ElementFunction {
        if let s = node.string, node.scalar != nil {
            switch s {
            case "identity": return .identity
            case "square": return .square
            case "abs": return .abs
            case "affine": throw SpecError(field: field, problem: "affine needs parameters: {affine: {a: 2, b: 1}}")
            default: throw SpecError(field: field, problem: "unknown function '\(s)'; expected identity, square, abs or {affine: {a, b}}")
            }
        }
        if let m = node.mapping, m.count == 1, let key = m.first?.key.string, key == "affine", let params = m.first?.value.mapping {
            var p = Fields(params, path: field + ".affine.")
            let a = try p.optionalDouble("a") ?? 1, b = try p.optionalDouble("b") ?? 0
            try p.rejectUnknown()
            return .affine(a: a, b: b)
        }
        throw SpecError(field: field, problem: "expected identity, square, abs or {affine: {a: NUMBER, b: NUMBER}}")
    }
}

extension Reducer {
    static func parse(_ node: Node, field: String) throws -> Reducer {
        if node.scalar != nil, let s = node.string {
            switch s {
            case "sum": return .sum
            case "mean": return .mean
            case "min": return .min
            case "max": return .max
            case "count": return .count
            case "histogram": throw SpecError(field: field, problem: "histogram needs parameters: {histogram: {bins: 10, low: 0, high: 1}}")
            default: throw SpecError(field: field, problem: "unknown reducer '\(s)'; expected sum, mean, min, max, count or histogram")
            }
        }
        if let m = node.mapping, m.count == 1, m.first?.key.string == "histogram", let params = m.first?.value.mapping {
            var p = Fields(params, path: field + ".histogram.")
            guard let bins = try p.optionalUInt("bins") else { throw SpecError(field: field + ".histogram.bins", problem: "missing") }
            guard let lo = try p.optionalDouble("low") else { throw SpecError(field: field + ".histogram.low", problem: "missing") }
            guard let hi = try p.optionalDouble("high") else { throw SpecError(field: field + ".histogram.high", problem: "missing") }
            try p.rejectUnknown()
            return .histogram(bins: Int(clamping: bins), low: lo, high: hi)
        }
        throw SpecError(field: field, problem: "expected a reducer name or {histogram: {bins, low, high}}")
    }
}

/// A YAML mapping read field by field; whatever is left at the end is an unknown (misspelled) key.
struct Fields {
    private var entries: [(String, Node)]
    let path: String

    init(_ map: Node.Mapping, path: String) {
        entries = map.map { ($0.key.string ?? "\($0.key)", $0.value) }
        self.path = path
    }

    mutating func take(_ key: String) -> Node? {
        guard let i = entries.firstIndex(where: { $0.0 == key }) else { return nil }
        return entries.remove(at: i).1
    }

    func rejectUnknown() throws {
        if let (k, _) = entries.first { throw SpecError(field: path + k, problem: "unknown field") }
    }

    mutating func string(_ key: String) throws -> String {
        guard let v = try optionalString(key) else { throw SpecError(field: path + key, problem: "missing") }
        return v
    }

    mutating func optionalString(_ key: String) throws -> String? {
        guard let n = take(key) else { return nil }
        guard n.scalar != nil, let s = n.string else { throw SpecError(field: path + key, problem: "expected a string") }
        return s
    }

    mutating func optionalDouble(_ key: String) throws -> Double? {
        guard let n = take(key) else { return nil }
        guard n.scalar != nil, let s = n.string, let d = Double(s), d.isFinite else {
            throw SpecError(field: path + key, problem: "expected a finite number, got '\(n.string ?? "\(n)")'")
        }
        return d
    }

    mutating func optionalUInt(_ key: String) throws -> UInt64? {
        guard let n = take(key) else { return nil }
        guard n.scalar != nil, let s = n.string, let v = parseCount(s) else {
            throw SpecError(field: path + key, problem: "expected a non-negative integer (e.g. 1000, 10k, 100M), got '\(n.string ?? "\(n)")'")
        }
        return v
    }

    /// A positive integer, required.
    mutating func count(_ key: String) throws -> UInt64 {
        guard let v = try optionalUInt(key) else { throw SpecError(field: path + key, problem: "missing") }
        guard v > 0 else { throw SpecError(field: path + key, problem: "must be ≥ 1, got 0") }
        return v
    }
}

/// "1000", "1_000", "10k", "100M", "2G" → value.
func parseCount(_ s: String) -> UInt64? {
    var t = s.replacingOccurrences(of: "_", with: "").trimmingCharacters(in: .whitespaces)
    var mult: UInt64 = 1
    if let last = t.last, "kKmMgG".contains(last) {
        mult = (last == "k" || last == "K") ? 1_000 : (last == "m" || last == "M") ? 1_000_000 : 1_000_000_000
        t.removeLast()
    }
    guard let v = UInt64(t) else { return nil }
    let (r, o) = v.multipliedReportingOverflow(by: mult)
    return o ? nil : r
}

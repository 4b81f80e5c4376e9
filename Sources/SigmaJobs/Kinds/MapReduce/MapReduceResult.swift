import Foundation
import SigmaModel

/// The answer to a map-reduce job: the reducers that were asked for and the combined partial they read from.
public struct MapReduceResult: Sendable, Equatable {
    public var reducers: [Reducer]
    public var total: Partial

    public init(reducers: [Reducer], total: Partial) {
        self.reducers = reducers
        self.total = total
    }

    /// Combines shard partials in shard-index order (the order is what makes the result reproducible).
    public static func reduce(_ spec: MapReduceSpec, partials: [Partial]) -> MapReduceResult {
        var total = Partial(bins: spec.histogram?.bins ?? 0)
        for p in partials { total.combine(p) }
        return MapReduceResult(reducers: spec.reduce, total: total)
    }

    public func encode(into w: inout ByteWriter) {
        w.blob(SpecJSON.encode(reducers))
        total.encode(into: &w)
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 128)
        encode(into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> MapReduceResult {
        var r = ByteReader(bytes)
        let reducers = try SpecJSON.decode([Reducer].self, try r.blob("result.reducers", limit: 1 << 16))
        let s = MapReduceSpec(input: .range(count: 1, start: 0, step: 1), reduce: reducers)
        try s.validate(limits: .ceiling)
        let total = try Partial.decode(from: &r, expectedBins: s.histogram?.bins ?? 0)
        try r.finish("result")
        return MapReduceResult(reducers: reducers, total: total)
    }

    /// JSON-ready values: {"sum": 1.5, "histogram": {"bins": 4, "low": 0, "high": 1, "counts": [...]}}.
    public var jsonObject: [String: Any] {
        var out: [String: Any] = [:]
        for r in reducers {
            switch r {
            case .histogram(let bins, let lo, let hi):
                out["histogram"] = ["bins": bins, "low": lo, "high": hi, "counts": total.histogram.map { Int($0) }] as [String: Any]
            case .count:
                out["count"] = Int(total.count)
            default:
                if let v = total.value(r), v.isFinite { out[r.name] = v } else { out[r.name] = NSNull() }
            }
        }
        return out
    }

    /// Human-readable lines, full precision (17 significant digits).
    public var lines: [String] {
        reducers.map { r in
            switch r {
            case .histogram(let bins, let lo, let hi):
                return "histogram(\(bins) bins over [\(lo), \(hi)]) = \(total.histogram)"
            case .count:
                return "count = \(total.count)"
            default:
                return "\(r.name) = " + (total.value(r).map { String(format: "%.17g", $0) } ?? "none (no values)")
            }
        }
    }
}

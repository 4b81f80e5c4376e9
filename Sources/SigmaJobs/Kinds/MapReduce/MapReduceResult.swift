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

    /// `u8 n` reducers, each `u8` (1 sum, 2 mean, 3 min, 4 max, 5 count, 6 histogram + `u32 bins, f64 low, f64 high`),
    /// then the combined partial (docs/protocol.md §5.3): binary, as a tiny job's round trip carries it.
    public func encode(into w: inout ByteWriter) {
        w.u8(UInt8(clamping: reducers.count))
        for r in reducers {
            switch r {
            case .sum: w.u8(1)
            case .mean: w.u8(2)
            case .min: w.u8(3)
            case .max: w.u8(4)
            case .count: w.u8(5)
            case .histogram(let bins, let low, let high): w.u8(6); w.u32(UInt32(clamping: bins)); w.f64(low); w.f64(high)
            }
        }
        total.encode(into: &w)
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 128)
        encode(into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> MapReduceResult {
        var r = ByteReader(bytes)
        var reducers: [Reducer] = []
        for _ in 0..<(try r.u8("result.reducers")) {
            switch try r.u8("result.reducer") {
            case 1: reducers.append(.sum)
            case 2: reducers.append(.mean)
            case 3: reducers.append(.min)
            case 4: reducers.append(.max)
            case 5: reducers.append(.count)
            case 6: reducers.append(.histogram(bins: Int(try r.u32("result.bins")), low: try r.f64("result.low"), high: try r.f64("result.high")))
            case let c: throw ByteReadError(field: "result.reducer", problem: "unknown reducer code \(c)")
            }
        }
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

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
        var total = Partial(spec.shape)
        for p in partials { total.combine(p) }
        return MapReduceResult(reducers: spec.reduce, total: total)
    }

    /// `u8 n` reducers, each `u8` (1 sum, 2 mean, 3 min, 4 max, 5 count, 6 histogram + `u32 bins, f64 low, f64 high`,
    /// 7 variance, 8 top_k + `u32 k`, 9 class_counts, 10 concat), then the combined partial (docs/protocol.md §5.3):
    /// binary, as a tiny job's round trip carries it.
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
            case .variance: w.u8(7)
            case .topK(let k): w.u8(8); w.u32(UInt32(clamping: k))
            case .classCounts: w.u8(9)
            case .concat: w.u8(10)
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
            case 7: reducers.append(.variance)
            case 8: reducers.append(.topK(Int(try r.u32("result.k"))))
            case 9: reducers.append(.classCounts)
            case 10: reducers.append(.concat)
            case let c: throw ByteReadError(field: "result.reducer", problem: "unknown reducer code \(c)")
            }
        }
        let s = MapReduceSpec(input: .range(count: 1, start: 0, step: 1), reduce: reducers)
        try s.validate(limits: .ceiling)
        let total = try Partial.decode(from: &r, shape: s.shape)
        return MapReduceResult(reducers: reducers, total: total)
    }

    /// A class_counts key: an integer value as an integer ("3"), else its shortest decimal form.
    static func key(_ v: Double) -> String { v == v.rounded() && Swift.abs(v) < 1e15 ? String(Int64(v)) : "\(v)" }

    /// The histograms' JSON, in the order asked for.
    var histogramObjects: [[String: Any]] {
        zip(reducers.compactMap { r -> (Int, Double, Double)? in if case .histogram(let b, let lo, let hi) = r { (b, lo, hi) } else { nil } }, total.histograms)
            .map { h, counts in ["bins": h.0, "low": h.1, "high": h.2, "counts": counts.map { Int($0) }] as [String: Any] }
    }

    /// JSON-ready values: {"sum": 1.5, "histogram": {"bins": 4, "low": 0, "high": 1, "counts": [...]}} — with several
    /// histograms, "histograms": [...] in the order asked for.
    public var jsonObject: [String: Any] {
        var out: [String: Any] = [:]
        for r in reducers {
            switch r {
            case .histogram:
                let all = histogramObjects
                if all.count == 1 { out["histogram"] = all[0] } else { out["histograms"] = all }
            case .count:
                out["count"] = Int(total.count)
            case .topK:
                let top = total.top ?? []
                out["top_k"] = ["values": top.map { $0.value.isFinite ? $0.value as Any : "\($0.value)" as Any }, "indices": top.map { Int($0.index) }] as [String: Any]
            case .classCounts:
                out["class_counts"] = Dictionary(uniqueKeysWithValues: (total.classes ?? [:]).map { (Self.key($0.key), Int($0.value)) })
            case .concat:
                out["concat"] = ["file": "concat.npy", "count": total.values?.count ?? 0] as [String: Any]
            default:
                if let v = total.value(r), v.isFinite { out[r.name] = v } else { out[r.name] = NSNull() }
            }
        }
        return out
    }

    /// concat.npy (float64, in input order) when concat was asked for.
    public var files: [(name: String, data: Data)] {
        guard let v = total.values else { return [] }
        var d = Self.npyHeader(count: v.count)
        v.withUnsafeBytes { d.append(contentsOf: $0) }
        return [("concat.npy", d)]
    }

    static func npyHeader(count: Int) -> Data {
        var dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (\(count),), }"
        while (10 + dict.utf8.count + 1) % 64 != 0 { dict += " " }
        dict += "\n"
        var d = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        d.append(contentsOf: withUnsafeBytes(of: UInt16(dict.utf8.count).littleEndian) { Array($0) })
        d.append(contentsOf: Array(dict.utf8))
        return d
    }

    /// Human-readable lines, full precision (17 significant digits).
    public var lines: [String] {
        var histograms = histogramObjects.makeIterator()
        return reducers.map { r in
            switch r {
            case .histogram(let bins, let lo, let hi):
                return "histogram(\(bins) bins over [\(lo), \(hi)]) = \((histograms.next()?["counts"] as? [Int]) ?? [])"
            case .count:
                return "count = \(total.count)"
            case .topK(let k):
                return "top_k(\(k)) = " + (total.top ?? []).map { String(format: "%.17g", $0.value) + " @\($0.index)" }.joined(separator: ", ")
            case .classCounts:
                return "class_counts = " + (total.classes ?? [:]).keys.sorted().map { "\(Self.key($0)): \(total.classes![$0]!)" }.joined(separator: ", ")
            case .concat:
                return "concat = \(total.values?.count ?? 0) values (concat.npy)"
            default:
                return "\(r.name) = " + (total.value(r).map { String(format: "%.17g", $0) } ?? "none (no values)")
            }
        }
    }
}

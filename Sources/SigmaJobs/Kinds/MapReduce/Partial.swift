import SigmaModel

/// The reduction state of one shard (or of several shards combined), always in Float64.
/// Sums are compensated (Neumaier) so shard sums combine to the same value a sequential loop would give
/// within a few ulps; partials are combined in shard-index order, so the result does not depend on which
/// worker ran what or when results arrived.
public struct Partial: Sendable, Equatable {
    public var count: UInt64 = 0
    /// Neumaier sum: the value is `sum + compensation`.
    public var sum: Double = 0
    public var compensation: Double = 0
    public var min: Double = .infinity
    public var max: Double = -.infinity
    /// Values that were NaN; they make sum, mean, min and max NaN (NumPy semantics).
    public var nans: UInt64 = 0
    /// Bin counts when a histogram was requested, else empty.
    public var histogram: [UInt64] = []

    public init(bins: Int = 0) { histogram = [UInt64](repeating: 0, count: bins) }

    public var total: Double { nans > 0 ? .nan : sum + compensation }

    /// Neumaier's compensated addition.
    @inline(__always)
    mutating func add(_ x: Double) {
        let t = sum + x
        if Swift.abs(sum) >= Swift.abs(x) { compensation += (sum - t) + x } else { compensation += (x - t) + sum }
        sum = t
    }

    /// Folds `other` (the next shard in index order) into this one.
    public mutating func combine(_ other: Partial) {
        count += other.count
        nans += other.nans
        add(other.sum)
        add(other.compensation)
        if other.min < min { min = other.min }
        if other.max > max { max = other.max }
        if histogram.count == other.histogram.count {
            for i in histogram.indices { histogram[i] += other.histogram[i] }
        }
    }

    /// The value a reducer reports; `nil` when it has no value (min of nothing).
    public func value(_ r: Reducer) -> Double? {
        switch r {
        case .sum: return total
        case .count: return Double(count)
        case .mean: return count == 0 ? nil : total / Double(count)
        case .min: return nans > 0 ? .nan : (count == 0 ? nil : min)
        case .max: return nans > 0 ? .nan : (count == 0 ? nil : max)
        case .histogram: return nil
        }
    }

    // MARK: wire form (RESULT payload)

    public func encode(into w: inout ByteWriter) {
        w.u64(count); w.f64(sum); w.f64(compensation); w.f64(min); w.f64(max); w.u64(nans)
        w.u32(UInt32(histogram.count))
        for c in histogram { w.u64(c) }
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 52 + 8 * histogram.count)
        encode(into: &w)
        return w.bytes
    }

    /// Decodes a partial, checking it has the bins the job expects.
    public static func decode(from r: inout ByteReader, expectedBins: Int) throws -> Partial {
        var p = Partial()
        p.count = try r.u64("partial.count")
        p.sum = try r.f64("partial.sum")
        p.compensation = try r.f64("partial.compensation")
        p.min = try r.f64("partial.min")
        p.max = try r.f64("partial.max")
        p.nans = try r.u64("partial.nans")
        let bins = Int(try r.u32("partial.bins"))
        guard bins == expectedBins else {
            throw ByteReadError(field: "partial.bins", problem: "expected \(expectedBins) bins, got \(bins)")
        }
        guard r.remaining == bins * 8 else {
            throw ByteReadError(field: "partial.histogram", problem: "expected \(bins * 8) bytes, got \(r.remaining)")
        }
        p.histogram.reserveCapacity(bins)
        for _ in 0..<bins { p.histogram.append(try r.u64("partial.histogram")) }
        return p
    }

    public static func decode(_ frame: Frame, expectedBins: Int) throws -> Partial {
        try frame.read { r in try decode(from: &r, expectedBins: expectedBins) }
    }
}

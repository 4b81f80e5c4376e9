import Foundation
import SigmaModel

/// What a job's partials hold beyond count, min and max: derived from its reducers, the same on every process.
public struct PartialShape: Sendable, Equatable {
    public var histograms: [(bins: Int, low: Double, high: Double)] = []
    /// Σx² exactly (variance): of the values below 2⁵⁰⁰ in magnitude, and apart, Σ(x·2⁻⁵⁴⁴)² of the others.
    public var squares = false
    public var topK: Int? = nil
    public var classCounts = false
    public var concat = false

    public init(_ reducers: [Reducer]) {
        for r in reducers {
            switch r {
            case .histogram(let b, let lo, let hi): histograms.append((b, lo, hi))
            case .variance: squares = true
            case .topK(let k): topK = Swift.max(topK ?? 0, k)
            case .classCounts: classCounts = true
            case .concat: concat = true
            default: break
            }
        }
    }

    public static func == (a: PartialShape, b: PartialShape) -> Bool {
        a.squares == b.squares && a.topK == b.topK && a.classCounts == b.classCounts && a.concat == b.concat
            && a.histograms.count == b.histograms.count
            && zip(a.histograms, b.histograms).allSatisfy { $0.bins == $1.bins && $0.low == $1.low && $0.high == $1.high }
    }
}

/// The reduction state of one shard (or of several shards combined), always in Float64. Sums are exact
/// (`ExactSum`), counts are integers, min and max are exact, the k largest are ordered by (value, then index): so
/// every reducer's result is the same bits whatever the sharding, and whatever worker ran what. Partials still
/// combine in shard order, which `concat` needs (values in input order).
public struct Partial: Sendable, Equatable {
    public var count: UInt64 = 0
    /// Σx, exactly.
    public var sum = ExactSum()
    /// Σx², exactly (each square as the exact sum of two doubles), of the values with |x| < 2⁵⁰⁰; only when
    /// variance is asked for.
    public var squares: ExactSum? = nil
    /// Σ(x·2⁻⁵⁴⁴)², exactly, of the finite values with |x| ≥ 2⁵⁰⁰ — whose squares may leave the double range (beyond
    /// ~1.3e154); scaling by a power of two is exact, so this is their Σx² in units of 2¹⁰⁸⁸. With `squares`.
    public var bigSquares: ExactSum? = nil
    /// Values from which on a square goes to `bigSquares`, and the scale it is taken at.
    public static let bigValue = 0x1p500, bigScale = 0x1p-544
    public var min: Double = .infinity
    public var max: Double = -.infinity
    /// Values that were NaN; they make sum, mean, variance, min and max NaN (NumPy semantics).
    public var nans: UInt64 = 0
    /// Bin counts of each histogram asked for, in order.
    public var histograms: [[UInt64]] = []
    /// The k largest values with their input indices, largest first, ties by the smaller index (NaN not ranked).
    public var top: [Ranked]? = nil
    public var topK: Int = 0
    /// How many times each value occurs (class_counts), by value.
    public var classes: [Double: UInt64]? = nil
    /// The mapped values in input order (concat).
    public var values: [Double]? = nil

    public struct Ranked: Sendable, Equatable {
        public var value: Double
        public var index: UInt64
        public init(value: Double, index: UInt64) { (self.value, self.index) = (value, index) }
        /// Ranks before `other`: larger, or equal and earlier.
        @inline(__always)
        func before(_ other: Ranked) -> Bool { value > other.value || (value == other.value && index < other.index) }
    }

    public init(_ shape: PartialShape = PartialShape([])) {
        histograms = shape.histograms.map { [UInt64](repeating: 0, count: $0.bins) }
        if shape.squares { squares = ExactSum(); bigSquares = ExactSum() }
        if let k = shape.topK { top = []; topK = k }
        if shape.classCounts { classes = [:] }
        if shape.concat { values = [] }
    }

    /// The first histogram's counts (empty when none was asked for).
    public var histogram: [UInt64] { histograms.first ?? [] }

    public var total: Double { nans > 0 ? .nan : sum.value }

    /// Folds `other` (the next shard in index order) into this one.
    /// (Counts add wrapping: a partial is checked for shape on arrival, not for plausible counts, and a worker's
    /// nonsense must not trap the coordinator.)
    public mutating func combine(_ other: Partial) {
        count &+= other.count
        nans &+= other.nans
        sum.add(other.sum)
        if let o = other.squares { squares?.add(o) }
        if let o = other.bigSquares { bigSquares?.add(o) }
        if other.min < min { min = other.min }
        if other.max > max { max = other.max }
        if histograms.count == other.histograms.count {
            for h in histograms.indices where histograms[h].count == other.histograms[h].count {
                for i in histograms[h].indices { histograms[h][i] &+= other.histograms[h][i] }
            }
        }
        if let o = other.top, top != nil { top = Self.merge(top!, o, k: topK) }
        if let o = other.classes { for (v, n) in o { classes?[v, default: 0] &+= n } }
        if let o = other.values { values?.append(contentsOf: o) }
    }

    /// The k first of two ranked lists.
    static func merge(_ a: [Ranked], _ b: [Ranked], k: Int) -> [Ranked] {
        var out: [Ranked] = []
        out.reserveCapacity(Swift.min(k, a.count + b.count))
        var i = 0, j = 0
        while out.count < k && (i < a.count || j < b.count) {
            if j >= b.count || (i < a.count && a[i].before(b[j])) { out.append(a[i]); i += 1 } else { out.append(b[j]); j += 1 }
        }
        return out
    }

    /// The value a reducer reports; `nil` when it has no value (min of nothing), or it is not one number.
    public func value(_ r: Reducer) -> Double? {
        switch r {
        case .sum: return total
        case .count: return Double(count)
        case .mean:
            guard count > 0 else { return nil }
            return nans > 0 ? .nan : Self.quotient(sum.parts, Double(count)).hi
        case .variance:
            guard count > 0, let sq = squares, let big = bigSquares else { return nil }
            return nans > 0 ? .nan : Self.variance(n: Double(count), sum: sum, squares: sq, big: big)
        case .min: return nans > 0 ? .nan : (count == 0 ? nil : min)
        case .max: return nans > 0 ? .nan : (count == 0 ? nil : max)
        case .histogram, .topK, .classCounts, .concat: return nil
        }
    }

    // MARK: double-double arithmetic over the exact sums' leading two doubles (106 bits)

    /// a + b exactly as two doubles (Knuth's two-sum).
    @inline(__always)
    static func twoSum(_ a: Double, _ b: Double) -> (hi: Double, lo: Double) {
        let s = a + b, bb = s - a
        return (s, (a - (s - bb)) + (b - bb))
    }

    /// (hi + lo) / n, as a double-double (hi the correctly rounded leading part of the result).
    static func quotient(_ a: (hi: Double, lo: Double), _ n: Double) -> (hi: Double, lo: Double) {
        guard a.hi.isFinite else { return (a.hi / n, 0) }
        let q = a.hi / n
        let p = q * n, e = (-p).addingProduct(q, n)   // q·n = p + e exactly
        let r = ((a.hi - p) - e) + a.lo
        return twoSum(q, r / n)
    }

    /// Population variance from n, Σx and the two exact sums of squares. Without values of 2⁵⁰⁰ or more, as below;
    /// with some, the same in units of 2¹⁰⁸⁸ (values in units of 2⁵⁴⁴: Σx read 17 digits lower, the small squares 34
    /// lower — what that drops is below 2⁻¹⁰⁰⁰ of the big squares' sum), then scaled back: +∞ only when the variance
    /// itself is beyond the double range.
    static func variance(n: Double, sum: ExactSum, squares: ExactSum, big: ExactSum) -> Double {
        let b = big.parts
        guard b.hi != 0 else { return variance(n: n, sum.parts, squares.parts) }
        let small = squares.scaled(byDigits: 34).parts
        let s = twoSum(b.hi, small.hi)
        let s2 = twoSum(s.hi, s.lo + b.lo + small.lo)
        return variance(n: n, sum.scaled(byDigits: 17).parts, s2) * 0x1p544 * 0x1p544
    }

    /// Population variance (NumPy's `var`, ddof 0) from n, Σx and Σx²: (Σx² − (Σx)²/n) / n in double-double over the
    /// exact sums' leading parts — a function of the exact sums only, so the same bits whatever the split.
    static func variance(n: Double, _ s1: (hi: Double, lo: Double), _ s2: (hi: Double, lo: Double)) -> Double {
        guard s1.hi.isFinite, s2.hi.isFinite else { return .nan }
        let sq = s1.hi * s1.hi, sqErr = (-sq).addingProduct(s1.hi, s1.hi)   // hi² = sq + sqErr exactly
        let square = twoSum(sq, sqErr + 2 * s1.hi * s1.lo)
        let m = quotient(square, n)
        let d = twoSum(s2.hi, -m.hi)
        let diff = twoSum(d.hi, d.lo + s2.lo - m.lo)
        return Swift.max(0, quotient(diff, n).hi)
    }

    // MARK: wire form (RESULT payload)

    public func encode(into w: inout ByteWriter) {
        w.u64(count); w.f64(min); w.f64(max); w.u64(nans)
        sum.encode(into: &w)
        if let s = squares { s.encode(into: &w); (bigSquares ?? ExactSum()).encode(into: &w) }
        for h in histograms { for c in h { w.u64(c) } }
        if let t = top {
            w.u32(UInt32(t.count))
            for r in t { w.f64(r.value); w.u64(r.index) }
        }
        if let c = classes {
            w.u32(UInt32(c.count))
            for v in c.keys.sorted() { w.f64(v); w.u64(c[v]!) }
        }
        if let v = values {
            w.u64(UInt64(v.count))
            for x in v { w.f64(x) }
        }
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 64 + 560 * (squares == nil ? 1 : 3) + 8 * histograms.reduce(0) { $0 + $1.count } + 8 * (values?.count ?? 0))
        encode(into: &w)
        return w.bytes
    }

    /// Decodes a partial of a job of this shape, checking every part is there and in range.
    public static func decode(from r: inout ByteReader, shape: PartialShape, classLimit: Int = 65_536) throws -> Partial {
        var p = Partial(shape)
        p.count = try r.u64("partial.count")
        p.min = try r.f64("partial.min")
        p.max = try r.f64("partial.max")
        p.nans = try r.u64("partial.nans")
        p.sum = try ExactSum.decode(from: &r)
        if shape.squares { p.squares = try ExactSum.decode(from: &r); p.bigSquares = try ExactSum.decode(from: &r) }
        for h in p.histograms.indices {
            for i in p.histograms[h].indices { p.histograms[h][i] = try r.u64("partial.histogram") }
        }
        if let k = shape.topK {
            let n = Int(try r.u32("partial.top"))
            guard n <= k else { throw ByteReadError(field: "partial.top", problem: "\(n) ranked values for k = \(k)") }
            p.top = try (0..<n).map { _ in Ranked(value: try r.f64("partial.top.value"), index: try r.u64("partial.top.index")) }
            guard zip(p.top!, p.top!.dropFirst()).allSatisfy({ $0.before($1) }) else {
                throw ByteReadError(field: "partial.top", problem: "not ordered by value, then index")
            }
        }
        if shape.classCounts {
            let n = Int(try r.u32("partial.classes"))
            guard n <= classLimit else { throw ByteReadError(field: "partial.classes", problem: "\(n) distinct values, more than \(classLimit)") }
            for _ in 0..<n {
                let v = try r.f64("partial.classes.value")
                guard !v.isNaN else { throw ByteReadError(field: "partial.classes", problem: "a NaN class (NaN is not counted)") }
                p.classes![v] = try r.u64("partial.classes.count")
            }
        }
        if shape.concat {
            let n = try r.u64("partial.values")
            guard n <= UInt64(r.remaining / 8) else { throw ByteReadError(field: "partial.values", problem: "\(n) values announced, \(r.remaining) bytes left") }
            p.values = try (0..<Int(n)).map { _ in try r.f64("partial.values") }
        }
        guard r.remaining == 0 else { throw ByteReadError(field: "partial", problem: "\(r.remaining) bytes left over") }
        return p
    }

    public static func decode(_ frame: Frame, shape: PartialShape) throws -> Partial {
        try frame.read { r in try decode(from: &r, shape: shape) }
    }
}

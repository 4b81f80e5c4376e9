import SigmaModel

/// An exact sum of doubles: a fixed-point number wide enough for every finite double (2⁻¹⁰⁷⁴ … 2¹⁰²⁴), held as 66
/// signed 64-bit digits of 32 bits each with carries deferred. Adding a value is exact, so the sum does not depend
/// on the order of the additions or on how they were split into shards and merged; it is read once, correctly
/// rounded (`value`, and `parts` for the leading two doubles). Infinities are counted apart (NumPy: +∞ + −∞ is NaN).
public struct ExactSum: Sendable, Equatable {
    static let digitCount = 66
    /// Digit i weighs 2^(32·i − 1074).
    public private(set) var digits: [Int64]
    /// Additions since the digits were last normalised: each adds less than 2³² to a digit, so 2³⁰ are safe.
    var pending: UInt32 = 0
    public private(set) var positiveInfinities: UInt64 = 0
    public private(set) var negativeInfinities: UInt64 = 0

    public init() { digits = [Int64](repeating: 0, count: Self.digitCount) }

    /// Equal values (whatever carries are pending).
    public static func == (a: ExactSum, b: ExactSum) -> Bool {
        var x = a, y = b
        x.normalize()
        y.normalize()
        return x.digits == y.digits && x.positiveInfinities == y.positiveInfinities && x.negativeInfinities == y.negativeInfinities
    }

    /// Adds x exactly (NaN is the caller's to count: it is ignored here).
    public mutating func add(_ x: Double) {
        switch digits.withUnsafeMutableBufferPointer({ Self.deposit(x, into: $0.baseAddress!) }) {
        case 1: positiveInfinities += 1
        case -1: negativeInfinities += 1
        default: break
        }
        pending += 1
        if pending >= 1 << 30 { normalize() }
    }

    /// x's mantissa added into the digits at `d` (three 32-bit digits, the sign applied without a branch); NaN and
    /// zero leave them as they were. Returns 1 or −1 for +∞ or −∞ (the caller counts them), else 0. The one place a
    /// double becomes digits.
    @inline(__always)
    static func deposit(_ x: Double, into d: UnsafeMutablePointer<Int64>) -> Int {
        let bits = x.bitPattern
        let biased = Int((bits >> 52) & 0x7FF)
        if biased == 0x7FF { return x.isInfinite ? (x > 0 ? 1 : -1) : 0 }
        // x = ±mantissa · 2^(max(biased, 1) − 1075): its lowest bit sits max(biased, 1) − 1 bits above 2⁻¹⁰⁷⁴.
        let mantissa = (bits & 0x000F_FFFF_FFFF_FFFF) | (biased == 0 ? 0 : 1 << 52)
        let offset = max(biased, 1) - 1
        let k = offset >> 5, shift = UInt64(offset & 31)
        let sign = Int64(bitPattern: bits) >> 63   // 0 or −1: (v ^ sign) − sign negates when −1
        // mantissa << shift spans up to 85 bits: three 32-bit digits (Swift's >> of 64 or more gives 0).
        let low = Int64((mantissa << shift) & 0xFFFF_FFFF), mid = Int64((mantissa >> (32 - shift)) & 0xFFFF_FFFF)
        let high = Int64(mantissa >> (64 - shift))
        d[k] &+= (low ^ sign) &- sign
        d[k + 1] &+= (mid ^ sign) &- sign
        d[k + 2] &+= (high ^ sign) &- sign
        return 0
    }

    /// Adds every value that is not NaN — the hot loop: four banks of digits taken in turn (consecutive values of
    /// one magnitude would otherwise wait on each other's stores to the same digit), the sign applied without a
    /// branch, the banks added together at the end, carries deferred.
    public mutating func add(contentsOf values: UnsafeBufferPointer<Double>) {
        if Int(pending) + values.count >= 1 << 30 { normalize() }
        let n = Self.digitCount
        let (plus, minus) = withUnsafeTemporaryAllocation(of: Int64.self, capacity: 4 * n) { banks -> (UInt64, UInt64) in
            let d = banks.baseAddress!
            d.initialize(repeating: 0, count: 4 * n)
            var plus: UInt64 = 0, minus: UInt64 = 0
            @inline(__always) func put(_ x: Double, _ bank: UnsafeMutablePointer<Int64>) {
                let r = Self.deposit(x, into: bank)
                if r != 0 { if r > 0 { plus += 1 } else { minus += 1 } }
            }
            var i = 0
            let count = values.count, p = values.baseAddress
            while i + 4 <= count {
                put(p![i], d); put(p![i + 1], d + n); put(p![i + 2], d + 2 * n); put(p![i + 3], d + 3 * n)
                i += 4
            }
            while i < count { put(p![i], d); i += 1 }
            digits.withUnsafeMutableBufferPointer { out in
                for j in 0..<n { out[j] &+= d[j] &+ d[n + j] &+ d[2 * n + j] &+ d[3 * n + j] }
            }
            return (plus, minus)
        }
        positiveInfinities += plus
        negativeInfinities += minus
        pending += UInt32(values.count)
    }

    /// Adds another exact sum (a later shard's, or an earlier one's: the order does not matter).
    public mutating func add(_ other: ExactSum) {
        normalize()
        var o = other
        o.normalize()
        for i in 0..<Self.digitCount { digits[i] &+= o.digits[i] }
        positiveInfinities &+= o.positiveInfinities
        negativeInfinities &+= o.negativeInfinities
        normalize()
    }

    /// Carries: every digit but the top one into 0..<2³², the top one keeping the sign.
    public mutating func normalize() {
        var carry: Int64 = 0
        for i in 0..<(Self.digitCount - 1) {
            let v = digits[i] &+ carry
            carry = v >> 32            // (arithmetic shift: floor division by 2³²)
            digits[i] = v & 0xFFFF_FFFF
        }
        digits[Self.digitCount - 1] &+= carry
        pending = 0
    }

    /// The sum times 2^(−32·k): its digits moved k down (the k lowest dropped: less than 2⁻¹⁰⁷⁴ after the scaling),
    /// infinities kept. For reading a sum beyond the double range in larger units.
    public func scaled(byDigits k: Int) -> ExactSum {
        precondition(k >= 0 && k < Self.digitCount)
        var s = self
        s.normalize()
        var out = ExactSum()
        for i in 0..<(Self.digitCount - k) { out.digits[i] = s.digits[i + k] }
        out.positiveInfinities = positiveInfinities
        out.negativeInfinities = negativeInfinities
        return out
    }

    /// The sum correctly rounded to a double (±∞ when it overflows, or when infinities were added; NaN for +∞ + −∞).
    public var value: Double { parts.hi }

    /// The sum's leading two doubles: hi correctly rounded, lo the rest correctly rounded (hi + lo carries 106 bits).
    public var parts: (hi: Double, lo: Double) {
        if positiveInfinities > 0 && negativeInfinities > 0 { return (.nan, 0) }
        if positiveInfinities > 0 { return (.infinity, 0) }
        if negativeInfinities > 0 { return (-.infinity, 0) }
        var s = self
        s.normalize()
        let hi = s.rounded()
        guard hi.isFinite else { return (hi, 0) }
        s.add(-hi)
        s.normalize()
        return (hi, s.rounded())
    }

    /// Round to nearest (ties to even) of normalised digits. (A result in the subnormal range may be rounded twice.)
    func rounded() -> Double {
        var d = digits
        let negative = d[Self.digitCount - 1] < 0
        if negative {   // the magnitude: every digit negated, then carried again
            var m = self
            for i in 0..<Self.digitCount { m.digits[i] = 0 &- m.digits[i] }
            m.normalize()
            d = m.digits
        }
        guard let top = d.lastIndex(where: { $0 != 0 }) else { return 0 }
        // 64 leading bits: the top digit (more than 32 bits only past the double range), then the digits below it,
        // and whether anything below those is nonzero (folded into the last bit: 64 ≥ 53 + 2 bits round alike).
        let topValue = UInt64(bitPattern: d[top])
        let topBits = 64 - topValue.leadingZeroBitCount
        var window = topValue, filled = topBits, i = top - 1
        var sticky = false
        while filled < 64 && i >= 0 {
            let take = min(32, 64 - filled), digit = UInt64(bitPattern: d[i])
            window = (window << UInt64(take)) | (digit >> UInt64(32 - take))
            if take < 32 && digit & ((1 << UInt64(32 - take)) - 1) != 0 { sticky = true }
            filled += take
            i -= 1
        }
        while i >= 0 { if d[i] != 0 { sticky = true }; i -= 1 }
        if sticky { window |= 1 }
        // The window's lowest bit weighs 2^(32·top − 1074 + topBits − filled); UInt64 → Double rounds to nearest even.
        let v = Double(sign: .plus, exponent: 32 * top - 1074 + topBits - filled, significand: Double(window))
        return negative ? -v : v
    }

    // MARK: wire form

    /// `u8 flags` (1: negative, 2: infinity counts follow), `u8 lowest, u8 n`, n × `u64` magnitude digits from digit
    /// `lowest` up (each below 2³² but the top one), then `u64 +∞, u64 −∞` when flagged: a sum of similar values is a
    /// few digits, not 66.
    public func encode(into w: inout ByteWriter) {
        var s = self
        s.normalize()
        let negative = s.digits[Self.digitCount - 1] < 0
        if negative {
            for i in 0..<Self.digitCount { s.digits[i] = 0 &- s.digits[i] }
            s.normalize()
        }
        let infinities = positiveInfinities > 0 || negativeInfinities > 0
        w.u8((negative ? 1 : 0) | (infinities ? 2 : 0))
        let lowest = s.digits.firstIndex { $0 != 0 } ?? 0, highest = s.digits.lastIndex { $0 != 0 } ?? -1
        w.u8(UInt8(lowest))
        w.u8(UInt8(max(0, highest - lowest + 1)))
        if highest >= lowest { for i in lowest...highest { w.u64(UInt64(bitPattern: s.digits[i])) } }
        if infinities { w.u64(positiveInfinities); w.u64(negativeInfinities) }
    }

    public static func decode(from r: inout ByteReader) throws -> ExactSum {
        var s = ExactSum()
        let flags = try r.u8("exact.flags")
        guard flags & ~3 == 0 else { throw ByteReadError(field: "exact.flags", problem: "unknown flags \(flags)") }
        let lowest = Int(try r.u8("exact.lowest")), n = Int(try r.u8("exact.digits"))
        guard lowest + n <= digitCount else { throw ByteReadError(field: "exact.digits", problem: "digits \(lowest)..<\(lowest + n) past \(digitCount)") }
        for i in lowest..<(lowest + n) {
            let v = Int64(bitPattern: try r.u64("exact.digits"))
            guard v >= 0, i == digitCount - 1 || v <= 0xFFFF_FFFF else {
                throw ByteReadError(field: "exact.digits", problem: "digit \(i) is out of range")
            }
            s.digits[i] = flags & 1 == 1 ? -v : v
        }
        s.normalize()
        if flags & 2 == 2 {
            s.positiveInfinities = try r.u64("exact.infinities")
            s.negativeInfinities = try r.u64("exact.infinities")
        }
        return s
    }
}

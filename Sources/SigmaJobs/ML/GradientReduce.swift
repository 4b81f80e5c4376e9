import Foundation
import SigmaEngine
import SigmaModel

// The coordinator side of a step's reduce: partials as they arrived, the reduced gradient, subtree values, and
// the element-wise passes over it on the compute lanes.

/// A partial sum as the coordinator holds it until the step's reduce: statistics decoded; float32 values left in
/// the payload they arrived in (possibly a shared-memory segment, released when the last reference goes), values
/// of a lossy transport decoded.
public struct ArrivedPartial: Sendable {
    public enum Values: Sendable {
        case inFrame(Frame, offset: Int, count: Int)
        case decoded([Float])
        /// `count` values of an array from `offset` on, read where they are (a collective step's own partial sums:
        /// the worker's slice of them, not copied out).
        case inArray([Float], offset: Int, count: Int)
    }
    public let values: Values
    public let loss: Double, correct: UInt64, rows: UInt64

    public init(values: Values, loss: Double, correct: UInt64, rows: UInt64) {
        self.values = values
        self.loss = loss
        self.correct = correct
        self.rows = rows
    }

    public init(_ s: GradientSum) { self.init(values: .decoded(s.values), loss: s.loss, correct: s.correct, rows: s.rows) }

    /// The float32 values as raw little-endian bytes (possibly unaligned: read with `loadUnaligned`).
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch values {
        case .inFrame(let f, let offset, let count):
            return try f.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + count * 4])) }
        case .decoded(let v):
            return try v.withUnsafeBytes(body)
        case .inArray(let v, let offset, let count):
            return try v.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[offset * 4..<(offset + count) * 4])) }
        }
    }
}

/// A step's reduced gradient: the additions left of the step's tree (`Term`), not yet made, plus the exact
/// statistics. Read it with `withSumTree` (the additions fused into a consumer's pass, element chunk by chunk) or
/// `materialized()`.
public struct ReducedGradient {
    indirect enum Term {
        case part(Subtree)
        case add(Term, Term)

        var stats: (loss: Double, correct: UInt64, rows: UInt64) {
            switch self {
            case .part(let s): return s.stats
            case .add(let l, let r):
                let (a, b) = (l.stats, r.stats)
                return (a.loss + b.loss, a.correct + b.correct, a.rows + b.rows)
            }
        }
    }
    let root: Term

    public var loss: Double { root.stats.loss }
    public var correct: UInt64 { root.stats.correct }
    public var rows: UInt64 { root.stats.rows }

    /// Additions left (0: the gradient is one partial sum as it is).
    public var additions: Int { withSumTree(\.additions) }

    /// The gradient as a `SumTree` over the partial sums' float32 bytes where they are (payloads, shared-memory
    /// segments, sums made while the step waited): valid inside `body` only.
    public func withSumTree<R>(_ body: (SumTree) throws -> R) rethrows -> R {
        func bind(_ t: Term, _ body: (SumTree) throws -> R) rethrows -> R {
            switch t {
            case .part(let s): return try s.withBytes { try body(.vector($0)) }
            case .add(let l, let r): return try bind(l) { a in try bind(r) { b in try body(.add(a, b)) } }
            }
        }
        return try bind(root, body)
    }

    /// The gradient as an owned sum (every addition made). Call once: it takes the buffers the reduce owns.
    public func materialized() -> GradientSum {
        func made(_ t: Term) -> Subtree {
            switch t {
            case .part(let s): return s
            case .add(let l, let r): return .summed(Subtree.add(made(l), made(r)))
            }
        }
        switch made(root) {
        case .summed(let a): return a.take()
        case .arrived(let p): return p.withBytes { GradientSum(values: Array(floats: $0), loss: p.loss, correct: p.correct, rows: p.rows) }
        }
    }
}

/// A subtree's value during the reduce: one partial as it arrived, or a sum this reduce owns (a class, so adding
/// into it never copies the buffer).
enum Subtree {
    final class Sum {
        var values: [Float], loss: Double, correct: UInt64, rows: UInt64
        init(values: [Float], loss: Double, correct: UInt64, rows: UInt64) {
            self.values = values
            self.loss = loss
            self.correct = correct
            self.rows = rows
        }
        func take() -> GradientSum {
            let v = values
            values = []
            return GradientSum(values: v, loss: loss, correct: correct, rows: rows)
        }
    }
    case arrived(ArrivedPartial)
    case summed(Sum)

    var stats: (loss: Double, correct: UInt64, rows: UInt64) {
        switch self {
        case .arrived(let p): (p.loss, p.correct, p.rows)
        case .summed(let s): (s.loss, s.correct, s.rows)
        }
    }

    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch self {
        case .arrived(let p): try p.withBytes(body)
        case .summed(let s): try s.values.withUnsafeBytes(body)
        }
    }

    /// `l + r`, element by element (float addition is commutative, so writing into whichever side this reduce
    /// owns gives the same bits as `l[i] + r[i]`).
    static func add(_ l: Subtree, _ r: Subtree) -> Sum {
        let (a, b) = (l.stats, r.stats)
        let loss = a.loss + b.loss, correct = a.correct + b.correct, rows = a.rows + b.rows
        func into(_ s: Sum, _ other: ArrivedPartial) -> Sum {
            other.withBytes { q in
                s.values.withUnsafeMutableBufferPointer { o in
                    precondition(q.count == o.count * 4, "partial sums of different sizes")
                    let (o, q) = (Unchecked(o), Unchecked(q))
                    ElementChunks.run(o.v.count) { r in for i in r { o.v[i] += q.v.loadUnaligned(fromByteOffset: i * 4, as: Float.self) } }
                }
            }
            (s.loss, s.correct, s.rows) = (loss, correct, rows)
            return s
        }
        switch (l, r) {
        case (.summed(let s), .arrived(let p)), (.arrived(let p), .summed(let s)):
            return into(s, p)
        case (.summed(let s), .summed(let t)):
            t.values.withUnsafeBufferPointer { q in
                s.values.withUnsafeMutableBufferPointer { o in
                    precondition(q.count == o.count, "partial sums of different sizes")
                    let (o, q) = (Unchecked(o), Unchecked(q))
                    ElementChunks.run(o.v.count) { r in for i in r { o.v[i] += q.v[i] } }
                }
            }
            (s.loss, s.correct, s.rows) = (loss, correct, rows)
            return s
        case (.arrived(let p), .arrived(let q)):
            let values = p.withBytes { x in
                q.withBytes { y in
                    precondition(x.count == y.count, "partial sums of different sizes")
                    return [Float](unsafeUninitializedCapacity: x.count / 4) { o, n in
                        let (out, x, y) = (Unchecked(o), Unchecked(x), Unchecked(y))
                        ElementChunks.run(x.v.count / 4) { r in
                            for i in r {
                                out.v[i] = x.v.loadUnaligned(fromByteOffset: i * 4, as: Float.self) + y.v.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
                            }
                        }
                        n = x.v.count / 4
                    }
                }
            }
            return Sum(values: values, loss: loss, correct: correct, rows: rows)
        }
    }
}

/// An element-wise pass over a step's gradient split into contiguous chunks on the process's compute lanes (at most
/// 8): each element is one addition whichever chunk it falls in, so the bits do not depend on the split. While the
/// coordinator reduces, the workers wait for its next parameters, so their cores are free on a shared host; a
/// `--local --threads N` run uses its N.
enum ElementChunks {
    static var threads: Int { min(8, ComputeLanes.shared.total) }
    static func run(_ count: Int, _ body: @Sendable (Range<Int>) -> Void) {
        splitOverThreads(total: count, threads: threads, minimumPart: 262_144, body)
    }
}

extension Array where Element == Float {
    /// float32 values from raw (possibly unaligned) bytes.
    init(floats bytes: UnsafeRawBufferPointer) {
        self.init(unsafeUninitializedCapacity: bytes.count / 4) { o, n in
            UnsafeMutableRawBufferPointer(o).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<bytes.count / 4 * 4]))
            n = bytes.count / 4
        }
    }
}

extension GradientTransport {
    var bytes: Int { self == .f32 ? 4 : 2 }

    /// float32 → bfloat16, round to nearest even (NaN stays NaN).
    @inline(__always) static func bfloat16(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(b >> 16) | 0x40 }
        return UInt16((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }
}

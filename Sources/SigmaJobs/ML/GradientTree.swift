import Foundation
import SigmaEngine
import SigmaModel

/// A node of the fixed binary tree over a step's micro-batch indices `0..<total`: node (level l, index k) stands for
/// the micro-batches `k·2^l ..< min((k+1)·2^l, total)`. Its value is `left + right` (children at level l−1,
/// indices 2k and 2k+1), or just `left` when the right child starts at or after `total`. Float addition is
/// commutative but not associative; fixing the tree fixes every addition, so the root is the same bits however
/// the micro-batches were split between workers and in whatever order their partial sums arrived.
public struct TreeNode: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let level: UInt8
    public let index: UInt32
    public init(level: UInt8, index: UInt32) {
        self.level = level
        self.index = index
    }
    public static func < (a: TreeNode, b: TreeNode) -> Bool { (a.level, a.index) < (b.level, b.index) }
    public var description: String { "(\(level),\(index))" }

    /// The micro-batches under this node (empty when it starts at or after `total`).
    public func span(total: Int) -> Range<Int> {
        let lo = Int(index) << Int(level)
        return lo..<max(lo, min(lo + (1 << Int(level)), total))
    }
}

/// Partial sum of a range of micro-batches: the gradient sum plus the exact statistics that travel with it.
public struct GradientSum: Sendable, Equatable {
    public var values: [Float]
    public var loss: Double
    public var correct: UInt64
    public var rows: UInt64

    public init(values: [Float], loss: Double, correct: UInt64, rows: UInt64) {
        self.values = values
        self.loss = loss
        self.correct = correct
        self.rows = rows
    }

    /// `a + b`, element by element, in that order.
    public static func + (a: GradientSum, b: GradientSum) -> GradientSum {
        var out = a
        out += b
        return out
    }

    /// `a = a + b` in a's own buffer (no copy when a holds the only reference): the same additions as `+`.
    public static func += (a: inout GradientSum, b: GradientSum) {
        precondition(a.values.count == b.values.count)
        a.values.withUnsafeMutableBufferPointer { o in
            b.values.withUnsafeBufferPointer { q in
                for i in 0..<o.count { o[i] += q[i] }
            }
        }
        a.loss += b.loss
        a.correct += b.correct
        a.rows += b.rows
    }
}

public enum GradientTree {
    /// The level of the root for `total` leaves.
    public static func rootLevel(total: Int) -> UInt8 {
        var l = 0
        while (1 << l) < total { l += 1 }
        return UInt8(l)
    }

    /// The canonical nodes whose spans tile `range` exactly: at each position the highest aligned node that does
    /// not reach past the range's end. Workers return one partial sum per node.
    public static func cover(_ range: Range<Int>, total: Int) -> [TreeNode] {
        precondition(range.lowerBound >= 0 && range.upperBound <= total)
        var out: [TreeNode] = []
        var p = range.lowerBound
        while p < range.upperBound {
            var l = 0
            while true {
                let next = l + 1
                guard p % (1 << next) == 0 else { break }
                let end = min(p + (1 << next), total)
                guard end <= range.upperBound, next <= Int(rootLevel(total: total)) else { break }
                l = next
            }
            let node = TreeNode(level: UInt8(l), index: UInt32(p >> l))
            out.append(node)
            p = node.span(total: total).upperBound
        }
        return out
    }

    /// The value of `node`, from leaves computed on demand (a worker's view).
    public static func sum(_ node: TreeNode, total: Int, leaf: (Int) throws -> GradientSum) rethrows -> GradientSum {
        if node.level == 0 { return try leaf(Int(node.index)) }
        let left = TreeNode(level: node.level - 1, index: node.index * 2)
        let right = TreeNode(level: node.level - 1, index: node.index * 2 + 1)
        var l = try sum(left, total: total, leaf: leaf)
        guard right.span(total: total).lowerBound < total else { return l }
        l += try sum(right, total: total, leaf: leaf)   // (in l's buffer: a step's gradient is megabytes)
        return l
    }

    /// Nodes to compute on parallel lanes: `nodes` (a cover), the widest one split into its children until there
    /// are at least `lanes` nodes or only leaves are left. Each is a whole subtree, so summing them back up the tree
    /// (`sum(_:total:known:)`) makes the same additions as computing the cover on one thread.
    public static func lanes(_ nodes: [TreeNode], total: Int, lanes: Int) -> [TreeNode] {
        var out = nodes
        while out.count < lanes {
            guard let k = out.indices.filter({ out[$0].level > 0 }).max(by: { out[$0].span(total: total).count < out[$1].span(total: total).count })
            else { break }
            let n = out[k]
            let left = TreeNode(level: n.level - 1, index: n.index * 2)
            let right = TreeNode(level: n.level - 1, index: n.index * 2 + 1)
            out.replaceSubrange(k...k, with: right.span(total: total).lowerBound < total ? [left, right] : [left])
        }
        return out
    }

    /// The value of `node` from subtree values already computed (`known`), added up the tree in its fixed order.
    public static func sum(_ node: TreeNode, total: Int, known: [TreeNode: GradientSum]) -> GradientSum {
        if let v = known[node] { return v }
        precondition(node.level > 0, "no value for leaf \(node)")
        let left = TreeNode(level: node.level - 1, index: node.index * 2)
        let right = TreeNode(level: node.level - 1, index: node.index * 2 + 1)
        var l = sum(left, total: total, known: known)
        guard right.span(total: total).lowerBound < total else { return l }
        l += sum(right, total: total, known: known)
        return l
    }

    /// The root, completed from partial sums that tile `0..<total`. An error names the first micro-batch no
    /// partial covers.
    public static func root(from parts: [TreeNode: GradientSum], total: Int) throws -> GradientSum {
        try root(from: parts.mapValues(ArrivedPartial.init), total: total)
    }

    /// The root, completed from partial sums as they arrived (the coordinator's view). An error names the first
    /// micro-batch no partial covers.
    public static func root(from parts: [TreeNode: ArrivedPartial], total: Int) throws -> GradientSum {
        try reduce(parts, total: total).materialized()
    }

    /// Adds up what has arrived as far as it can, from `node` (just stored) toward the root: while the node's sibling
    /// is there too, the two become their parent (`left + right`, the tree's own addition; a parent without a right
    /// child is its left child). Called as each shard's partial sums arrive, but the step's last: so by the time the
    /// last one is in, only the additions on its way up are left, and the step's reduce leaves them to the
    /// optimizer's pass (`reduce`) — the others were done while the coordinator waited for it. Never forms the root.
    /// Same additions, same bits; the children's payloads (shared-memory segments) are let go as soon as they are added.
    public static func combine(_ parts: inout [TreeNode: ArrivedPartial], from node: TreeNode, total: Int) {
        let root = Int(rootLevel(total: total))
        var n = node
        while Int(n.level) + 1 < root {
            let parent = TreeNode(level: n.level + 1, index: n.index / 2)
            let left = TreeNode(level: n.level, index: parent.index * 2)
            let right = TreeNode(level: n.level, index: parent.index * 2 + 1)
            guard parts[left] != nil else { return }
            if right.span(total: total).lowerBound < total {
                guard parts[right] != nil else { return }
                let l = parts.removeValue(forKey: left)!, r = parts.removeValue(forKey: right)!
                let lhs: Subtree
                if case .decoded(let v) = l.values {
                    lhs = .summed(Subtree.Sum(values: v, loss: l.loss, correct: l.correct, rows: l.rows))   // (added into in place)
                } else {
                    lhs = .arrived(l)
                }
                let s = Subtree.add(lhs, .arrived(r)).take()
                parts[parent] = ArrivedPartial(s)
            } else {
                parts[parent] = parts.removeValue(forKey: left)!
            }
            n = parent
        }
    }

    /// The additions left of the step's tree over the partial sums as they arrived, not yet made: the consumer
    /// makes them inside its own pass (the optimizer's, `ReducedGradient.withSumTree`), each reading its operands
    /// where they are (payloads, shared-memory segments), so a step's reduce costs no pass of its own. Same
    /// additions in the same tree, so the same bits. An error names the first micro-batch no partial covers.
    public static func reduce(_ parts: [TreeNode: ArrivedPartial], total: Int) throws -> ReducedGradient {
        struct Missing: Error, CustomStringConvertible {
            let index: Int
            var description: String { "no partial sum covers micro-batch \(index)" }
        }
        func value(_ n: TreeNode) throws -> ReducedGradient.Term {
            if let v = parts[n] { return .part(.arrived(v)) }
            if n.level == 0 { throw Missing(index: Int(n.index)) }
            let left = TreeNode(level: n.level - 1, index: n.index * 2)
            let right = TreeNode(level: n.level - 1, index: n.index * 2 + 1)
            let l = try value(left)
            guard right.span(total: total).lowerBound < total else { return l }
            return .add(l, try value(right))
        }
        return ReducedGradient(root: try value(TreeNode(level: rootLevel(total: total), index: 0)))
    }

    // MARK: wire form

    /// `u32 nodes`, then per node: `u8 level, 3 zero bytes, u32 index, f64 loss, u64 correct, u64 rows, u32 n,
    /// n values` — float32 (4-byte aligned in the payload, so a worker's backward pass writes them in place), or
    /// with a lossy `transport` bfloat16 / float16 (2 bytes each, rounded to nearest even).
    /// Written straight into the frame that goes on the wire (gradients are megabytes: one copy, no regrowth).
    /// Throws when a value does not fit float16 (|x| > 65504): bf16 keeps float32's range.
    public static func encode(_ parts: [(TreeNode, GradientSum)], transport: GradientTransport = .f32) throws -> Frame {
        try encode(nodes: parts.map { ($0.0, $0.1.values.count) }, transport: transport) { k, dst in
            let s = parts[k].1
            switch transport {
            case .f32:
                s.values.withUnsafeBytes { dst.copyMemory(from: $0) }
            case .bf16:
                let out = dst.bindMemory(to: UInt16.self)
                s.values.withUnsafeBufferPointer { v in for i in 0..<v.count { out[i] = GradientTransport.bfloat16(v[i]).littleEndian } }
            case .fp16:
                let out = dst.bindMemory(to: UInt16.self)
                var overflow: Float? = nil
                s.values.withUnsafeBufferPointer { v in
                    for i in 0..<v.count {
                        let h = Float16(v[i])
                        if !h.isFinite && v[i].isFinite && overflow == nil { overflow = v[i] }
                        out[i] = h.bitPattern.littleEndian
                    }
                }
                if let x = overflow {
                    throw JobError("gradient_transport fp16: a gradient sum (\(x)) is beyond float16's range (±65504); use bf16 or f32")
                }
            }
            return (s.loss, s.correct, s.rows)
        }
    }

    /// Bytes before each node's values: level, padding, index, loss, correct, rows, count.
    static let nodeHeader = 36

    /// The same wire form (float32) for `nodes`, each node's values written straight into the frame by `fill`,
    /// which returns the node's statistics: a worker's backward pass writes its gradients into the message
    /// itself, with no intermediate vector.
    public static func encode(nodes: [TreeNode], parameters: Int,
                              fill: (TreeNode, UnsafeMutableRawBufferPointer) throws -> (loss: Double, correct: UInt64, rows: UInt64)) throws -> Frame {
        try encode(nodes: nodes.map { ($0, parameters) }, transport: .f32) { k, dst in try fill(nodes[k], dst) }
    }

    /// The one writer of the wire form: node k's `count` values (in `transport`'s width) written by `fill` into
    /// the frame, its header after, from the statistics `fill` returns.
    private static func encode(nodes: [(TreeNode, Int)], transport: GradientTransport,
                               fill: (Int, UnsafeMutableRawBufferPointer) throws -> (loss: Double, correct: UInt64, rows: UInt64)) throws -> Frame {
        try Frame(shareable: nodes.reduce(4) { $0 + nodeHeader + $1.1 * transport.bytes }) { buf in
            var o = 0
            func put<T: FixedWidthInteger>(_ v: T) {
                withUnsafeBytes(of: v.littleEndian) { buf.baseAddress!.advanced(by: o).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                o += MemoryLayout<T>.size
            }
            put(UInt32(nodes.count))
            for (k, (n, count)) in nodes.enumerated() {
                let header = o, values = o + nodeHeader, end = values + count * transport.bytes
                let s = try fill(k, UnsafeMutableRawBufferPointer(rebasing: buf[values..<end]))
                o = header
                put(n.level); put(UInt8(0)); put(UInt16(0))
                put(n.index); put(s.loss.bitPattern); put(s.correct); put(s.rows); put(UInt32(count))
                o = end
            }
        }
    }

    /// Decodes a worker's partial sums and checks they are exactly the cover of the shard's range, each with
    /// `parameters` values.
    public static func decode(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, total: Int, parameters: Int,
                              transport: GradientTransport = .f32) throws -> [(TreeNode, GradientSum)] {
        try parse(bytes, range: range, total: total, parameters: parameters, transport: transport).map { n, p in
            (n, GradientSum(values: p.decoded ?? Array(floats: UnsafeRawBufferPointer(rebasing: bytes[p.offset..<p.offset + parameters * 4])),
                            loss: p.loss, correct: p.correct, rows: p.rows))
        }
    }

    /// The same checks, keeping float32 values where they are in `payload` (no copy; the partials hold the frame).
    public static func decode(_ payload: Frame, range: Range<Int>, total: Int, parameters: Int,
                              transport: GradientTransport = .f32) throws -> [(TreeNode, ArrivedPartial)] {
        try payload.withUnsafeBytes { bytes in
            try parse(bytes, range: range, total: total, parameters: parameters, transport: transport).map { n, p in
                let values = p.decoded.map { ArrivedPartial.Values.decoded($0) } ?? .inFrame(payload, offset: p.offset, count: parameters)
                return (n, ArrivedPartial(values: values, loss: p.loss, correct: p.correct, rows: p.rows))
            }
        }
    }

    /// One node's statistics, and where its float32 values start (lossy transports: the values, decoded).
    private struct Parsed { var loss: Double, correct: UInt64, rows: UInt64, offset: Int, decoded: [Float]? }

    private static func parse(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, total: Int, parameters: Int,
                              transport: GradientTransport) throws -> [(TreeNode, Parsed)] {
        var r = ByteReader(bytes)
        let expected = cover(range, total: total)
        let n = try r.u32("partials.count")
        guard Int(n) == expected.count else {
            throw ByteReadError(field: "partials.count", problem: "\(n) partial sums; micro-batches \(range) need \(expected.count)")
        }
        var out: [(TreeNode, Parsed)] = []
        for e in expected {
            let level = try r.u8("partial.level")
            guard try r.u8("partial.padding") == 0, try r.u16("partial.padding") == 0 else {
                throw ByteReadError(field: "partial.padding", problem: "the 3 bytes after the level must be zero")
            }
            let node = TreeNode(level: level, index: try r.u32("partial.index"))
            guard node == e else { throw ByteReadError(field: "partial.node", problem: "got node \(node), expected \(e)") }
            let loss = try r.f64("partial.loss"), correct = try r.u64("partial.correct"), rows = try r.u64("partial.rows")
            let count = try r.u32("partial.values")
            guard Int(count) == parameters else {
                throw ByteReadError(field: "partial.values", problem: "\(count) gradient values; the model has \(parameters) parameters")
            }
            let offset = r.offset
            var decoded: [Float]? = nil
            switch transport {
            case .f32: _ = try r.bytes(Int(count) * 4, "partial.values")
            case .bf16, .fp16:
                let b = try r.bytes(Int(count) * 2, "partial.values")
                decoded = [Float](unsafeUninitializedCapacity: Int(count)) { dst, initialized in
                    // (one loop per format, without a branch inside: the bf16 one vectorises)
                    if transport == .bf16 {
                        for i in 0..<Int(count) {
                            dst[i] = Float(bitPattern: UInt32(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) << 16)
                        }
                    } else {
                        for i in 0..<Int(count) {
                            dst[i] = Float(Float16(bitPattern: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))))
                        }
                    }
                    initialized = Int(count)
                }
            }
            guard loss.isFinite else { throw ByteReadError(field: "partial.loss", problem: "not finite (\(loss)); training diverged") }
            out.append((node, Parsed(loss: loss, correct: correct, rows: rows, offset: offset, decoded: decoded)))
        }
        try r.finish("partials")
        return out
    }
}

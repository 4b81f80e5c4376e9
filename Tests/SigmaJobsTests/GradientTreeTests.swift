import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

@Suite struct GradientTreeTests {
    /// Leaves with values of very different magnitudes, so that a different association changes the bits.
    static func leaf(_ j: Int) -> GradientSum {
        var rng = SplitMix(seed: UInt64(j) &* 7919 &+ 1)
        let values = (0..<64).map { _ in Float(rng.unit() - 0.5) * Float(pow(10.0, Double(Int(rng.unit() * 12) - 6))) }
        return GradientSum(values: values, loss: rng.unit() * 1e3, correct: UInt64(j % 5), rows: 8)
    }

    /// Any split of the micro-batches into contiguous ranges, with partials arriving in any order, gives the same
    /// root bits as one worker computing everything — and a plain left-to-right sum does not (the test can fail).
    @Test func rootIsBitwiseIndependentOfSplitAndArrivalOrder() throws {
        var rng = SplitMix(seed: 42)
        for total in [1, 2, 3, 5, 8, 13, 64, 100, 257] {
            let whole = try GradientTree.root(from: Dictionary(uniqueKeysWithValues: GradientTree.cover(0..<total, total: total).map {
                ($0, GradientTree.sum($0, total: total, leaf: Self.leaf))
            }), total: total)
            for _ in 0..<20 {
                // A random split into contiguous ranges.
                var cuts = Set((0..<Int(rng.unit() * 6)).map { _ in Int(rng.unit() * Double(total)) })
                cuts.insert(0)
                let starts = cuts.sorted()
                var parts: [(TreeNode, GradientSum)] = []
                var inPlace: [(TreeNode, ArrivedPartial)] = []
                for (k, s) in starts.enumerated() {
                    let e = k + 1 < starts.count ? starts[k + 1] : total
                    let nodes = GradientTree.cover(s..<e, total: total)
                    // The cover tiles the range exactly.
                    #expect(nodes.flatMap { Array($0.span(total: total)) } == Array(s..<e))
                    // Through the wire form, as a worker would send it.
                    let bytes = try GradientTree.encode(nodes.map { ($0, GradientTree.sum($0, total: total, leaf: Self.leaf)) }).bytes
                    parts += try bytes.withUnsafeBytes { try GradientTree.decode($0, range: s..<e, total: total, parameters: 64) }
                    // The coordinator's way: values left in the payload (at unaligned offsets) until the reduce.
                    inPlace += try GradientTree.decode(Frame(bytes), range: s..<e, total: total, parameters: 64)
                }
                parts.shuffle(using: &rng)
                let root = try GradientTree.root(from: Dictionary(uniqueKeysWithValues: parts), total: total)
                #expect(root.values.map(\.bitPattern) == whole.values.map(\.bitPattern), "total \(total), split at \(starts)")
                // As the coordinator keeps them: added up toward the root as each arrives, in shuffled order.
                inPlace.shuffle(using: &rng)
                var combined: [TreeNode: ArrivedPartial] = [:]
                for (n, p) in inPlace {
                    combined[n] = p
                    GradientTree.combine(&combined, from: n, total: total)
                }
                let rootCombined = try GradientTree.root(from: combined, total: total)
                #expect(rootCombined.values.map(\.bitPattern) == whole.values.map(\.bitPattern), "combined: total \(total), split at \(starts)")
                #expect(rootCombined.loss.bitPattern == whole.loss.bitPattern && rootCombined.correct == whole.correct && rootCombined.rows == whole.rows)
                // Everything is added up but the root's own addition, which is left to the optimizer: the root's two
                // children remain (or the root itself, when one worker's shard covered the whole step).
                if starts.count > 1 {
                    #expect(combined[TreeNode(level: GradientTree.rootLevel(total: total), index: 0)] == nil)
                    #expect(combined.count <= 2 && combined.keys.allSatisfy { Int($0.level) + 1 == Int(GradientTree.rootLevel(total: total)) },
                            "total \(total), split at \(starts): \(combined.keys.sorted())")
                } else {
                    #expect(combined.count == 1)
                }
                let rootInPlace = try GradientTree.root(from: Dictionary(uniqueKeysWithValues: inPlace), total: total)
                #expect(rootInPlace.values.map(\.bitPattern) == whole.values.map(\.bitPattern), "in place: total \(total), split at \(starts)")
                #expect(rootInPlace.loss.bitPattern == whole.loss.bitPattern && rootInPlace.correct == whole.correct)
                #expect(root.loss.bitPattern == whole.loss.bitPattern && root.rows == UInt64(8 * total))
            }
        }
        // A sequential sum associates differently: for these leaves it gives other bits, so the check above is real.
        let total = 100
        let seq = (1..<total).reduce(Self.leaf(0)) { $0 + Self.leaf($1) }
        let tree = GradientTree.sum(TreeNode(level: GradientTree.rootLevel(total: total), index: 0), total: total, leaf: Self.leaf)
        #expect(seq.values.map(\.bitPattern) != tree.values.map(\.bitPattern))
    }

    /// The coordinator's training step: shards' partial sums added up the tree as they arrive, but the step's last,
    /// whose additions up the tree are left to the optimizer's one pass (`withSumTree`: made chunk by chunk inside
    /// the SGD pass, on 2 threads) — the same new weights and velocity, bit for bit, as setting the whole root as the
    /// gradient and calling `step`, for any split and arrival order (several additions left, chunks and threads cut).
    @Test func theOptimizersPassMakesTheAdditionsLeftBitwise() throws {
        let shapes = [[50, 60], [70_003]]   // more than one thread's and one chunk's worth; not a multiple of 4
        let n = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        func leaf(_ j: Int) -> GradientSum {
            var rng = SplitMix(seed: UInt64(j) &* 104_729 &+ 3)
            let values = (0..<n).map { _ in Float(rng.unit() - 0.5) * Float(pow(10.0, Double(Int(rng.unit() * 12) - 6))) }
            return GradientSum(values: values, loss: rng.unit(), correct: 0, rows: 8)
        }
        func params() -> [Parameter] {
            shapes.enumerated().map { k, shape in
                Parameter("p\(k)", Tensor(shape: shape, (0..<shape.reduce(1, *)).map { Float(sin(Double($0 + k))) }))
            }
        }
        var rng = SplitMix(seed: 11)
        var mostLeft = 0
        for total in [2, 5, 16, 33] {
            let leaves = (0..<total).map(leaf)
            let whole = try GradientTree.root(from: Dictionary(uniqueKeysWithValues: GradientTree.cover(0..<total, total: total).map {
                ($0, GradientTree.sum($0, total: total) { leaves[$0] })
            }), total: total)
            for _ in 0..<4 {
                var cuts = Set((0..<(1 + Int(rng.unit() * 7))).map { _ in Int(rng.unit() * Double(total)) })
                cuts.insert(0)
                let starts = cuts.sorted()
                var shards: [[(TreeNode, ArrivedPartial)]] = try starts.indices.map { k in
                    let r = starts[k]..<(k + 1 < starts.count ? starts[k + 1] : total)
                    let nodes = GradientTree.cover(r, total: total)
                    let frame = try GradientTree.encode(nodes.map { ($0, GradientTree.sum($0, total: total) { leaves[$0] }) })
                    return try GradientTree.decode(frame, range: r, total: total, parameters: n)
                }
                shards.shuffle(using: &rng)
                var parts: [TreeNode: ArrivedPartial] = [:]
                for (k, shard) in shards.enumerated() {
                    for (node, p) in shard {
                        parts[node] = p
                        if k + 1 < shards.count { GradientTree.combine(&parts, from: node, total: total) }
                    }
                }
                let reduced = try GradientTree.reduce(parts, total: total)
                mostLeft = max(mostLeft, reduced.additions)
                #expect(reduced.rows == whole.rows && reduced.loss.bitPattern == whole.loss.bitPattern)
                let rows = Float(whole.rows)
                let (reference, fused) = (params(), params())
                let (a, b) = (SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01), SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01))
                var offset = 0
                for p in reference {
                    let o = offset
                    p.grad = Tensor(shape: p.value.shape, (0..<p.value.count).map { whole.values[o + $0] / rows })
                    offset += p.value.count
                }
                a.step(reference)
                var out = [Float](repeating: 0, count: n)
                out.withUnsafeMutableBytes { o in reduced.withSumTree { b.step(fused, sumOf: $0, divisor: rows, writingTo: o, threads: 2) } }
                let expected = reference.flatMap { $0.value.scalars }
                let differing = zip(out, expected).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "total \(total), split at \(starts), \(reduced.additions) additions left: \(differing) of \(n) weights differ")
            }
        }
        #expect(mostLeft >= 3, "some split left several additions to the pass")
    }

    @Test func malformedPartialsAreRejectedNamingTheProblem() throws {
        let total = 10
        let good = try GradientTree.encode(GradientTree.cover(2..<7, total: total).map { ($0, GradientTree.sum($0, total: total, leaf: Self.leaf)) }).bytes
        // Wrong range claimed, wrong parameter count, truncation, trailing bytes.
        #expect(throws: ByteReadError.self) { try good.withUnsafeBytes { try GradientTree.decode($0, range: 2..<8, total: total, parameters: 64) } }
        #expect(throws: ByteReadError.self) { try good.withUnsafeBytes { try GradientTree.decode($0, range: 2..<7, total: total, parameters: 63) } }
        for cut in [0, 3, 20, good.count - 1] {
            #expect(throws: ByteReadError.self) { try Array(good.prefix(cut)).withUnsafeBytes { try GradientTree.decode($0, range: 2..<7, total: total, parameters: 64) } }
        }
        #expect(throws: ByteReadError.self) { try (good + [0]).withUnsafeBytes { try GradientTree.decode($0, range: 2..<7, total: total, parameters: 64) } }
        // Non-zero padding after the first node's level (bytes 5…7: after u32 count and u8 level).
        for k in 5...7 {
            var bad = good
            bad[k] = 1
            #expect { try bad.withUnsafeBytes { try GradientTree.decode($0, range: 2..<7, total: total, parameters: 64) } } throws: {
                "\($0)".contains("padding")
            }
        }
        // A partial set that does not tile the step names the missing micro-batch.
        let some = GradientTree.cover(0..<4, total: total).map { ($0, GradientTree.sum($0, total: total, leaf: Self.leaf)) }
        #expect { try GradientTree.root(from: Dictionary(uniqueKeysWithValues: some), total: total) } throws: { "\($0)".contains("micro-batch 4") }
    }
}


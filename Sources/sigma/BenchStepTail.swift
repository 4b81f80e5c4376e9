import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaTransport

/// The coordinator's end of a training step, alone — no workers, no sockets: the partial sums of W equal shards of
/// the bench model's step (MLP 256-1024-1024-10, 32 micro-batches) as their payloads hold them, all but the last
/// shard's added up the tree as they would have arrived (not timed); then, timed, what is left once the last is
/// in — the additions on its way up the tree and the SGD pass that writes the next PARAMS. Two ways, alternated in
/// the same run: each addition a pass over the whole gradient before the SGD pass (as the coordinator did before
/// 2026-12-05), and the additions made inside the SGD pass, chunk by chunk (as it does now). Same bits either way.
enum BenchStepTail {
    static func run(runs: Int, workerCounts: [Int]) throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        ComputeLanes.shared.configure(total: cores)   // (as the coordinator: its host's cores)
        let threads = min(8, cores)
        let model = Sequential.mlp([256, 1024, 1024, 10], seed: 1)
        let params = model.parameters
        let n = params.reduce(0) { $0 + $1.value.count }
        let total = 32
        print("# sigma bench step-tail — \(BLASKernels.cpuModel(cpuinfo: BLASKernels.procCPUInfo)), \(cores) cores; the coordinator's end of a training step")
        print("# bench model MLP 256-1024-1024-10 (\(n) parameters, \(n * 4 / 1_000_000) MB per gradient), \(total) micro-batches split evenly over W shards;")
        print("# the last shard to arrive is the one that leaves the most additions; SGD momentum 0.9 on \(threads) threads; medians of \(runs)")
        print("")
        print("| workers | additions left | additions as passes, then the SGD pass | additions inside the SGD pass | ratio |")
        print("|---|---|---|---|---|")
        let sgd = SGD(learningRate: 0.01, momentum: 0.9)
        var out = [Float](repeating: 0, count: n)
        for w in workerCounts {
            var start = 0
            let ranges: [Range<Int>] = proportionalSplit(total, weights: Array(repeating: 1, count: w)).compactMap { c in
                defer { start += c }
                return c > 0 ? start..<start + c : nil
            }
            // Which shard last leaves the most additions (found on one-element partial sums: the tree's shape alone).
            // The shards before the last, added up the tree as they arrived.
            func combined(except last: Int, _ partial: (Range<Int>) throws -> [(TreeNode, ArrivedPartial)]) throws -> [TreeNode: ArrivedPartial] {
                var parts: [TreeNode: ArrivedPartial] = [:]
                for (k, r) in ranges.enumerated() where k != last {
                    for (node, p) in try partial(r) { parts[node] = p; GradientTree.combine(&parts, from: node, total: total) }
                }
                return parts
            }
            // Then the last: `combining`, added up the tree on arrival too, a pass over the whole gradient per addition
            // (the coordinator before 2026-12-05), the root's addition left to the SGD pass; else only stored.
            func reduced(_ before: [TreeNode: ArrivedPartial], last: Int, combining: Bool,
                         _ partial: (Range<Int>) throws -> [(TreeNode, ArrivedPartial)]) throws -> ReducedGradient {
                var parts = before
                for (node, p) in try partial(ranges[last]) {
                    parts[node] = p
                    if combining { GradientTree.combine(&parts, from: node, total: total) }
                }
                return try GradientTree.reduce(parts, total: total)
            }
            func additionsLeft(last: Int, _ partial: (Range<Int>) throws -> [(TreeNode, ArrivedPartial)]) throws -> Int {
                try reduced(combined(except: last, partial), last: last, combining: false, partial).additions
            }
            func shape(_ r: Range<Int>) -> [(TreeNode, ArrivedPartial)] {
                GradientTree.cover(r, total: total).map { ($0, ArrivedPartial(GradientSum(values: [1], loss: 0, correct: 0, rows: 1))) }
            }
            let last = try ranges.indices.max { try additionsLeft(last: $0, shape) < additionsLeft(last: $1, shape) }!
            // The shards' payloads, as they arrive on the wire (values in place: the reduce reads them there).
            let payloads = try ranges.map { r in
                try GradientTree.encode(GradientTree.cover(r, total: total).map { node in
                    (node, GradientSum(values: (0..<n).map { Float(($0 &* 7919 &+ Int(node.index)) % 2003) * 1e-4 - 0.1 }, loss: 1, correct: 0, rows: 64))
                })
            }
            let byRange = Dictionary(uniqueKeysWithValues: zip(ranges.map(\.lowerBound), payloads))
            func arrived(_ r: Range<Int>) throws -> [(TreeNode, ArrivedPartial)] {
                try GradientTree.decode(byRange[r.lowerBound]!, range: r, total: total, parameters: n)
            }
            var passes: [Double] = [], fused: [Double] = [], left = 0
            for k in 0..<(runs + 1) {   // (the first round warms up, untimed)
                for asPasses in k % 2 == 0 ? [true, false] : [false, true] {   // (either first in turn)
                    let before = try combined(except: last, arrived)   // (not timed)
                    let t0 = monotonicNanos()
                    let r = try reduced(before, last: last, combining: asPasses, arrived)
                    if !asPasses { left = r.additions }
                    out.withUnsafeMutableBytes { o in
                        r.withSumTree { sgd.step(params, sumOf: $0, divisor: Float(r.rows), writingTo: o, threads: threads) }
                    }
                    let ms = Double(monotonicNanos() - t0) / 1e6
                    if k > 0 { if asPasses { passes.append(ms) } else { fused.append(ms) } }
                }
            }
            print(String(format: "| %d | %d | %.2f ms | %.2f ms | %.2f× |", w, left, median(passes), median(fused), median(passes) / median(fused)))
        }
        print("")
        print("As passes, each addition reads its two operands and writes a buffer the size of the gradient (a fresh one")
        print("when both operands are payloads); inside the SGD pass, the sums stay in a 2,048-element buffer per thread.")
        try adam(runs: runs, workers: workerCounts.max() ?? 16, threads: threads)
    }

    /// The same end of a step with Adam: as the coordinator made it before 2026-12-06 — the tree's sum materialized,
    /// the gradients divided into a tensor per parameter, `Adam.step` in place, the weights copied into the next
    /// PARAMS — against one pass (`Adam.step(_:sumOf:…)`: the additions, ÷ rows, the update, the PARAMS written).
    /// Same bits either way (`TrainingTests.fusedAdamStepIsBitwiseTheSameAsGradientsThenStep`).
    static func adam(runs: Int, workers w: Int, threads: Int) throws {
        let total = 32
        let (before, now) = (Sequential.mlp([256, 1024, 1024, 10], seed: 1).parameters, Sequential.mlp([256, 1024, 1024, 10], seed: 1).parameters)
        let n = now.reduce(0) { $0 + $1.value.count }
        let (oldAdam, newAdam) = (Adam(learningRate: 0.001), Adam(learningRate: 0.001))
        var start = 0
        let shards = try proportionalSplit(total, weights: Array(repeating: 1, count: w)).map { c -> [(TreeNode, ArrivedPartial)] in
            defer { start += c }
            let payload = try GradientTree.encode(GradientTree.cover(start..<start + c, total: total).map { node in
                (node, GradientSum(values: (0..<n).map { Float(($0 &* 7919 &+ Int(node.index)) % 2003) * 1e-4 - 0.1 }, loss: 1, correct: 0, rows: 64))
            })
            return try GradientTree.decode(payload, range: start..<start + c, total: total, parameters: n)
        }
        var out = [Float](repeating: 0, count: n)
        var old: [Double] = [], fused: [Double] = [], additions = 0
        for k in 0..<(runs + 1) {
            for asBefore in k % 2 == 0 ? [true, false] : [false, true] {
                // (not timed: all shards but the last added up the tree on arrival, as the coordinator does; the last stored)
                var parts: [TreeNode: ArrivedPartial] = [:]
                for (i, shard) in shards.enumerated() {
                    for (node, p) in shard { parts[node] = p; if i < shards.count - 1 { GradientTree.combine(&parts, from: node, total: total) } }
                }
                let reduced = try GradientTree.reduce(parts, total: total)
                additions = reduced.additions
                let t0 = monotonicNanos()
                let rows = Float(reduced.rows)
                if asBefore {
                    let root = reduced.materialized()
                    var offset = 0
                    for p in before {
                        let c = p.value.count, o = offset
                        p.grad = Tensor(shape: p.value.shape) { g in root.values.withUnsafeBufferPointer { src in for i in 0..<c { g[i] = src[o + i] / rows } } }
                        offset += c
                    }
                    oldAdam.step(before)
                    out.withUnsafeMutableBufferPointer { o in
                        var at = 0
                        for p in before { p.value.withData { v in for i in 0..<v.count { o[at + i] = v[i] } }; at += p.value.count }
                    }
                } else {
                    out.withUnsafeMutableBytes { o in reduced.withSumTree { newAdam.step(now, sumOf: $0, divisor: rows, writingTo: o, threads: threads) } }
                }
                let ms = Double(monotonicNanos() - t0) / 1e6
                if k > 0 { if asBefore { old.append(ms) } else { fused.append(ms) } }
            }
        }
        print("")
        print("Adam (β 0.9/0.999), \(w) workers' partial sums, \(additions) additions left: the tree's sum, the gradients, the step")
        print("and the PARAMS copy one after the other \(String(format: "%.2f", median(old))) ms; one pass on \(threads) threads \(String(format: "%.2f", median(fused))) ms")
        print("(\(String(format: "%.2f", median(old) / median(fused)))×).")
    }
}

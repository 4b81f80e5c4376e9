import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

/// A shard's work spread over parallel lanes gives the same bits as one thread (issue 16: one worker uses its host).
@Suite struct ComputeLanesTests {
    static let digits = ShardRunnerTests.digits

    /// Splitting a cover for lanes keeps whole subtrees that tile the same micro-batches, and summing them back up
    /// the tree gives the root bits of computing it on one thread, for every lane count.
    @Test func laneNodesTileTheCoverAndSumToTheSameBits() {
        for total in [1, 2, 3, 5, 11, 32, 100] {
            for range in [0..<total, (total / 3)..<total, 0..<max(1, total / 2)] where !range.isEmpty {
                let cover = GradientTree.cover(range, total: total)
                let sequential = cover.map { GradientTree.sum($0, total: total, leaf: GradientTreeTests.leaf) }
                for lanes in [1, 2, 3, 4, 7, 16, 64] {
                    let nodes = GradientTree.lanes(cover, total: total, lanes: lanes)
                    #expect(nodes.flatMap { Array($0.span(total: total)) } == Array(range), "total \(total) range \(range) lanes \(lanes)")
                    #expect(nodes.count >= min(lanes, range.count), "total \(total) range \(range): \(nodes.count) nodes for \(lanes) lanes")
                    let known = Dictionary(uniqueKeysWithValues: nodes.map { ($0, GradientTree.sum($0, total: total, leaf: GradientTreeTests.leaf)) })
                    for (k, node) in cover.enumerated() {
                        let s = GradientTree.sum(node, total: total, known: known)
                        #expect(s.values.map(\.bitPattern) == sequential[k].values.map(\.bitPattern), "total \(total) node \(node) lanes \(lanes)")
                        #expect(s.loss.bitPattern == sequential[k].loss.bitPattern && s.rows == sequential[k].rows)
                    }
                }
            }
        }
    }

    /// Every index runs exactly once on however many lanes are free, the calling thread included; lanes go back.
    @Test func forEachRunsEveryIndexOnceAndReturnsItsLanes() throws {
        let lanes = ComputeLanes(total: 4)
        final class Hits: @unchecked Sendable {
            let lock = NSLock()
            var counts = [Int](repeating: 0, count: 1000)
            var threads = Set<UInt>()
        }
        let hits = Hits()
        lanes.hold()   // (the calling thread's own lane, as a compute thread holds it)
        try lanes.forEach(1000) { i in
            let me = UInt(pthread_self())
            hits.lock.withLock {
                hits.counts[i] += 1
                hits.threads.insert(me)
            }
            if i < 8 { usleep(2000) }   // (so the helpers get a share even on a busy machine)
        }
        #expect(hits.counts.allSatisfy { $0 == 1 })
        #expect(hits.threads.count >= 2 && hits.threads.count <= 4, "ran on \(hits.threads.count) threads with 4 lanes")
        #expect(lanes.free == 3)
        lanes.release(1)
        // Held lanes are not lent: a compute thread holding the only lane runs its work alone.
        let one = ComputeLanes(total: 1)
        one.hold()
        let alone = Hits()
        try one.forEach(50) { _ in
            let me = UInt(pthread_self())
            alone.lock.withLock { _ = alone.threads.insert(me) }
        }
        #expect(alone.threads.count == 1)
        // An error stops the work and is thrown.
        struct Boom: Error {}
        #expect(throws: Boom.self) { try lanes.forEach(100) { i in if i == 10 { throw Boom() } } }
        #expect(lanes.free == 4)
    }

    /// A training shard's payload is byte for byte the same on 1, 2, 3 and 8 lanes, for ranges of one micro-batch,
    /// of whole subtrees and of ragged covers, with float32 and bf16 gradient transport.
    @Test func trainingShardIsTheSameBitsOnAnyNumberOfLanes() throws {
        for transport in ["f32", "bf16"] {
            let text = "kind: train\nname: r\nmodel: {mlp: [64, 24, 10]}\ndata: {csv: \(Self.digits), scale: 0.0625}\n"
                + "optimizer: {sgd: {lr: 0.1}}\nsteps: 3\nbatch_size: 60\nmicro_batch: 4\ngradient_transport: \(transport)\n"
            guard let t = TrainKind.spec(in: try JobSpec.parse(text)) else { Issue.record("not a train spec"); return }
            let data = try LabeledData.load(t.data, features: 64, classes: 10, needLabels: true)
            let n = 64 * 24 + 24 + 24 * 10 + 10
            let weights = ShardRunnerTests.floats(n) { i in Float(sin(Double(i) * 0.7)) * 0.3 }
            let next = ShardRunnerTests.floats(n) { i in Float(cos(Double(i) * 0.3)) * 0.2 }
            for range in [0..<1, 0..<15, 3..<12, 8..<15, 5..<6] {
                let one = try TrainWorker(spec: t, data: data, lanes: ComputeLanes(total: 1))
                let reference = try one.encodedPartials(step: 1, version: 1, params: weights, range: range).bytes
                let referenceNext = try one.encodedPartials(step: 2, version: 2, params: next, range: range).bytes
                for k in [2, 3, 8] {
                    let w = try TrainWorker(spec: t, data: data, lanes: ComputeLanes(total: k))
                    #expect(try w.encodedPartials(step: 1, version: 1, params: weights, range: range).bytes == reference,
                            "\(transport), micro-batches \(range), \(k) lanes")
                    // The next version reaches every lane's copy of the model.
                    #expect(try w.encodedPartials(step: 2, version: 2, params: next, range: range).bytes == referenceNext,
                            "\(transport), micro-batches \(range), \(k) lanes, next parameters")
                }
            }
        }
    }

    /// A shard's partial sums are the gradient tree's own additions over its micro-batches' gradients: equal to
    /// `GradientTree.sum` over leaves computed one micro-batch per shard (the worker's fused path — backward into
    /// the subtree's buffer, right leaves added from the model's gradients — changes no bit).
    @Test func shardSumsAreTheTreeOverSingleMicroBatches() throws {
        let text = "kind: train\nname: r\nmodel: {mlp: [64, 16, 10]}\ndata: {csv: \(Self.digits), scale: 0.0625}\n"
            + "optimizer: {sgd: {lr: 0.1}}\nsteps: 3\nbatch_size: 52\nmicro_batch: 4\n"
        guard let t = TrainKind.spec(in: try JobSpec.parse(text)) else { Issue.record("not a train spec"); return }
        let data = try LabeledData.load(t.data, features: 64, classes: 10, needLabels: true)
        let n = 64 * 16 + 16 + 16 * 10 + 10, total = 13
        let weights = ShardRunnerTests.floats(n) { i in Float(sin(Double(i) * 1.3)) * 0.4 }
        let single = try TrainWorker(spec: t, data: data, lanes: ComputeLanes(total: 1))
        let leaves = try (0..<total).map { j in try single.compute(step: 1, version: 1, params: weights, range: j..<(j + 1))[0].1 }
        for lanes in [1, 3] {
            let w = try TrainWorker(spec: t, data: data, lanes: ComputeLanes(total: lanes))
            for range in [0..<13, 2..<11, 4..<8] {
                for (node, s) in try w.compute(step: 1, version: 1, params: weights, range: range) {
                    let reference = GradientTree.sum(node, total: total) { leaves[$0] }
                    #expect(s.values.map(\.bitPattern) == reference.values.map(\.bitPattern), "node \(node), \(lanes) lane(s)")
                    #expect(s.loss.bitPattern == reference.loss.bitPattern && s.correct == reference.correct && s.rows == reference.rows)
                }
            }
        }
    }

    /// Infer shards: the logits of a shard are the same bits on any number of lanes (batches on absolute boundaries).
    @Test func inferShardIsTheSameBitsOnAnyNumberOfLanes() throws {
        let spec = PredictJob(name: "p", model: ModelSpec(mlp: [64, 20, 10]), data: LabeledDataSpec(csv: Self.digits, scale: 0.0625), batchSize: 7)
        let data = try LabeledData.load(spec.data, features: 64, classes: 10, needLabels: false)
        let w = try PredictWorker(spec: spec, data: data)
        for (start, count) in [(0, 100), (5, 61), (700, 1), (0, data.rows)] {
            let reference = try w.logits(start: start, count: count, lanes: ComputeLanes(total: 1))
            #expect(reference.count == count * 10)
            for k in [2, 4] {
                let l = try w.logits(start: start, count: count, lanes: ComputeLanes(total: k))
                #expect(l.map(\.bitPattern) == reference.map(\.bitPattern), "rows \(start)+\(count), \(k) lanes")
            }
        }
    }
}

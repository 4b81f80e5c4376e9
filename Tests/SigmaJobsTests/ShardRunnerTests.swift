import Foundation
import SigmaJobs
import SigmaModel
import Testing

@Suite struct ShardRunnerTests {
    static let digits = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("data/digits.csv").path

    func spec(hidden: Int) throws -> JobSpec {
        try JobSpec.parse("kind: train\nname: r\nmodel: {mlp: [64, \(hidden), 10]}\ndata: {csv: \(Self.digits), scale: 0.0625}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 2\nbatch_size: 8\nmicro_batch: 4\n")
    }

    /// A float32 payload of `n` values, value i = `f(i)` (parameters for a shard).
    static func floats(_ n: Int, _ f: (Int) -> Float) -> Frame {
        Frame(count: n * 4) { b in
            let p = b.bindMemory(to: Float.self)
            for i in 0..<n { p[i] = f(i) }
        }
    }

    func params(_ count: Int) -> Frame { Frame(count: count * 4) { b in b.initializeMemory(as: UInt8.self, repeating: 0) } }

    /// Job ids restart at 1 with a restarted coordinator: a new job 1 with another model gets its own state,
    /// not the old job 1's model (whose parameter count would not even match).
    @Test func aReusedJobIdWithAnotherSpecGetsFreshState() throws {
        let runner = ShardRunner()
        let small = try spec(hidden: 8), large = try spec(hidden: 16)
        let nSmall = 64 * 8 + 8 + 8 * 10 + 10, nLarge = 64 * 16 + 16 + 16 * 10 + 10
        // (a gradient payload is one partial sum here: 4 + 36 header bytes, then one float32 per parameter)
        #expect(try runner.run(small, job: 1, round: 0, params: params(nSmall), start: 0, count: 2).count == 40 + nSmall * 4)
        #expect(try runner.run(large, job: 1, round: 0, params: params(nLarge), start: 0, count: 2).count == 40 + nLarge * 4,
                "job 1's new spec ran on the old job 1's model")
        // An ended job's state is dropped: running it again builds the model afresh.
        runner.forget([1])
        #expect(try runner.run(small, job: 1, round: 0, params: params(nSmall), start: 0, count: 2).count == 40 + nSmall * 4)
    }

    /// A worker's RESULT payload, with gradients flattened straight into the message, is byte for byte what
    /// computing the partial sums and then encoding them gives — for ranges covered by single micro-batches and by
    /// summed subtrees.
    @Test func gradientsWrittenIntoTheMessageEqualComputeThenEncode() throws {
        let text = "kind: train\nname: r\nmodel: {mlp: [64, 12, 10]}\ndata: {csv: \(Self.digits), scale: 0.0625}\n"
            + "optimizer: {sgd: {lr: 0.1}}\nsteps: 3\nbatch_size: 40\nmicro_batch: 4\n"
        guard let t = TrainKind.spec(in: try JobSpec.parse(text)) else { Issue.record("not a train spec"); return }
        let data = try LabeledData.load(t.data, features: 64, classes: 10, needLabels: true)
        let n = 64 * 12 + 12 + 12 * 10 + 10
        let weights = ShardRunnerTests.floats(n) { i in Float(sin(Double(i))) * 0.3 }
        for range in [0..<1, 3..<4, 0..<10, 2..<7, 8..<10] {
            let (a, b) = (try TrainWorker(spec: t, data: data), try TrainWorker(spec: t, data: data))
            let direct = try a.encodedPartials(step: 1, version: 1, params: weights, range: range)
            let reference = try GradientTree.encode(try b.compute(step: 1, version: 1, params: weights, range: range))
            #expect(direct.bytes == reference.bytes, "micro-batches \(range)")
            #expect(direct.count == 4 + GradientTree.cover(range, total: 10).count * (36 + n * 4))
        }
    }

    /// A worker's model reads its parameters straight from the PARAMS payload: the payload stays alive (a
    /// shared-memory segment stays busy) while the model uses it, and is released when the next version replaces it.
    @Test func parametersAreReadFromThePayloadAndReleasedWhenReplaced() throws {
        guard let t = TrainKind.spec(in: try spec(hidden: 8)) else { Issue.record("not a train spec"); return }
        let data = try LabeledData.load(t.data, features: 64, classes: 10, needLabels: true)
        let n = 64 * 8 + 8 + 8 * 10 + 10
        final class Released: @unchecked Sendable { var flag = false }
        let released = Released()
        let memory = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 16)
        for i in 0..<n { memory.storeBytes(of: Float(i % 7) * 0.01, toByteOffset: i * 4, as: Float.self) }
        var lent: Frame? = Frame(borrowing: UnsafeRawPointer(memory), count: n * 4) { p in
            released.flag = true
            UnsafeMutableRawPointer(mutating: p!).deallocate()
        }
        let copied = Frame(lent!.bytes)
        let w = try TrainWorker(spec: t, data: data)
        let fromLent = try w.encodedPartials(step: 0, version: 1, params: lent!, range: 0..<1)
        lent = nil
        #expect(!released.flag, "the payload was released while the model still reads it")
        // Same gradients as from a private copy of the same parameters.
        let fromCopy = try TrainWorker(spec: t, data: data).encodedPartials(step: 0, version: 1, params: copied, range: 0..<1)
        #expect(fromLent.bytes == fromCopy.bytes)
        _ = try w.encodedPartials(step: 1, version: 2, params: copied, range: 0..<1)
        #expect(released.flag, "the old payload was not released when the next version replaced it")
    }
}

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

    func params(_ count: Int) -> Frame { Frame(count: count * 4) { b in b.initializeMemory(as: UInt8.self, repeating: 0) } }

    /// Job ids restart at 1 with a restarted coordinator: a new job 1 with another model gets its own state,
    /// not the old job 1's model (whose parameter count would not even match).
    @Test func aReusedJobIdWithAnotherSpecGetsFreshState() throws {
        let runner = ShardRunner()
        let small = try spec(hidden: 8), large = try spec(hidden: 16)
        let nSmall = 64 * 8 + 8 + 8 * 10 + 10, nLarge = 64 * 16 + 16 + 16 * 10 + 10
        // (a gradient payload is one partial sum here: 4 + 33 header bytes, then one float32 per parameter)
        #expect(try runner.run(small, job: 1, round: 0, params: params(nSmall), start: 0, count: 2).count == 37 + nSmall * 4)
        #expect(try runner.run(large, job: 1, round: 0, params: params(nLarge), start: 0, count: 2).count == 37 + nLarge * 4,
                "job 1's new spec ran on the old job 1's model")
        // An ended job's state is dropped: running it again builds the model afresh.
        runner.forget([1])
        #expect(try runner.run(small, job: 1, round: 0, params: params(nSmall), start: 0, count: 2).count == 37 + nSmall * 4)
    }
}

import Foundation
import SigmaJobs
import SigmaModel
import Testing

/// An ASSIGN whose range lies past the job's data — a coordinator's bug or a hostile one — fails that shard with an
/// error; it never traps the worker process, nor adds values the spec never asked for.
@Suite struct ShardRangeTests {
    @Test func aTrainShardWithAHugeRangeFailsInsteadOfTrapping() async {
        await #expect(processExitsWith: .success) {
            let digits = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("data/digits.csv").path
            let spec = try! JobSpec.parse("kind: train\nname: r\nmodel: {mlp: [64, 8, 10]}\ndata: {csv: \(digits), scale: 0.0625}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 2\nbatch_size: 8\nmicro_batch: 4\n")
            let n = 64 * 8 + 8 + 8 * 10 + 10
            let params = Frame(count: n * 4) { b in b.initializeMemory(as: UInt8.self, repeating: 0) }
            let runner = ShardRunner()
            _ = try? runner.run(spec, job: 1, round: 0, params: params, start: UInt64.max - 1, count: 4)
            _ = try? runner.run(spec, job: 1, round: 0, params: params, start: 1 << 63, count: 1)
        }
    }

    @Test func aMapReduceShardWithAHugeRangeFailsInsteadOfTrapping() async {
        await #expect(processExitsWith: .success) {
            let spec = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum])
            _ = try? MapReduceKernel.run(spec, start: UInt64.max - 2, count: 8)
        }
    }

    @Test func aMapReduceShardPastTheGeneratedInputFails() throws {
        let spec = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum])
        #expect(throws: (any Error).self) { _ = try MapReduceKernel.run(spec, start: 8, count: 12) }
        _ = try MapReduceKernel.run(spec, start: 8, count: 2)
    }
}

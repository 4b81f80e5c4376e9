import Foundation
import SigmaClient
import SigmaCoordinator
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaWorker
import Testing

/// Submissions that read outside the data roots or ask for absurd sizes are refused by a running coordinator, which
/// keeps serving; a worker refuses a job beyond its own limits with a failed shard (issue 17, holes 3 and 4).
@Suite(.serialized) struct SubmitSafetyTests {
    static func folder(_ name: String) throws -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    static func refused(_ cluster: TestCluster, _ spec: JobSpec, _ words: [String]) async {
        await #expect {
            _ = try await cluster.client.submit(spec)
        } throws: { e in
            guard case ClientError.refused(let r) = e else { return false }
            return r.code == 422 && words.allSatisfy { r.message.contains($0) }
        }
    }

    @Test func theCoordinatorRefusesAndServesOn() async throws {
        let dir = try Self.folder("submit-safety")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = CoordinatorShell.Options()
        options.dataRoots = try DataRoots([dir])
        let cluster = try TestCluster(.inMemory, workers: 1, options: options)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        // A 128-byte .npy whose header claims (10^12, 0), shard_size 1: aborted the coordinator allocating 16 TB.
        try NpyFile.write(path: dir + "/huge.npy", float64: [], shape: [1_000_000_000_000, 0])
        await Self.refused(cluster, .mapReduce(MapReduceSpec(input: .npy(path: dir + "/huge.npy"), reduce: [.sum], sharding: .size(1))), ["huge.npy", "no values"])
        // The 4 TB and 6.3 GB models.
        for widths in [[64, 1_048_576, 1_048_576, 10], [64, 40_000, 40_000, 10]] {
            let t = TrainJob(model: ModelSpec(mlp: widths), data: LabeledDataSpec(csv: dir + "/d.csv"), optimizer: OptimizerSpec(kind: "sgd", lr: 0.1), steps: 1)
            await Self.refused(cluster, .train(t), ["model.mlp", "limits.parameters"])
        }
        // An embed job shipping a file from outside the roots (keys/coordinator.key, say) to any worker that asks.
        let secret = try Self.folder("secret")
        defer { try? FileManager.default.removeItem(atPath: secret) }
        try "SECRET-KEY-MATERIAL\n".write(toFile: secret + "/coordinator.key", atomically: true, encoding: .utf8)
        var embed = EmbedJob(model: dir + "/model", input: secret + "/coordinator.key")
        embed.inputTransport = .coordinator
        await Self.refused(cluster, .embed(embed), ["coordinator.key", "outside the data roots", "--data-root"])
        // /proc/self/environ and /etc/passwd as training data: refused by path, nothing of them in the answer.
        for path in ["/proc/self/environ", "/etc/passwd"] {
            let t = TrainJob(model: ModelSpec(mlp: [4, 2]), data: LabeledDataSpec(csv: path), optimizer: OptimizerSpec(kind: "sgd", lr: 0.1), steps: 1)
            await Self.refused(cluster, .train(t), [path, "outside the data roots"])
        }
        // Still serving: a small job runs.
        let o = try await cluster.client.runToEnd(.mapReduce(MapReduceSpec(input: .range(count: 1000, start: 0, step: 1), reduce: [.sum], sharding: .count(2))))
        #expect(o.state == .completed)
    }

    /// Workers with smaller limits than the coordinator's fail the job's shards with an error naming the limit.
    @Test func aWorkerRefusesAJobBeyondItsLimits() async throws {
        let dir = try Self.folder("worker-limits")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "1,2,0\n3,4,1\n5,6,0\n7,8,1\n".write(toFile: dir + "/d.csv", atomically: true, encoding: .utf8)
        var options = CoordinatorShell.Options()
        options.dataRoots = try DataRoots([dir])
        options.core.maxFailedAttempts = 1
        var worker = WorkerShell.Options(slots: 1)
        worker.dataRoots = try DataRoots([dir])
        worker.specLimits.parameters = 5
        let cluster = try TestCluster(.inMemory, workers: 1, options: options, worker: worker)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let t = TrainJob(model: ModelSpec(mlp: [2, 4, 2]), data: LabeledDataSpec(csv: dir + "/d.csv"), optimizer: OptimizerSpec(kind: "sgd", lr: 0.1),
                         steps: 1, batchSize: 2, microBatch: 1, holdout: 0)
        let o = try await cluster.client.runToEnd(.train(t))
        #expect(o.state == .failed && o.error.contains("limits.parameters"), "\(o.state): \(o.error)")
    }
}

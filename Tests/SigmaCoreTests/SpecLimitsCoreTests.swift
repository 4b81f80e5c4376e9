import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// One SUBMIT must not kill the coordinator (issue 17, hole 4): the core refuses a spec beyond its limits before it
/// plans or reads anything, and counts shards before it makes their ranges.
@Suite struct SpecLimitsCoreTests {
    static let client = PeerID([0, 0, 0, 0, 7])

    static func refusal(_ sent: [(PeerID, Message)]) -> ErrorReply? {
        for (_, m) in sent { if case .error(let e) = m { return e } }
        return nil
    }

    /// 2^64 - 1 generated rows in shards of one (the wire form skips the YAML parser): refused, and the core serves on.
    @Test func aCountOf2To64IsRefusedNotTrapped() throws {
        var h = Harness()
        let spec = MapReduceSpec(input: .range(count: .max, start: 0, step: 1), reduce: [.sum], sharding: .size(1))
        let sent = h.event(.received(Self.client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))
        let e = try #require(Self.refusal(sent))
        #expect(e.code == ErrorReply.Code.invalidSpec.rawValue && e.message.contains("input.count") && e.message.contains("limits.rows"))
        // Within the rows limit, still too many shards: counted, not made.
        let many = MapReduceSpec(input: .range(count: 1 << 36, start: 0, step: 1), reduce: [.sum], sharding: .size(1))
        let e2 = try #require(Self.refusal(h.event(.received(Self.client, .submit(Submit(request: 2, options: [], spec: .mapReduce(many)))))))
        #expect(e2.message.contains("shard_size") && e2.message.contains("limits.shards"))
        let status = h.event(.received(Self.client, .status(request: 3)))
        #expect(status.contains { if case .statusReply = $1 { true } else { false } })
    }

    /// An `.npy` whose header claims 10^12 rows, with shard_size 1 (16 TB of ranges): refused when the rows arrive.
    @Test func anNpyClaimingATrillionRowsIsRefused() throws {
        var h = Harness()
        h.resolvedRows = 1_000_000_000_000
        let spec = MapReduceSpec(input: .npy(path: "/data/huge.npy"), reduce: [.sum], sharding: .size(1))
        let e = try #require(Self.refusal(h.event(.received(Self.client, .submit(Submit(request: 1, options: [], spec: .mapReduce(spec)))))))
        #expect(e.message.contains("limits.shards"))
    }

    /// mlp [64, 1048576, 1048576, 10] (4 TB) and [64, 40000, 40000, 10] (6.3 GB): refused by the job's kind as the
    /// shell prepares it, before any of its files is read (the data file does not exist, and the error is not about
    /// it); a configured limit applies in the same place.
    @Test func hugeModelsAreRefusedBeforeAnythingIsRead() throws {
        for widths in [[64, 1_048_576, 1_048_576, 10], [64, 40_000, 40_000, 10]] {
            var h = Harness()
            let t = TrainJob(model: ModelSpec(mlp: widths), data: LabeledDataSpec(csv: "/nonexistent/d.csv"), optimizer: OptimizerSpec(kind: "sgd", lr: 0.1), steps: 1)
            let e = try #require(Self.refusal(h.event(.received(Self.client, .submit(Submit(request: 1, options: [], spec: .train(t)))))))
            #expect(e.message.contains("model.mlp") && e.message.contains("limits.parameters") && !e.message.contains("nonexistent"))
        }
        var config = CoordinatorConfig()
        config.specLimits.shards = 10
        var h = Harness(config)
        let e = try #require(Self.refusal(h.event(.received(Self.client, .submit(Submit(request: 1, options: [],
            spec: .mapReduce(MapReduceSpec(input: .range(count: 100, start: 0, step: 1), reduce: [.sum], sharding: .count(11)))))))))
        #expect(e.message.contains("shards") && e.message.contains("limit of 10"))
    }
}

import Foundation
import SigmaJobs
import SigmaModel
import Testing

/// One validation for a spec from YAML, from JSON and from the wire (the binary form; ML specs as JSON inside it),
/// with every size a spec can ask for bounded (issue 17, hole 4).
@Suite struct SpecLimitsTests {
    /// (YAML, the same spec in JSON, field, words of the problem)
    static let rejections: [(String, String, String, String)] = [
        // 2^64 - 1 generated rows, one per shard: trapped in the YAML parser and, through the wire, in Sharding.ranges.
        ("kind: map-reduce\ninput: {generate: range, count: 18446744073709551615}\nreduce: sum\nshard_size: 1",
         #"{"kind": "map-reduce", "input": {"generate": "range", "count": 18446744073709551615}, "reduce": "sum", "shard_size": 1}"#,
         "input.count", "limits.rows"),
        ("kind: map-reduce\ninput: {generate: range, count: 10G}\nreduce: sum\nshard_size: 1",
         #"{"kind": "map-reduce", "input": {"generate": "range", "count": "10G"}, "reduce": "sum", "shard_size": 1}"#,
         "shard_size", "limits.shards"),
        ("kind: map-reduce\ninput: {generate: range, count: 10}\nreduce: sum\nshards: 2000000",
         #"{"kind": "map-reduce", "input": {"generate": "range", "count": 10}, "reduce": "sum", "shards": 2000000}"#,
         "shards", "limits.shards"),
        ("kind: map-reduce\ninput: {generate: range, count: 10}\nreduce: [{histogram: {bins: 4000000, low: 0, high: 1}}]",
         #"{"kind": "map-reduce", "input": {"generate": "range", "count": 10}, "reduce": [{"histogram": {"bins": 4000000, "low": 0, "high": 1}}]}"#,
         "reduce[0].histogram.bins", "limits.histogram_bins"),
        ("kind: map-reduce\ninput: {generate: uniform, count: 10, low: 2, high: 1}\nreduce: sum",
         #"{"kind": "map-reduce", "input": {"generate": "uniform", "count": 10, "low": 2, "high": 1}, "reduce": "sum"}"#,
         "input.high", "greater than low"),
        // 4 TB of parameters, and 1.6 G of them (6.3 GB before the abort): refused before anything is allocated.
        ("kind: train\nmodel: {mlp: [64, 1048576, 1048576, 10]}\ndata: {csv: d.csv}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1",
         #"{"kind": "train", "model": {"mlp": [64, 1048576, 1048576, 10]}, "data": {"csv": "d.csv"}, "optimizer": {"sgd": {"lr": 0.1}}, "steps": 1}"#,
         "model.mlp", "limits.parameters"),
        ("kind: train\nmodel: {mlp: [64, 40000, 40000, 10]}\ndata: {csv: d.csv}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1",
         #"{"kind": "train", "model": {"mlp": [64, 40000, 40000, 10]}, "data": {"csv": "d.csv"}, "optimizer": {"sgd": {"lr": 0.1}}, "steps": 1}"#,
         "model.mlp", "limits.parameters"),
        ("kind: train\nmodel: {mlp: [" + Array(repeating: "2", count: 100).joined(separator: ", ") + "]}\ndata: {csv: d.csv}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1",
         #"{"kind": "train", "model": {"mlp": ["# + Array(repeating: "2", count: 100).joined(separator: ", ") + #"]}, "data": {"csv": "d.csv"}, "optimizer": {"sgd": {"lr": 0.1}}, "steps": 1}"#,
         "model.mlp", "limits.layers"),
        ("kind: train\nmodel: {mlp: [4, 0, 2]}\ndata: {csv: d.csv}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1",
         #"{"kind": "train", "model": {"mlp": [4, 0, 2]}, "data": {"csv": "d.csv"}, "optimizer": {"sgd": {"lr": 0.1}}, "steps": 1}"#,
         "model.mlp[1]", "width"),
        ("kind: train\nmodel: {mlp: [4, 2]}\ndata: {csv: d.csv}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 0",
         #"{"kind": "train", "model": {"mlp": [4, 2]}, "data": {"csv": "d.csv"}, "optimizer": {"sgd": {"lr": 0.1}}, "steps": 0}"#,
         "steps", "between 1"),
        // 16.8 M parameters are fine; a million-row batch of their activations (137 GB) is not.
        ("kind: infer\nmodel: {mlp: [4096, 4096, 10], weights: w.safetensors}\ndata: {csv: d.csv}\nbatch_size: 1048576",
         #"{"kind": "infer", "model": {"mlp": [4096, 4096, 10], "weights": "w.safetensors"}, "data": {"csv": "d.csv"}, "batch_size": 1048576}"#,
         "model.mlp", "limits.memory_bytes"),
        ("kind: embed\nmodel: m\ninput: s.txt\nbatch_size: 5000",
         #"{"kind": "embed", "model": "m", "input": "s.txt", "batch_size": 5000}"#,
         "batch_size", "between 1 and 4096"),
    ]

    static func matches(_ e: any Error, _ field: String, _ problem: String) -> Bool {
        guard let s = e as? SpecError else { return false }
        return s.field == field && s.problem.contains(problem)
    }

    @Test(arguments: 0..<rejections.count)
    func everyRejectionIsTheSameFromYAMLJSONAndTheWire(_ i: Int) throws {
        let (yaml, json, field, problem) = Self.rejections[i]
        #expect { _ = try JobSpec.parse(yaml) } throws: { Self.matches($0, field, problem) }
        #expect { _ = try JobSpec.parse(json) } throws: { Self.matches($0, field, problem) }
        // The wire: the spec as written, in its binary form (ML kinds: JSON inside it), decoded as a coordinator or a
        // worker decodes it (against the ceiling), then checked against the receiver's limits.
        let bytes = try JobSpec.parseUnchecked(yaml).encoded
        #expect {
            let decoded = try bytes.withUnsafeBytes { try JobSpec.decode($0) }
            try decoded.validate(limits: .standard)
        } throws: { Self.matches($0, field, problem) }
    }

    /// The examples are within the default limits.
    @Test func examplesAreWithinTheDefaultLimits() throws {
        let dir = repoRoot + "/examples"
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".yaml") {
            let spec = try JobSpec.load(path: dir + "/" + name)
            try spec.validate(limits: .standard)
        }
    }

    /// `Sharding` counts and cuts any row count without trapping; more ranges than the ceiling are never made.
    @Test func shardingNeverTraps() {
        for s in [Sharding.count(Int.min), .count(0), .count(Int.max), .size(0), .size(1), .size(UInt64.max)] {
            for rows in [UInt64(0), 1, 7, UInt64(Int64.max), UInt64.max] {
                let n = s.shardCount(rows: rows)
                #expect(n <= rows)
                if n > UInt64(SpecLimits.ceiling.shards) { #expect(s.ranges(rows: rows).isEmpty) }
                else { #expect(UInt64(s.ranges(rows: rows).count) == n) }
            }
        }
        #expect(Sharding.size(1).shardCount(rows: .max) == .max)
        #expect(throws: SpecError.self) { try Sharding.size(1).check(rows: .max, limits: .standard) }
    }

    /// cluster.yaml `limits:` and `data_roots` (relative to the file's folder); a limit beyond the ceiling is refused.
    @Test func clusterConfigCarriesLimitsAndRoots() throws {
        let c = try ClusterConfig.parse("data_roots: [/srv/data, jobs]\nlimits: {parameters: 1000, shards: 50, memory_bytes: 1G}", file: "/etc/sigma/cluster.yaml")
        #expect(c.dataRoots == ["/srv/data", "/etc/sigma/jobs"])
        #expect(c.limits.parameters == 1000 && c.limits.shards == 50 && c.limits.memoryBytes == 1_000_000_000 && c.limits.layers == SpecLimits.standard.layers)
        #expect { _ = try ClusterConfig.parse("limits: {parameters: 99999999999999}") } throws: { "\($0)".contains("limits.parameters") }
        #expect { _ = try ClusterConfig.parse("limits: {params: 5}") } throws: { "\($0)".contains("limits.params") }
        // A spec within the defaults, beyond this configuration: refused, naming the field and the limit.
        let spec = try JobSpec.parse("kind: train\nmodel: {mlp: [64, 128, 10]}\ndata: {csv: d.csv}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1")
        #expect { try spec.validate(limits: c.limits) } throws: { Self.matches($0, "model.mlp", "limits.parameters") }
    }
}

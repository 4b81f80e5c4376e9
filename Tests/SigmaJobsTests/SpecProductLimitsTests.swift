import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

/// Sizes whose product had no limit: map-reduce partials times shards, total training steps, a weights file read
/// whole, an eval's confusion matrix — each now checked against the limits before anything is allocated.
@Suite struct SpecProductLimitsTests {
    /// The coordinator keeps every shard's partial until the last arrives (MapReduceDriver.partials): one
    /// histogram of 2^20 bins over 10^6 shards is 10^6 × 8 MiB = 8 TiB, far over limits.memory_bytes (16 GiB).
    @Test func histogramPartialsTimesShardsAreWithinTheMemoryLimit() throws {
        let yaml = """
        kind: map-reduce
        input: {generate: uniform, count: 1000000, seed: 1, low: 0, high: 1}
        map: identity
        reduce: [{histogram: {bins: 1048576, low: 0, high: 1}}]
        shards: 1000000
        """
        _ = try JobSpec.parse(yaml.replacingOccurrences(of: "bins: 1048576", with: "bins: 10"))   // (the spec is well formed)
        #expect(throws: (any Error).self) { try JobSpec.parse(yaml) }
    }

    /// 16 histograms of 2^20 bins: each RESULT partial is 128 MiB; 200 shards hold 25 GiB on the coordinator.
    @Test func manyHistogramsTimesShardsAreWithinTheMemoryLimit() throws {
        let hs = (0..<16).map { "{histogram: {bins: 1048576, low: \($0), high: \($0 + 1)}}" }.joined(separator: ", ")
        let yaml = """
        kind: map-reduce
        input: {generate: uniform, count: 1000, seed: 1, low: 0, high: 1}
        map: identity
        reduce: [\(hs)]
        shards: 200
        """
        _ = try JobSpec.parse(yaml.replacingOccurrences(of: "bins: 1048576", with: "bins: 10"))   // (the spec is well formed)
        #expect(throws: (any Error).self) { try JobSpec.parse(yaml) }
    }
}

/// `epochs` × steps per epoch past 2^32: the coordinator trapped converting it for status.
@Suite struct TrainStepsLimitTests {
    static let yaml = """
    kind: train
    model: {mlp: [2, 2]}
    data: {generate: blobs, rows: 100000, features: 2, classes: 2, seed: 1}
    optimizer: {sgd: {lr: 0.1}}
    epochs: 1000000
    batch_size: 1
    micro_batch: 1
    holdout: 0
    """

    @Test func totalTrainingStepsFitTheWireAndAreLimited() throws {
        let spec = try JobSpec.parse(Self.yaml)   // (passes validate: epochs ≤ 1,000,000, batch_size ≥ 1)
        let dir = FileManager.default.temporaryDirectory.path
        do {
            let driver = try JobKinds.standard.prepare(spec, roots: try DataRoots([dir]))
            // 10^6 epochs × 10^5 steps = 10^11 steps; CoordinatorCore.summary/progress do UInt32(g.steps): a trap.
            #expect(driver.progress.steps <= Int(UInt32.max), "a train job of \(driver.progress.steps) steps was prepared")
        } catch {
            // refused with an error naming the field: what should happen
        }
    }
}

/// A weights file is read whole and every tensor in it decoded: its size is held to the memory limit first.
@Suite struct WeightsFileLimitTests {
    @Test func aWeightsFileLargerThanTheMemoryLimitIsRefusedBeforeItIsRead() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-weights-limit-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The model's own tensors (under "net.") and 16 MiB of other tensors the spec never uses.
        let tensors: [String: Tensor] = ["net.0.weight": Tensor(shape: [2, 2], repeating: 0.1), "net.0.bias": Tensor(zeros: [2]),
                                         "other": Tensor(zeros: [4 << 20])]
        try SafeTensors.encode(tensors).write(to: URL(fileURLWithPath: dir + "/w.safetensors"))
        let yaml = """
        kind: train
        model: {mlp: [2, 2], weights: w.safetensors, prefix: net.}
        data: {generate: blobs, rows: 100, features: 2, classes: 2, seed: 1}
        optimizer: {sgd: {lr: 0.1}}
        steps: 1
        batch_size: 8
        """
        let spec = try JobSpec.parse(yaml, baseDirectory: dir)
        let roots = try DataRoots([dir])
        _ = try JobKinds.standard.prepare(spec, roots: roots)   // (a valid job within the standard limits)
        var small = SpecLimits.standard
        small.memoryBytes = 4 << 20   // 4 MiB: the model (6 parameters) and data (100 rows) fit; the 16 MiB file does not
        #expect(throws: (any Error).self, "a 16 MiB weights file was read whole under a 4 MiB memory limit") {
            try JobKinds.standard.prepare(spec, roots: roots, limits: small)
        }
    }
}

/// Eval's confusion matrix is outputs × outputs counts on the coordinator: mlp [2, 1048576] asked 2^40 × 8 B.
@Suite struct EvalConfusionLimitTests {
    @Test func anEvalJobsConfusionMatrixIsWithinTheMemoryLimit() throws {
        let yaml = """
        kind: eval
        model: {mlp: [2, 1048576], weights: w.safetensors}
        data: {generate: blobs, rows: 100, features: 2, classes: 2, seed: 1}
        batch_size: 1
        """
        _ = try JobSpec.parse(yaml.replacingOccurrences(of: "1048576", with: "2"))   // (the spec is well formed)
        #expect(throws: (any Error).self, "an eval job with a 2^20 × 2^20 confusion matrix passed validate") { try JobSpec.parse(yaml) }
    }
}

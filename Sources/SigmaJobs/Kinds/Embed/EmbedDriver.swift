import Foundation
import SigmaEngine
import SigmaModel

public final class EmbedDriver: ReducingDriver, @unchecked Sendable {
    public let spec: EmbedJob
    public let lines: Int
    public let dimension: Int
    var outputs: RowOutputs

    public var kind: String { "embed" }
    public var unit: String { "lines" }
    public var round: UInt32 { 0 }
    public var params: Frame? { nil }

    public init(spec: EmbedJob, lines: Int, dimension: Int) {
        self.spec = spec
        self.lines = lines
        self.dimension = dimension
        outputs = RowOutputs(items: lines, batch: spec.batchSize, width: dimension, what: "embeddings")
    }

    public var roundItems: Int { lines }

    public func plan(shares: [Double]) -> [ShardPlan] { outputs.plan(shares: shares) }

    public func accept(shard index: Int, payload: Frame) throws { try outputs.accept(shard: index, payload: payload) }

    public var progress: RoundProgress { RoundProgress(step: 0, steps: 0, loss: .nan, accuracy: .nan) }

    public func reduceRound() throws -> RoundEnd {
        var end = RoundEnd()
        end.finished = true
        end.results = try outputs.bundle("embeddings.npy")
        return end
    }
}

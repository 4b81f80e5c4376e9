import SigmaModel

extension Sharding {
    /// How many ranges `ranges(rows:)` makes for `rows` rows; never traps (any `rows`, any count or size).
    public func shardCount(rows: UInt64) -> UInt64 {
        if rows == 0 { return 0 }
        switch self {
        case .count(let n): return Swift.min(UInt64(Swift.max(1, n)), rows)
        case .size(let k):
            let k = Swift.max(1, k)
            return rows / k + (rows % k == 0 ? 0 : 1)
        }
    }

    /// Throws unless `rows` rows make at most `limits.shards` shards.
    public func check(rows: UInt64, limits: SpecLimits) throws {
        let n = shardCount(rows: rows)
        guard n <= UInt64(limits.shards) else {
            let field = if case .size = self { "shard_size" } else { "shards" }
            throw SpecError(field: field, problem: "\(rows) rows give \(n) shards, over the limit of \(limits.shards) (cluster.yaml limits.shards); use a larger shard_size")
        }
    }
}

import Foundation
import SigmaEngine
import SigmaModel

/// A driver whose reduction the job code times itself (the coordinator core never reads clocks): it implements
/// `reduceRound`, and `completeRound` measures it plus the additions the last shard's arrival made.
public protocol ReducingDriver: RoundDriver {
    func reduceRound() throws -> RoundEnd
}

extension ReducingDriver {
    public func completeRound() throws -> RoundEnd {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var end = try reduceRound()
        end.reduceNanos = (DispatchTime.now().uptimeNanoseconds &- t0) &+ end.arrivalNanos
        return end
    }
}

func jsonData(_ v: Any) -> Data {
    (try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .prettyPrinted])) ?? Data("{}".utf8)
}

/// Splits `n` units into contiguous runs in proportion to `weights` (largest remainder; ties to the earlier
/// share). Runs may be empty; they add up to `n`.
public func proportionalSplit(_ n: Int, weights: [Double]) -> [Int] {
    let w = weights.map { $0.isFinite && $0 > 0 ? $0 : 0 }
    let total = w.reduce(0, +)
    guard total > 0 else { return split(n, parts: weights.count).map { Int($0.count) } + Array(repeating: 0, count: max(0, weights.count - n)) }
    let exact = w.map { Double(n) * $0 / total }
    var counts = exact.map { Int($0.rounded(.down)) }
    var left = n - counts.reduce(0, +)
    let order = exact.indices.sorted { (exact[$0] - Double(counts[$0]), -$0) > (exact[$1] - Double(counts[$1]), -$1) }
    for i in order where left > 0 {
        counts[i] += 1
        left -= 1
    }
    return counts
}

/// `n` items cut into about `parts` contiguous ranges on whole-batch boundaries (the last batch may be short).
func batchAlignedSplit(_ n: Int, batch b: Int, parts: Int) -> [(start: UInt64, count: UInt64)] {
    split((n + b - 1) / b, parts: parts).map { r in
        let start = Int(r.start) * b
        return (UInt64(start), UInt64(min(Int(r.start + r.count) * b, n) - start))
    }
}

func split(_ n: Int, parts: Int) -> [(start: UInt64, count: UInt64)] {
    let k = max(1, min(parts, n))
    var out: [(UInt64, UInt64)] = []
    var s = 0
    for i in 0..<k {
        let c = n / k + (i < n % k ? 1 : 0)
        out.append((UInt64(s), UInt64(c)))
        s += c
    }
    return out
}

/// A one-round job whose shards each return `width` floats per item (infer and eval logits, embeddings): its ranges
/// (about four per share, on whole batches) and the shards' rows, joined in item order.
struct RowOutputs {
    let items: Int, batch: Int, width: Int
    /// What a shard's payload holds, for errors ("logits").
    let what: String
    var ranges: [(start: UInt64, count: UInt64)] = []
    var outputs: [[Float]?] = []

    init(items: Int, batch: Int, width: Int, what: String) {
        self.items = items
        self.batch = batch
        self.width = width
        self.what = what
    }

    /// Most bytes of output one shard should carry back (well inside the 256 MiB frame limit; a large result
    /// is then many shards, whatever the worker count).
    static let shardResultBytes = 64 << 20

    mutating func plan(shares: [Double]) -> [ShardPlan] {
        let bySize = (items * width * 4 + Self.shardResultBytes - 1) / Self.shardResultBytes
        ranges = batchAlignedSplit(items, batch: batch, parts: max(max(1, shares.count) * 4, bySize))
        outputs = Array(repeating: nil, count: ranges.count)
        return ranges.map { ShardPlan(start: $0.start, count: $0.count) }
    }

    mutating func accept(shard index: Int, payload: Frame) throws {
        let n = Int(ranges[index].count) * width
        outputs[index] = try payload.read { [what] r -> [Float] in
            let v = try r.floats(n, what)
            try r.finish(what)
            return v
        }
    }

    /// The job's result bundle (`ResultBundle`): every item's row, in order, as `name` (an (items, width) float32
    /// `.npy`), built shard by shard, each shard's rows let go once copied — about one copy of the result in memory
    /// at a time, however large (an `infer` or `embed` result can be gigabytes).
    mutating func bundle(_ name: String) throws -> [UInt8] {
        let header = NumPyFormat.npyHeader(descr: "<f4", shape: [items, width])
        let npy = header.count + items * width * 4
        guard npy <= Int(UInt32.max) else { throw JobError("\(name) would be \(npy) bytes; a result file holds at most \(UInt32.max)") }
        var w = ByteWriter(capacity: 4 + 2 + name.utf8.count + 4 + npy)
        w.u32(1)
        w.string(name)
        w.u32(UInt32(npy))
        w.raw(Array(header))
        for i in outputs.indices {
            guard let o = outputs[i] else { throw JobError("shard \(i) has no result") }
            outputs[i] = nil
            o.withUnsafeBufferPointer { w.floats($0) }
        }
        return w.bytes
    }

    /// Every item's row, in order: an (items, width) tensor.
    func joined() throws -> Tensor {
        var all: [Float] = []
        all.reserveCapacity(items * width)
        for (i, o) in outputs.enumerated() {
            guard let o else { throw JobError("shard \(i) has no result") }
            all += o
        }
        return Tensor(shape: [items, width], all)
    }
}

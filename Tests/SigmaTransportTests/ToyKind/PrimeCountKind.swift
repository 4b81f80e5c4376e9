import Foundation
import SigmaJobs
import SigmaModel

// A toy job kind, added the way docs/architecture.md ("How to add a job kind") says: this folder, and one line that
// registers it (`JobKinds.standard.adding(PrimeCountKind.self)`, in ToyKindTests). It counts the primes below
// `below`, in shards of `shard_size` numbers.
//
//     kind: prime-count
//     below: 200000
//     shard_size: 7000

/// The spec: `Codable` (its wire form), checked by `validate` wherever it comes from.
struct PrimeCountSpec: JobKindSpec {
    var name: String
    var below: UInt64
    var shardSize: UInt64
}

enum PrimeCountKind: JobKind {
    static let name = "prime-count"

    static func parse(_ f: inout Fields, base: String?) throws -> PrimeCountSpec {
        let spec = PrimeCountSpec(name: try f.optionalString("name") ?? "primes", below: try f.count("below"),
                                  shardSize: try f.optionalUInt("shard_size") ?? 10_000)
        try f.rejectUnknown()
        return spec
    }

    static func validate(_ spec: PrimeCountSpec, limits: SpecLimits) throws {
        guard spec.below >= 1, spec.below <= 1 << 32 else { throw SpecError(field: "below", problem: "must be 1…4294967296, got \(spec.below)") }
        guard spec.shardSize >= 1 else { throw SpecError(field: "shard_size", problem: "must be ≥ 1, got 0") }
        let shards = (spec.below + spec.shardSize - 1) / spec.shardSize
        guard shards <= UInt64(limits.shards) else { throw limits.exceeded("shard_size", shards, limits.shards, key: "shards", unit: " shards") }
    }

    /// It names no file.
    static func mapPaths(_ spec: PrimeCountSpec, _ rewrite: (SpecPath) throws -> String) rethrows -> PrimeCountSpec { spec }

    static func prepare(_ spec: PrimeCountSpec, context: KindContext) throws -> any RoundDriver { PrimeCountDriver(spec) }

    static func worker(_ spec: PrimeCountSpec, context: KindContext) throws -> any ShardWorker { PrimeCounter() }

    static func report(_ result: [UInt8], spec: PrimeCountSpec) throws -> JobReport {
        guard result.count == 8 else { throw JobError("a prime count is 8 bytes, got \(result.count)") }
        let n = result.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        return JobReport(lines: ["primes below \(spec.below): \(n)"], json: ["primes": n])
    }
}

/// The coordinator's side: one round of ranges; the counts add up in shard order.
final class PrimeCountDriver: RoundDriver, @unchecked Sendable {
    let spec: PrimeCountSpec
    let ranges: [ShardPlan]
    var counts: [UInt64]

    init(_ spec: PrimeCountSpec) {
        self.spec = spec
        ranges = stride(from: 0, to: spec.below, by: Int(spec.shardSize)).map { ShardPlan(start: $0, count: min(spec.shardSize, spec.below - $0)) }
        counts = Array(repeating: 0, count: ranges.count)
    }

    var kind: String { PrimeCountKind.name }
    var round: UInt32 { 0 }
    var params: Frame? { nil }
    var unit: String { "numbers" }
    var roundItems: Int { Int(spec.below) }
    var progress: RoundProgress { RoundProgress(step: 0, steps: 0, loss: .nan, accuracy: .nan) }

    func plan(shares: [Double]) -> [ShardPlan] { ranges }

    func accept(shard index: Int, payload: Frame) throws {
        let bytes = payload.bytes
        guard bytes.count == 8 else { throw JobError("a shard's count is 8 bytes, got \(bytes.count)") }
        let n = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        guard n <= ranges[index].count else { throw JobError("\(n) primes in a range of \(ranges[index].count) numbers") }
        counts[index] = n
    }

    func completeRound() throws -> RoundEnd {
        var end = RoundEnd()
        end.finished = true
        end.results = withUnsafeBytes(of: counts.reduce(0, +)) { Array($0) }
        return end
    }
}

/// A worker's side: trial division over the shard's numbers.
final class PrimeCounter: ShardWorker {
    func run(round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame {
        var n: UInt64 = 0
        for x in start..<(start + count) where x >= 2 {
            var prime = true
            var d: UInt64 = 2
            while d * d <= x {
                if x % d == 0 { prime = false; break }
                d += 1
            }
            if prime { n += 1 }
        }
        return Frame(withUnsafeBytes(of: n) { Array($0) })
    }
}

import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

@Suite struct MapReduceTests {
    /// Seeded property: for random row counts and shardings, shards cover every row exactly once, in order.
    @Test func shardsCoverTheInputExactlyOnce() {
        var rng = SplitMix(seed: 42)
        for _ in 0..<2000 {
            let rows = UInt64(rng.next() % 100_000) + 1
            let sharding: Sharding = rng.next() % 2 == 0 ? .count(Int(rng.next() % 300) + 1) : .size(rng.next() % 5000 + 1)
            let ranges = sharding.ranges(rows: rows)
            var next: UInt64 = 0
            for r in ranges {
                #expect(r.start == next)
                #expect(r.count >= 1)
                next = r.start + r.count
            }
            #expect(next == rows)
            if case .count(let n) = sharding { #expect(ranges.count == min(n, Int(rows))) }
        }
        #expect(Sharding.count(4).ranges(rows: 0).isEmpty)
    }

    /// Independent reference: a plain loop over the generator, summed with Kahan's algorithm.
    func reference(_ spec: MapReduceSpec) -> (sum: Double, min: Double, max: Double, count: Int, hist: [UInt64]) {
        let n = spec.input.generatedCount!
        var sum = 0.0, c = 0.0, mn = Double.infinity, mx = -Double.infinity
        let h = spec.shape.histograms.first
        var hist = [UInt64](repeating: 0, count: h?.bins ?? 0)
        for i in 0..<n {
            let x = spec.map.apply(Generator.value(spec.input, i))
            let y = x - c
            let t = sum + y
            c = (t - sum) - y
            sum = t
            mn = min(mn, x)
            mx = max(mx, x)
            if let h, x >= h.low, x <= h.high {
                let bin = Int((x - h.low) / (h.high - h.low) * Double(h.bins))
                hist[min(h.bins - 1, bin)] += 1
            }
        }
        return (sum, mn, mx, Int(n), hist)
    }

    @Test(arguments: [
        MapReduceSpec(input: .uniform(count: 100_000, seed: 1, low: -2, high: 3), map: .square,
                      reduce: [.sum, .histogram(bins: 16, low: 0, high: 9)], sharding: .count(37)),
        MapReduceSpec(input: .normal(count: 50_000, seed: 9, mean: 1, std: 2), map: .abs,
                      reduce: [.sum, .min, .max, .histogram(bins: 5, low: 0, high: 4)], sharding: .size(999)),
        MapReduceSpec(input: .range(count: 77_777, start: -10, step: 0.001), map: .affine(a: 2, b: 1),
                      reduce: [.sum, .mean, .count], sharding: .count(1)),
    ])
    func shardedEqualsReference(_ spec: MapReduceSpec) throws {
        let ref = reference(spec)
        let rows = spec.input.generatedCount!
        let partials = try spec.sharding.ranges(rows: rows).map { try MapReduceKernel.run(spec, start: $0.start, count: $0.count) }
        let r = MapReduceResult.reduce(spec, partials: partials)
        #expect(Int(r.total.count) == ref.count)
        #expect(abs(r.total.total - ref.sum) <= 1e-12 * abs(ref.sum))
        #expect(r.total.min == ref.min)
        #expect(r.total.max == ref.max)
        #expect(r.total.histogram == ref.hist)
        // Result encoding round-trips.
        let back = try r.encoded.withUnsafeBytes { try MapReduceResult.decode($0) }
        #expect(back == r)
    }

    /// Combining in shard order gives the same bits however the shards are grouped.
    @Test func combineIsIndependentOfGrouping() throws {
        let spec = MapReduceSpec(input: .normal(count: 20_000, seed: 3, mean: 0, std: 1e6), reduce: [.sum], sharding: .count(64))
        let parts = try spec.sharding.ranges(rows: 20_000).map { try MapReduceKernel.run(spec, start: $0.start, count: $0.count) }
        let all = MapReduceResult.reduce(spec, partials: parts).total.total
        let again = MapReduceResult.reduce(spec, partials: parts).total.total
        #expect(all.bitPattern == again.bitPattern)
        let local = try MapReduceKernel.runLocal(spec).total
        #expect(all.bitPattern == local.bitPattern)   // exact sums: the same bits however the input is split
    }

    @Test func partialDecodingRejectsWrongBinsAndTruncation() throws {
        let shape = PartialShape([.histogram(bins: 3, low: 0, high: 1), .topK(2), .classCounts, .concat, .variance])
        var acc = Partial(shape)
        acc.count = 5
        acc.sum.add(2.5)
        acc.top = [.init(value: 3, index: 1), .init(value: 3, index: 4)]
        acc.classes = [3: 2]
        acc.values = [3, 1, 0, 3, 0]
        let bytes = acc.encoded
        #expect(throws: ByteReadError.self) { _ = try Partial.decode(Frame(bytes), shape: PartialShape([.histogram(bins: 4, low: 0, high: 1), .topK(2), .classCounts, .concat, .variance])) }
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: ByteReadError.self) { _ = try Partial.decode(Frame(Array(bytes.prefix(cut))), shape: shape) }
        }
        #expect(try Partial.decode(Frame(bytes), shape: shape) == acc)
        var unordered = acc
        unordered.top = [.init(value: 3, index: 4), .init(value: 3, index: 1)]
        #expect(throws: ByteReadError.self) { _ = try Partial.decode(Frame(unordered.encoded), shape: shape) }
    }

    @Test func nanPropagatesLikeNumPy() throws {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-nan-\(UUID().uuidString).npy").path
        defer { try? FileManager.default.removeItem(atPath: p) }
        try NpyFile.write(path: p, float64: [1, .nan, 3])
        let r = try MapReduceKernel.runLocal(MapReduceSpec(input: .npy(path: p), reduce: [.sum, .min]))
        #expect(r.value(.sum)!.isNaN)
        #expect(r.value(.min)!.isNaN)
        #expect(r.count == 3)
    }
}

/// A small seeded generator for the tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        return SeededRandom.mix(state)
    }
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// Partials arrive from the network: any bytes either decode into a partial whose combination and values do not
/// trap, or are refused naming the field — never a crash (100,000 mutations of a full partial).
@Suite struct PartialFuzzTests {
    @Test func mutatedPartialsNeverCrashTheCoordinator() {
        let shape = PartialShape([.sum, .variance, .histogram(bins: 3, low: 0, high: 1), .topK(3), .classCounts, .concat])
        var acc = Partial(shape)
        acc.count = 4
        for v in [1e300, -2.5, 3e-300, 7.0] { acc.sum.add(v); acc.squares!.add(v * v) }
        acc.top = [.init(value: 7, index: 3), .init(value: 1, index: 0)]
        acc.classes = [7: 1, -2.5: 1]
        acc.values = [1e300, -2.5, 3e-300, 7]
        let bytes = acc.encoded
        var rng = SplitMix(seed: 99)
        var decoded = 0
        for _ in 0..<100_000 {
            var b = bytes
            for _ in 0..<(1 + Int(rng.next() % 4)) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            guard let p = try? Partial.decode(Frame(b), shape: shape) else { continue }
            decoded += 1
            var total = Partial(shape)
            total.combine(p)
            total.combine(p)
            for r in [Reducer.sum, .mean, .variance, .min, .max] { _ = total.value(r) }
        }
        #expect(decoded > 0 && decoded < 100_000)
    }
}

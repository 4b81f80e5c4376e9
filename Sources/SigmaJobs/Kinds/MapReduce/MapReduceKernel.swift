import Foundation
import SigmaEngine
import SigmaModel

/// Computes one shard of a map-reduce job: f over rows `[start, start+count)`, accumulated into a `Partial`.
public enum MapReduceKernel {
    /// Values processed per chunk (bounded memory whatever the shard size).
    static let chunk = 1 << 16

    /// `files` caches open `.npy` files between shards (the worker keeps one per compute thread).
    /// `model`: model_loss's model (built from the spec when not given).
    public static func run(_ spec: MapReduceSpec, start: UInt64, count: UInt64, files: NpyFileCache? = nil, model: Layer? = nil) throws -> Partial {
        let lossModel = try model ?? spec.modelLoss.map { try MLModels.build($0, seed: 0) }
        var acc = Accumulator(spec.shape)
        // Sized to the shard: a fixed 512 KiB buffer would be an mmap + munmap for every tiny shard.
        let rows = spec.input.generatedCount == nil ? chunk : Int(Swift.min(UInt64(chunk), Swift.max(1, count)))
        let buffer = UnsafeMutableBufferPointer<Double>.allocate(capacity: rows)
        defer { buffer.deallocate() }
        switch spec.input {
        case .npy(let path):
            let file = try files?.file(path) ?? NpyFile(path: path)
            let rows = UInt64(file.header.rows)
            guard start <= rows, count <= rows - start else {
                throw DataError(path: path, problem: "shard rows \(start)..<\(start + count) exceed the file's \(rows) rows")
            }
            let rowsPerChunk = Swift.max(1, chunk / Swift.max(1, file.header.columns))
            var row = Int(start)
            let end = Int(start + count)
            var big: UnsafeMutableBufferPointer<Double>? = nil   // a single row wider than a chunk
            defer { big?.deallocate() }
            while row < end {
                let n = Swift.min(rowsPerChunk, end - row)
                let values = n * file.header.columns
                var target = buffer
                if values > buffer.count {
                    if big == nil || big!.count < values {
                        big?.deallocate()
                        big = .allocate(capacity: values)
                    }
                    target = big!
                }
                try file.readRows(start: row, count: n, into: target)
                if let m = lossModel, let ms = spec.modelLoss {
                    let losses = try rowLosses(m, classes: ms.outputs, tokens: ms.tokens, rows: UnsafeBufferPointer(rebasing: target[0..<values]), n: n, file: path, firstRow: row)
                    losses.withUnsafeBufferPointer { l in
                        let out = UnsafeMutableBufferPointer(rebasing: target[0..<n])
                        _ = out.update(fromContentsOf: l)
                    }
                    try acc.add(UnsafeMutableBufferPointer(rebasing: target[0..<n]), map: .identity, first: UInt64(row))
                } else {
                    try acc.add(UnsafeMutableBufferPointer(rebasing: target[0..<values]), map: spec.map, first: UInt64(row * file.header.columns))
                }
                row += n
            }
        default:
            // (within the generated input: a shard past its end would add values no spec asked for)
            guard let n = spec.input.generatedCount, start <= n, count <= n - start else {
                throw JobError("shard range \(start)+\(count) is past the generated input's \(spec.input.generatedCount ?? 0) values")
            }
            var i = start
            let end = start + count
            while i < end {
                let n = Int(Swift.min(UInt64(chunk), end - i))
                let slice = UnsafeMutableBufferPointer(rebasing: buffer[0..<n])
                Generator.fill(spec.input, from: i, into: slice)
                try acc.add(slice, map: spec.map, first: i)
                i += UInt64(n)
            }
        }
        return acc.partial
    }

    /// Each row's cross-entropy under `model` (rows: inputs then the label), in float64 from the model's float32 logits:
    /// log Σ exp(z − max) − (z_label − max). The model's outputs are row-stable, so a row's loss is the same bits in
    /// any shard.
    static func rowLosses(_ model: Layer, classes: Int, tokens: Int?, rows: UnsafeBufferPointer<Double>, n: Int, file: String, firstRow: Int) throws -> [Double] {
        let width = rows.count / max(1, n), inputs = width - 1
        var x = [Float](repeating: 0, count: n * inputs), labels = [Int](repeating: 0, count: n)
        for r in 0..<n {
            for c in 0..<inputs { x[r * inputs + c] = Float(rows[r * width + c]) }
            let l = rows[r * width + inputs]
            guard l >= 0, l < Double(classes), l == l.rounded() else {
                throw JobError("\(file): row \(firstRow + r + 1) has label \(l), expected an integer in 0..<\(classes)")
            }
            labels[r] = Int(l)
            if let vocab = tokens, let bad = x[(r * inputs)..<((r + 1) * inputs)].first(where: { !($0 >= 0 && $0 < Float(vocab) && $0 == $0.rounded()) }) {
                throw JobError("\(file): row \(firstRow + r + 1) holds \(bad); token ids must be integers in 0..<\(vocab)")
            }
        }
        let logits = model(Graph(recording: false).constant(Tensor(shape: [n, inputs], x))).value
        return logits.withData { z in
            (0..<n).map { r in
                let row = (0..<classes).map { Double(z[r * classes + $0]) }
                let top = row.max() ?? 0
                return Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - top) }) - (row[labels[r]] - top)
            }
        }
    }

    /// The single-process reference: the whole input as one range, one thread.
    public static func runLocal(_ spec: MapReduceSpec) throws -> Partial {
        let rows: UInt64
        switch spec.input {
        case .npy(let path): rows = UInt64(try NpyFile(path: path).header.rows)
        default: rows = spec.input.generatedCount ?? 0
        }
        return try run(spec, start: 0, count: rows)
    }
}

/// Accumulates mapped values into a `Partial`.
struct Accumulator {
    var partial: Partial
    let histograms: [(low: Double, high: Double, scale: Double, bins: Int)]
    /// Most distinct values class_counts keeps.
    static let classLimit = 65_536

    init(_ shape: PartialShape) {
        partial = Partial(shape)
        histograms = shape.histograms.map { ($0.low, $0.high, Double($0.bins) / ($0.high - $0.low), $0.bins) }
    }

    /// Adds `values` (overwritten by f of them), the first of which is input element `first`.
    mutating func add(_ values: UnsafeMutableBufferPointer<Double>, map: ElementFunction, first: UInt64) throws {
        switch map {
        case .identity: break
        case .square: for i in values.indices { values[i] = values[i] * values[i] }
        case .abs: for i in values.indices { values[i] = Swift.abs(values[i]) }
        case .affine(let a, let b): for i in values.indices { values[i] = a * values[i] + b }
        default: for i in values.indices { values[i] = map.apply(values[i]) }
        }
        let (mn, mx, nans) = Self.extremes(UnsafeBufferPointer(values), partial.min, partial.max)
        partial.sum.add(contentsOf: UnsafeBufferPointer(values))   // (NaN skipped there: NaNs are counted above)
        if partial.squares != nil {
            // x² = p + (x·x − p) exactly: both parts of every square, through the bulk path; values of 2⁵⁰⁰ or more
            // scaled by 2⁻⁵⁴⁴ first (exact), into their own sum, so that no square leaves the double range
            @inline(__always) func square(_ v: Double) -> (Double, Double) {
                let p = v * v
                return (p, p.isFinite ? (-p).addingProduct(v, v) : 0)
            }
            var big: [Double] = []
            let parts = [Double](unsafeUninitializedCapacity: 2 * values.count) { buf, n in
                for x in values where !x.isNaN {
                    if Swift.abs(x) >= Partial.bigValue && x.isFinite {
                        let (p, e) = square(x * Partial.bigScale)
                        big.append(p)
                        big.append(e)
                        continue
                    }
                    (buf[n], buf[n + 1]) = square(x)
                    n += 2
                }
            }
            parts.withUnsafeBufferPointer { partial.squares!.add(contentsOf: $0) }
            if !big.isEmpty { big.withUnsafeBufferPointer { partial.bigSquares!.add(contentsOf: $0) } }
        }
        partial.min = mn
        partial.max = mx
        partial.nans += nans
        partial.count += UInt64(values.count)
        for (h, g) in histograms.enumerated() {
            partial.histograms[h].withUnsafeMutableBufferPointer { counts in
                for x in values where x >= g.low && x <= g.high {
                    var b = Int((x - g.low) * g.scale)
                    if b >= g.bins { b = g.bins - 1 }
                    counts[b] += 1
                }
            }
        }
        if partial.top != nil { rank(values, first: first) }
        if partial.classes != nil {
            for x in values where !x.isNaN { partial.classes![x == 0 ? 0 : x, default: 0] += 1 }   // (−0 counts as 0)
            guard partial.classes!.count <= Self.classLimit else {
                throw JobError("class_counts: more than \(Self.classLimit) distinct values (is the input made of class labels?)")
            }
        }
        partial.values?.append(contentsOf: values)
    }

    /// min, max (NaN skipped) and the NaN count of `values`, from `mn`, `mx`: selects, no branches to mispredict.
    @inline(never)
    static func extremes(_ values: UnsafeBufferPointer<Double>, _ mn: Double, _ mx: Double) -> (Double, Double, UInt64) {
        var lo = mn, hi = mx, nans: UInt64 = 0
        guard let p = values.baseAddress else { return (lo, hi, 0) }
        for i in 0..<values.count {
            let x = p[i]
            nans &+= x.isNaN ? 1 : 0
            lo = x < lo ? x : lo   // (NaN compares false: never taken)
            hi = x > hi ? x : hi
        }
        return (lo, hi, nans)
    }

    /// Keeps the k largest (value, index) pairs seen: candidates that rank before the current k-th are gathered,
    /// sorted and cut back to k whenever there are 2k of them (O(n log k) whatever the input's order).
    mutating func rank(_ values: UnsafeMutableBufferPointer<Double>, first: UInt64) {
        let k = partial.topK
        var top = partial.top!
        var threshold = top.count == k ? top.last : nil
        func cut() {
            top.sort { $0.before($1) }
            if top.count > k { top.removeLast(top.count - k) }
            threshold = top.count == k ? top.last : nil
        }
        for (i, x) in values.enumerated() where !x.isNaN {
            let r = Partial.Ranked(value: x, index: first + UInt64(i))
            if let t = threshold, !r.before(t) { continue }
            top.append(r)
            if top.count >= 2 * k { cut() }
        }
        cut()
        partial.top = top
    }
}

/// Counter-based generators: x_i depends only on (seed, i), so any shard computes its own range.
public enum Generator {
    /// Uniform in [0, 1) from (seed, counter): the `counter + 1`-th value of `SeededRandom(seed:)`, reached directly.
    @inline(__always)
    public static func unit(seed: UInt64, _ counter: UInt64) -> Double {
        Double(SeededRandom.mix(seed &+ (counter &+ 1) &* SeededRandom.gamma) >> 11) * 0x1p-53
    }

    public static func value(_ source: DataSource, _ i: UInt64) -> Double {
        switch source {
        case .npy: return .nan
        case .range(_, let a, let step): return a + Double(i) * step
        case .uniform(_, let seed, let lo, let hi): return lo + (hi - lo) * unit(seed: seed, i)
        case .normal(_, let seed, let mean, let std):
            let u1 = 1 - unit(seed: seed, 2 &* i)          // (0, 1]
            let u2 = unit(seed: seed, 2 &* i &+ 1)
            return mean + std * (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
        }
    }

    public static func fill(_ source: DataSource, from first: UInt64, into out: UnsafeMutableBufferPointer<Double>) {
        switch source {
        case .range(_, let a, let step):
            for k in out.indices { out[k] = a + Double(first + UInt64(k)) * step }
        case .uniform(_, let seed, let lo, let hi):
            let w = hi - lo
            for k in out.indices { out[k] = lo + w * unit(seed: seed, first + UInt64(k)) }
        default:
            for k in out.indices { out[k] = value(source, first + UInt64(k)) }
        }
    }
}

/// Open `.npy` files by path, so consecutive shards of one job do not re-open and re-parse the header.
/// Not thread-safe: one per compute thread.
public final class NpyFileCache {
    private var files: [String: (file: NpyFile, identity: [Int])] = [:]
    private var order: [String] = []
    private let capacity: Int

    public init(capacity: Int = 8) { self.capacity = capacity }

    /// The open file, re-opened when the path now names a different or modified file.
    public func file(_ path: String) throws -> NpyFile {
        var st = stat()
        let identity = stat(path, &st) == 0
            ? [Int(st.st_ino), Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec)] : []
        if let cached = files[path], cached.identity == identity, !identity.isEmpty { return cached.file }
        let f = try NpyFile(path: path)
        if files[path] == nil { order.append(path) }
        files[path] = (f, identity)
        if order.count > capacity { files[order.removeFirst()] = nil }
        return f
    }
}

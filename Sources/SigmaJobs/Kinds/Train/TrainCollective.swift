import Foundation
import SigmaEngine
import SigmaModel
import SigmaProtocol

// A collective training step (docs/architecture.md, "Collective steps"): the workers of a step reduce its gradient
// among themselves instead of through the coordinator. Worker r of W owns parameter slice r; it sends every other
// worker its partial sums' part of that worker's slice (reduce-scatter), makes the tree's additions and the SGD step
// on its own slice from what it receives — element by element the same operations as the coordinator's pass, so
// the same bits — and sends its updated slice to all (all-gather). The coordinator sees only each worker's loss
// statistics, and, at snapshot steps, the slices of the weights and the optimizer state.

/// How a collective step reaches the other workers of its step: the worker's `PeerMesh`, or a stand-in in tests.
public protocol PeerExchange: Sendable {
    /// Queues `frames` for `peer` under `tag`; never blocks.
    func send(to peer: PeerAddress, tag: [UInt8], frames: [Frame])
    /// The frames of `count` messages with `tag` (each from another peer), blocking until they are in; throws when
    /// the step is cancelled or the peers do not answer in time.
    func receive(tag: [UInt8], count: Int) throws -> [[Frame]]
}

public enum Collective {
    /// The elements of the parameters (laid end to end) that rank `rank` of `size` owns: equal slices, cut on
    /// multiples of 16 (64-byte lines).
    public static func slice(_ rank: Int, of size: Int, parameters: Int) -> Range<Int> {
        func cut(_ r: Int) -> Int { r >= size ? parameters : (parameters * r / size) & ~15 }
        return cut(rank)..<cut(rank + 1)
    }

    /// The other ranks in the order rank `rank` sends to them: from rank + 1 round to rank − 1, so the members' first
    /// messages go to W different ranks, not all to rank 0 (each receives its senders' slices one after the other).
    public static func sendOrder(rank: Int, size: Int) -> [Int] { (1..<max(1, size)).map { (rank + $0) % size } }

    /// A message's tag: job, segment, step and phase (0: partial sums, 1: updated weights).
    static func tag(job: JobID, segment: UInt32, step: UInt32, phase: UInt8) -> [UInt8] {
        var w = ByteWriter(capacity: 17)
        w.u64(job); w.u32(segment); w.u32(step); w.u8(phase)
        return w.bytes
    }

    /// The job and segment a tag (`tag`'s layout) names; nil for a tag of another layout.
    public static func jobAndSegment(ofTag tag: [UInt8]) -> (job: JobID, segment: UInt32)? {
        guard tag.count == 17 else { return nil }
        return tag.withUnsafeBytes { b in
            (UInt64(littleEndian: b.loadUnaligned(as: UInt64.self)), UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        }
    }

    /// Who sent a message, and the micro-batches its partial sums cover: `u16 rank, u64 start, u64 count`.
    static func meta(rank: Int, range: Range<Int>) -> Frame {
        var w = ByteWriter(capacity: 18)
        w.u16(UInt16(rank)); w.u64(UInt64(range.lowerBound)); w.u64(UInt64(range.count))
        return Frame(w.bytes)
    }

    static func readMeta(_ f: Frame, size: Int, total: Int) throws -> (rank: Int, range: Range<Int>) {
        try f.withUnsafeBytes { b in
            var r = ByteReader(b)
            let rank = Int(try r.u16("peer.rank")), start = try r.u64("peer.start"), count = try r.u64("peer.count")
            try r.finish("peer")
            guard rank < size, start <= UInt64(total), count <= UInt64(total) - start else {
                throw JobError("collective step: a peer sent rank \(rank), micro-batches \(start)+\(count) (the step has \(size) ranks, \(total) micro-batches)")
            }
            return (rank, Int(start)..<Int(start + count))
        }
    }
}

/// What a worker returns for a collective step: its partial sums' statistics (the gradient tree's wire form with no
/// values), and at a snapshot step its slice of the updated weights and of the optimizer's state (SGD: the velocity;
/// Adam: the first, then the second moments — `TrainJob.collectiveStateVectors` of them):
/// `u32 stats length, stats, u8 snapshot` then, with one, `u64 start, u64 count, count float32 weights, k·count float32 state`.
public struct CollectiveResult {

    static func encode(stats: Frame, snapshot: (range: Range<Int>, weights: UnsafeBufferPointer<Float>, state: [Float])?) -> Frame {
        let n = snapshot?.range.count ?? 0
        return Frame(shareable: 4 + stats.count + 1 + (snapshot.map { 16 + 4 * n + 4 * $0.state.count } ?? 0)) { dst in
            var o = 0
            func put(_ bytes: UnsafeRawBufferPointer) {
                dst.baseAddress!.advanced(by: o).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                o += bytes.count
            }
            withUnsafeBytes(of: UInt32(stats.count).littleEndian) { put($0) }
            stats.withUnsafeBytes { if $0.count > 0 { put($0) } }
            withUnsafeBytes(of: UInt8(snapshot == nil ? 0 : 1)) { put($0) }
            guard let s = snapshot else { return }
            withUnsafeBytes(of: UInt64(s.range.lowerBound).littleEndian) { put($0) }
            withUnsafeBytes(of: UInt64(n).littleEndian) { put($0) }
            if n > 0 {
                put(UnsafeRawBufferPointer(s.weights))
                s.state.withUnsafeBytes { put($0) }
            }
        }
    }

    /// Decodes a result for micro-batches `range` of a step of `total`: its partial sums' statistics; a snapshot's
    /// slice (which must be `expected`) goes to `slice` as the weights' and the `stateVectors` state vectors' bytes,
    /// read in place.
    static func decode(_ payload: Frame, range: Range<Int>, total: Int, expected: Range<Int>?, stateVectors: Int,
                       slice: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) throws -> [(TreeNode, ArrivedPartial)] {
        try payload.withUnsafeBytes { b in
            var r = ByteReader(b)
            let n = Int(try r.u32("collective.stats.length"))
            let statsBytes = try r.bytes(n, "collective.stats")
            let stats = try GradientTree.decode(Frame(statsBytes), range: range, total: total, parameters: 0)
            var weights: UnsafeRawBufferPointer? = nil, velocity: UnsafeRawBufferPointer? = nil
            switch try r.u8("collective.snapshot") {
            case 0:
                guard expected == nil else { throw ByteReadError(field: "collective.snapshot", problem: "missing at a snapshot step") }
            case 1:
                let start = try r.u64("collective.slice.start"), count = try r.u64("collective.slice.count")
                guard let e = expected, start == UInt64(e.lowerBound), count == UInt64(e.count) else {
                    throw ByteReadError(field: "collective.slice", problem: "elements \(start)+\(count), expected \(expected.map { "\($0)" } ?? "none")")
                }
                weights = try r.bytes(e.count * 4, "collective.slice.weights")
                velocity = try r.bytes(e.count * 4 * stateVectors, "collective.slice.state")
            case let f:
                throw ByteReadError(field: "collective.snapshot", problem: "\(f) is not 0 or 1")
            }
            try r.finish("collective")
            if let weights, let velocity { slice(weights, velocity) }
            return stats
        }
    }
}

/// How often a collective segment's snapshots fall by time: every `seconds`, or — where a snapshot costs more than
/// `share` of that — no sooner than its measured cost ÷ `share`. A snapshot moves the weights and the optimizer's
/// state to the coordinator (135 MB a member for an unfrozen MiniLM with Adam on two workers: about a second a
/// snapshot on a 2-core machine), so at 5 s it would cost a fifth of the time; the steps between snapshots are what a
/// lost member makes run again. The cost is a snapshot round's length less the last regular round's, both measured
/// from one round's start to the next (a segment's first round, which carries its start, is not measured).
public struct SnapshotCadence: Sendable {
    public var seconds: Double
    public var share: Double
    /// The last regular round's and the last snapshot's extra nanoseconds, once measured.
    public private(set) var regular: UInt64? = nil
    public private(set) var cost: UInt64 = 0
    private var last: (at: UInt64, snapshot: Bool, measured: Bool)? = nil

    public init(seconds: Double = 5, share: Double = 0.05) {
        self.seconds = seconds
        self.share = share
    }

    /// A round begins at `now` (monotonic ns); `snapshot`: it ends in one. The round before it ends here.
    public mutating func roundBegins(at now: UInt64, snapshot: Bool) {
        if let l = last, l.measured, now > l.at {
            let length = now - l.at
            if !l.snapshot { regular = length } else if let r = regular { cost = length > r ? length - r : 0 }
        }
        last = (now, snapshot, last != nil)
    }

    /// A segment starts (or goes back to its snapshot): the next round carries the start and is not measured.
    public mutating func restart() { last = nil }

    /// Nanoseconds from one snapshot to the next by time.
    public var interval: Double { max(seconds * 1e9, Double(cost) / share) }
}

/// Where a snapshot step's slices are gathered (the weights straight into the memory that becomes the next PARAMS
/// frame), until the step is complete.
final class SnapshotBuffers: @unchecked Sendable {
    let count: Int
    private(set) var weights: UnsafeMutableRawPointer?
    /// The optimizer's state vectors, each laid end to end over the parameters, one after the other.
    let state: UnsafeMutableBufferPointer<Float>
    let stateVectors: Int

    init(parameters: Int, stateVectors: Int) {
        count = parameters
        self.stateVectors = stateVectors
        weights = UnsafeMutableRawPointer.allocate(byteCount: max(1, parameters * 4), alignment: 64)
        state = .allocate(capacity: max(1, parameters * stateVectors))
    }

    /// A rank's slice: its weights, and its part of each state vector (`stateVectors` of `slice.count` floats).
    func fill(_ slice: Range<Int>, weights w: UnsafeRawBufferPointer, state s: UnsafeRawBufferPointer) {
        weights!.advanced(by: slice.lowerBound * 4).copyMemory(from: w.baseAddress!, byteCount: w.count)
        for j in 0..<stateVectors where !slice.isEmpty {
            UnsafeMutableRawPointer(state.baseAddress!).advanced(by: (j * count + slice.lowerBound) * 4)
                .copyMemory(from: s.baseAddress!.advanced(by: j * slice.count * 4), byteCount: slice.count * 4)
        }
    }

    /// The weights as a frame (which owns their memory from now on).
    func takeWeights() -> Frame {
        let w = weights!
        weights = nil
        return Frame(borrowing: UnsafeRawPointer(w), count: count * 4) { p in p.map { UnsafeMutableRawPointer(mutating: $0).deallocate() } }
    }

    deinit {
        weights?.deallocate()
        state.deallocate()
    }
}

/// A worker's part of a job's collective steps: its rank in the current segment, its slice and its part of the
/// optimizer's state there (SGD: the velocity; Adam: the first, then the second moments — each `slice.count` floats).
struct CollectiveState {
    var segment: UInt32
    var rank: Int, size: Int
    var slice: Range<Int>
    var state: [Float]
    /// No state yet: SGD's first step (v = g).
    var first: Bool
}

extension TrainWorker {
    /// One collective step of micro-batches `range` (docs/architecture.md "Collective steps"): the RESULT payload
    /// (`CollectiveResult`). `params`: the coordinator's PARAMS at a segment's start (the weights, then the
    /// optimizer's state when there is one — all of it, or this member's slice of it — float32), nil within a segment (this worker holds the
    /// weights of `step` from the last all-gather, and its slice of the state).
    public func collectiveStep(job: JobID, step: Int, params: Frame?, range: Range<Int>, _ c: CollectiveStep,
                               exchange: any PeerExchange) throws -> Frame {
        let k = spec.collectiveStateVectors
        let size = c.peers.count, rank = Int(c.rank), n = parameterCount
        let version = UInt32(step)
        let total = plan.microBatches(step: step)
        var weights: Frame
        if let p = params {
            let slice = Collective.slice(rank, of: size, parameters: n)
            let whole = n * 4 * (1 + k), own = (n + k * slice.count) * 4
            guard p.count == n * 4 || p.count == whole || p.count == own else {
                throw JobError("collective PARAMS: \(p.count) bytes; rank \(rank) of \(size) needs the model's \(n) float32 weights (\(n * 4) bytes), then the \(spec.optimizer.kind) state's \(k) vector(s) whole (\(whole) bytes in all) or its slice of them (\(own))")
            }
            weights = Frame(borrowing: p.withUnsafeBytes { $0.baseAddress }, count: n * 4) { _ in _ = p }
            // This member's part of each state vector: read from the whole vectors, or its slices one after the other.
            var state = [Float](repeating: 0, count: k * slice.count)
            if p.count > n * 4 {
                p.withUnsafeBytes { b in
                    for j in 0..<k {
                        let at = p.count == own ? n + j * slice.count : n * (1 + j) + slice.lowerBound
                        let part = Array(floats: UnsafeRawBufferPointer(rebasing: b[at * 4..<(at + slice.count) * 4]))
                        state.replaceSubrange(j * slice.count..<(j + 1) * slice.count, with: part)
                    }
                }
            }
            collective = CollectiveState(segment: c.segment, rank: rank, size: size, slice: slice, state: state, first: p.count == n * 4)
            loadedVersion = nil   // (the segment's weights are loaded by `prepare`, whatever was held before)
        } else {
            guard let s = collective, s.segment == c.segment, s.rank == rank, s.size == size, loadedVersion == version, let held = self.params else {
                throw JobError("collective step \(step + 1): this worker does not hold the weights of segment \(c.segment) (it restarted or missed a step); the coordinator starts the segment again")
            }
            weights = held
        }
        guard var state = collective else { throw JobError("collective step without a segment") }
        let rowsOf = try prepare(step: step, version: version, params: weights, range: range)
        let cover = GradientTree.cover(range, total: total)
        // (partial sums of this worker's micro-batches, each a whole gradient, on its lanes as for any step)
        let known = try parallelSums(cover, total: total, version: version, rowsOf: rowsOf)
        let partials: [GradientSum] = try cover.map { node in
            if let known { return GradientTree.sum(node, total: total, known: known) }
            return try subtree(node, total: total, rowsOf: rowsOf, on: model)
        }
        // Reduce-scatter: every other rank gets its slice of each partial sum.
        let scatter = Collective.tag(job: job, segment: c.segment, step: version, phase: 0)
        let meta = Collective.meta(rank: rank, range: range)
        for j in Collective.sendOrder(rank: rank, size: size) {
            let s = Collective.slice(j, of: size, parameters: n)
            let payload = try GradientTree.encode(nodes: cover, parameters: s.count) { node, dst in
                let p = partials[cover.firstIndex(of: node)!]
                p.values.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[s.lowerBound * 4..<s.upperBound * 4])) }
                return (p.loss, p.correct, p.rows)
            }
            exchange.send(to: c.peers[j], tag: scatter, frames: [meta, payload])
        }
        var parts: [TreeNode: ArrivedPartial] = [:]
        for (node, p) in zip(cover, partials) {
            parts[node] = ArrivedPartial(values: .inArray(p.values, offset: state.slice.lowerBound, count: state.slice.count), loss: p.loss,
                                         correct: p.correct, rows: p.rows)
        }
        var seen: Set<Int> = [rank]
        for frames in try exchange.receive(tag: scatter, count: size - 1) {
            guard frames.count == 2 else { throw JobError("collective step \(step + 1): a peer's partial sums came in \(frames.count) frames, expected 2") }
            let (from, theirs) = try Collective.readMeta(frames[0], size: size, total: total)
            guard seen.insert(from).inserted else { throw JobError("collective step \(step + 1): rank \(from) sent its partial sums twice") }
            for (node, p) in try GradientTree.decode(frames[1], range: theirs, total: total, parameters: state.slice.count) {
                guard parts.updateValue(p, forKey: node) == nil else { throw JobError("collective step \(step + 1): two ranks sent partial sums for node \(node)") }
            }
        }
        let reduced: ReducedGradient
        do { reduced = try GradientTree.reduce(parts, total: total) } catch { throw JobError("collective step \(step + 1): \(error)") }
        // The optimizer's step on the owned slice, the tree's additions made inside its pass (as the coordinator's),
        // the updated slice written straight into the frame the all-gather sends (in a pool segment when shared
        // memory is on: members on this machine read it there, no copy per peer).
        let o = spec.optimizer, count = state.slice.count, lr = spec.learningRate(at: step, totalSteps: plan.totalSteps)
        let mine = weights.withUnsafeBytes { w in
            let base = w.baseAddress!.assumingMemoryBound(to: Float.self) + state.slice.lowerBound
            let first = state.first
            return state.state.withUnsafeMutableBufferPointer { s in
                Frame(shareable: count * 4) { out in
                    guard count > 0 else { return }
                    reduced.withSumTree { tree in
                        if let adam = spec.makeOptimizer() as? Adam {
                            adam.learningRate = lr
                            adam.sliceStep(weights: base, m: s.baseAddress!, v: s.baseAddress! + count, count: count, sumOf: tree,
                                           divisor: Float(reduced.rows), step: step + 1, writingTo: out.baseAddress!.assumingMemoryBound(to: Float.self))
                        } else {
                            SGD.sliceStep(weights: base, velocity: s.baseAddress!, first: first, count: count, sumOf: tree,
                                          divisor: Float(reduced.rows), learningRate: lr, momentum: Float(o.momentum),
                                          weightDecay: Float(o.weightDecay), writingTo: out.baseAddress!)
                        }
                    }
                }
            }
        }
        state.first = false
        collective = state
        // All-gather: the updated slice to every other rank; theirs into the next weights.
        let gather = Collective.tag(job: job, segment: c.segment, step: version, phase: 1)
        for j in Collective.sendOrder(rank: rank, size: size) { exchange.send(to: c.peers[j], tag: gather, frames: [meta, mine]) }
        let arrived = try exchange.receive(tag: gather, count: size - 1)
        var filled: Set<Int> = [rank]
        let next = try Frame(shareable: n * 4) { dst in
            mine.withUnsafeBytes { if $0.count > 0 { dst.baseAddress!.advanced(by: state.slice.lowerBound * 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            for frames in arrived {
                guard frames.count == 2 else { throw JobError("collective step \(step + 1): a peer's weights came in \(frames.count) frames, expected 2") }
                let (from, _) = try Collective.readMeta(frames[0], size: size, total: total)
                let s = Collective.slice(from, of: size, parameters: n)
                guard filled.insert(from).inserted, frames[1].count == s.count * 4 else {
                    throw JobError("collective step \(step + 1): rank \(from) sent \(frames[1].count) bytes of weights, twice or not its slice's \(s.count * 4)")
                }
                frames[1].withUnsafeBytes { dst.baseAddress!.advanced(by: s.lowerBound * 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        }
        try load(next, version: version + 1)
        let stats = try GradientTree.encode(nodes: cover, parameters: 0) { node, _ in
            let p = partials[cover.firstIndex(of: node)!]
            return (p.loss, p.correct, p.rows)
        }
        return mine.withUnsafeBytes { w in
            CollectiveResult.encode(stats: stats, snapshot: c.snapshot ? (state.slice, w.bindMemory(to: Float.self), state.state) : nil)
        }
    }
}

extension TrainJob {
    /// The optimizer the spec names, with its hyperparameters (the driver's, and a collective step owner's).
    public func makeOptimizer() -> StatefulOptimizer & TreeStepOptimizer {
        let o = optimizer
        switch o.kind {
        case "sgd": return SGD(learningRate: Float(o.lr), momentum: Float(o.momentum), weightDecay: Float(o.weightDecay))
        case "adam": return Adam(learningRate: Float(o.lr), weightDecay: Float(o.weightDecay))
        default: return Adam(learningRate: Float(o.lr), weightDecay: Float(o.weightDecay), decoupled: true)
        }
    }

    /// Float vectors of optimizer state per parameter that a collective segment carries: SGD's velocity, Adam's two
    /// moments.
    public var collectiveStateVectors: Int { optimizer.kind == "sgd" ? 1 : 2 }

    /// The learning rate of step `s` (0-based): warm-up, then constant or cosine — the driver's and a collective
    /// step's owner's alike.
    public func learningRate(at s: Int, totalSteps: Int) -> Float {
        let o = optimizer
        if o.schedule == "cosine" {
            return WarmupCosine(peak: Float(o.lr), warmupSteps: o.warmupSteps, totalSteps: totalSteps).rate(at: s)
        }
        if s < o.warmupSteps { return Float(o.lr) * Float(s + 1) / Float(o.warmupSteps) }
        return Float(o.lr)
    }
}

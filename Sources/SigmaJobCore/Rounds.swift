import Foundation
import SigmaModel

// What the coordinator core knows of a job's code: the driver of its rounds and what a round's end hands back.
// Pure (no engine, no clocks): the drivers themselves live in SigmaJobs.

/// A file a job produces (a checkpoint): the coordinator's shell writes it, atomically.
public struct OutputFile: Sendable, Equatable {
    public let path: String
    public let bytes: Data
    public init(path: String, bytes: Data) {
        self.path = path
        self.bytes = bytes
    }
}

/// What happened when a round's last shard arrived.
public struct RoundEnd: Sendable {
    /// The job is done; `results` is its result bundle.
    public var finished = false
    public var results: [UInt8] = []
    public var files: [OutputFile] = []
    public var log: [String] = []
    /// Time the reduction (and optimizer step) took, ns — set by the driver: the round's completion plus
    /// the additions the last shard's arrival made (`arrivalNanos`), i.e. the reduce on the step's critical path.
    public var reduceNanos: UInt64 = 0
    /// What the round's last shard's arrival took, ns (a training step's stores its partial sums; the additions
    /// left up the tree are made in the optimizer's pass).
    public var arrivalNanos: UInt64 = 0
    /// The part of it the optimizer step took (with the tree's additions left, which it fuses), ns; 0 for jobs
    /// without one.
    public var optimizerNanos: UInt64 = 0
    public init() {}
}


public struct RoundProgress: Sendable, Equatable {
    public var step: Int, steps: Int
    public var loss: Double, accuracy: Double
    /// The last held-out loss (a regressor's mean squared error); NaN when none yet.
    public var evalLoss: Double
    /// Steps in one pass over the training rows (0 when not a training job).
    public var stepsPerEpoch: Int
    public init(step: Int, steps: Int, loss: Double, accuracy: Double, evalLoss: Double = .nan, stepsPerEpoch: Int = 0) {
        self.evalLoss = evalLoss
        self.step = step
        self.steps = steps
        self.loss = loss
        self.accuracy = accuracy
        self.stepsPerEpoch = stepsPerEpoch
    }
}

/// The coordinator-side logic of a job, whatever its kind (map-reduce, infer, eval, embed: one round; train: one
/// round per step). The shell makes it (`JobKind.prepare`); the coordinator core hands it shard payloads and asks
/// for the next round.
public protocol RoundDriver: AnyObject, Sendable {
    var kind: String { get }
    /// The current round (a training step), sent in ASSIGN.
    var round: UInt32 { get }
    /// Parameters the current round's shards need (PARAMS, version = `round`), if any.
    var params: Frame? { get }
    /// Items the round's ranges count ("micro-batches", "rows", "lines"), for messages.
    var unit: String { get }
    /// Units of work in the current round (the total count of its ranges).
    var roundItems: Int { get }
    /// Splits the current round into shards, remembered until the round ends. `shares` are relative sizes, one per
    /// worker slot: a training step gives each share a contiguous run of micro-batches in proportion (empty
    /// shares are left out; `share` says which share each range is for); single-round jobs cut finer shards
    /// (4 per share) that the scheduler places as workers free up.
    func plan(shares: [Double]) -> [ShardPlan]
    /// Checks and keeps shard `index`'s payload; an error says what was wrong with it.
    func accept(shard index: Int, payload: Frame) throws
    /// Every shard of the round is in: reduce, and either start the next round or finish. The driver sets
    /// `reduceNanos` (the core never reads clocks).
    func completeRound() throws -> RoundEnd
    var progress: RoundProgress { get }
    /// What the job plans, for the log line that accepts it ("600 steps of 32 rows (…)"); nil: the shard count says it.
    var planSummary: String? { get }
    /// Rounds are optimizer steps: each gives every worker one share (a contiguous run of micro-batches), and
    /// status shows the step, its loss and accuracy (`progress`). False: a round's shares are worker slots.
    var sharesPerWorker: Bool { get }
    /// A restart may resume the job from its committed shards (they are journaled): true for single-round jobs;
    /// false for training, whose shards are one step's gradients (a restarted train job starts over).
    var resumesFromShards: Bool { get }
}

/// A driver whose rounds may be collective (docs/architecture.md "Collective steps"): the workers of a round reduce it
/// among themselves, and the driver keeps a snapshot of the weights and optimizer state it can go back to. Nothing
/// here has a default: a driver that lost one of these would otherwise compile and answer as if the coordinator
/// reduced every round (it once lost `atSnapshot` and `snapshotDue` that way, silently; a test caught it). The core
/// asks a driver that is not one of these for nothing collective.
public protocol CollectiveRounds: RoundDriver {
    /// The job's rounds may be collective (training with SGD, Adam or AdamW and float32 gradients).
    var collectiveCapable: Bool { get }
    /// Workers in the current collective segment (0: the coordinator reduces the rounds).
    var segmentSize: Int { get }
    /// Bytes of the largest PARAMS a member gets at the start of a collective segment when the optimizer's state is
    /// shared out among `size` members (the weights and its slice of the state; 1: all of the state).
    func segmentStartBytes(members size: Int) -> Int
    /// The PARAMS for member `rank` at the current collective segment's start, the optimizer's state shared out among
    /// `size` (the weights and that member's slice of the state; size 1: all of it, one frame for every member);
    /// elsewhere `params`.
    func params(member rank: Int, of size: Int) -> Frame?
    /// The driver holds the state of the current round (its snapshot is current): members may change here.
    var atSnapshot: Bool { get }
    /// The current round's end brings the workers' weights and optimizer state back (`plan` decides).
    var snapshotDue: Bool { get }
    /// Starts a collective segment of `size` (≥ 2) workers from the current state, or has the coordinator reduce
    /// again (0); only where `atSnapshot`. Returns the segment's number (messages of others are stale).
    func beginSegment(size: Int) -> UInt32
    /// A member of the segment was lost or failed: back to the last snapshot; returns the rounds that run again.
    func rollback() -> Int
}

extension RoundDriver {
    public var planSummary: String? { nil }
    public var sharesPerWorker: Bool { false }
    public var resumesFromShards: Bool { true }
}

/// Named result files of a job (`model.safetensors`, `history.json`, `predictions.npy`, …) in one payload:
/// `u32 count`, then per file `string name, u32 length, bytes`.
public enum ResultBundle {
    public static func encode(_ files: [(String, Data)]) -> [UInt8] {
        var w = ByteWriter(capacity: files.reduce(4) { $0 + 6 + $1.0.utf8.count + $1.1.count })
        w.u32(UInt32(files.count))
        for (name, data) in files {
            w.string(name)
            w.u32(UInt32(data.count))
            w.raw(Array(data))
        }
        return w.bytes
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> [(name: String, data: Data)] {
        var r = ByteReader(bytes)
        let n = try r.u32("results.count")
        guard n <= 64 else { throw ByteReadError(field: "results.count", problem: "\(n) files; at most 64") }
        var out: [(String, Data)] = []
        for _ in 0..<n {
            let name = try r.string("results.name")
            guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else {
                throw ByteReadError(field: "results.name", problem: "'\(name)' is not a plain file name")
            }
            let n = Int(try r.u32("results.data.length"))
            out.append((name, Data(try r.bytes(n, "results.data"))))
        }
        try r.finish("results")
        return out
    }
}

/// One shard of a round: a range of the round's units, and the share (worker slot) it was sized for.
public struct ShardPlan: Sendable, Equatable {
    public var start: UInt64
    public var count: UInt64
    public var share: Int?
    public init(start: UInt64, count: UInt64, share: Int? = nil) {
        self.start = start
        self.count = count
        self.share = share
    }
}

/// Why a job cannot run: names the file, tensor or field and what was wrong.
public struct JobError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

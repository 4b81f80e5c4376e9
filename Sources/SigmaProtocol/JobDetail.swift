import SigmaModel

/// One attempt of one shard: where it ran and when (`sigma job ID --shards`, `sigma trace`).
/// Times are nanoseconds since the job was submitted.
public struct AttemptRecord: Sendable, Equatable {
    public enum Outcome: UInt8, Sendable, CaseIterable, CustomStringConvertible {
        /// Still running; `ok`: its result was committed; `late`: a result that arrived after another attempt's;
        /// `lost`: its worker died or left; `declined`: a draining worker did not start it.
        case running = 0, ok = 1, failed = 2, cancelled = 3, lost = 4, declined = 5, late = 6
        public var description: String {
            switch self {
            case .running: "running"
            case .ok: "ok"
            case .failed: "failed"
            case .cancelled: "cancelled"
            case .lost: "lost"
            case .declined: "declined"
            case .late: "late"
            }
        }
    }
    /// Training step (0-based) or 0 for single-round jobs.
    public var round: UInt32
    /// Global shard index (as on the wire).
    public var shard: UInt32
    public var attempt: UInt32
    public var start: UInt64
    public var count: UInt64
    public var worker: String
    public var host: String
    /// A backup copy started by hedging.
    public var hedge: Bool
    public var queued: UInt64
    public var started: UInt64
    /// 0 while running.
    public var finished: UInt64
    /// Compute time the worker reported, ns (0 unless ok).
    public var compute: UInt64
    public var outcome: Outcome
    public var error: String

    public init(round: UInt32, shard: UInt32, attempt: UInt32, start: UInt64, count: UInt64, worker: String, host: String,
                hedge: Bool, queued: UInt64, started: UInt64, finished: UInt64 = 0, compute: UInt64 = 0,
                outcome: Outcome = .running, error: String = "") {
        self.round = round
        self.shard = shard
        self.attempt = attempt
        self.start = start
        self.count = count
        self.worker = worker
        self.host = host
        self.hedge = hedge
        self.queued = queued
        self.started = started
        self.finished = finished
        self.compute = compute
        self.outcome = outcome
        self.error = error
    }
}

/// One line of a job's log. `at`: nanoseconds since submission.
public struct JobLogLine: Sendable, Equatable {
    public typealias Level = LogLevel
    public var at: UInt64
    public var level: Level
    public var text: String
    public init(at: UInt64, level: Level, text: String) {
        self.at = at
        self.level = level
        self.text = text
    }
}

/// DETAIL-REPLY: one job in depth — its summary, provenance of the job's inputs, its log and its shard attempts.
public struct JobDetail: Sendable, Equatable {
    public var job: ClusterStatus.Job
    /// The policy that placed this job's shards.
    public var policy: String
    /// Digest of the job spec as submitted, and of its input and model files ("" when not read by the coordinator).
    public var specDigest: String
    public var inputDigest: String
    public var modelDigest: String
    /// Absolute index of `logs[0]` in the job's log, and lines in the log so far.
    public var logFrom: UInt32
    public var logTotal: UInt32
    public var logs: [JobLogLine]
    /// Attempt records dropped to bound memory (the oldest go first).
    public var attemptsDropped: UInt32
    public var attempts: [AttemptRecord]

    public init(job: ClusterStatus.Job, policy: String, specDigest: String, inputDigest: String, modelDigest: String,
                logFrom: UInt32, logTotal: UInt32, logs: [JobLogLine], attemptsDropped: UInt32, attempts: [AttemptRecord]) {
        self.job = job
        self.policy = policy
        self.specDigest = specDigest
        self.inputDigest = inputDigest
        self.modelDigest = modelDigest
        self.logFrom = logFrom
        self.logTotal = logTotal
        self.logs = logs
        self.attemptsDropped = attemptsDropped
        self.attempts = attempts
    }

    public func encode(into w: inout ByteWriter) {
        job.encode(into: &w)
        w.string(policy); w.string(specDigest); w.string(inputDigest); w.string(modelDigest)
        w.u32(logFrom); w.u32(logTotal); w.u32(UInt32(logs.count))
        for l in logs { w.u64(l.at); w.u8(l.level.rawValue); w.string(l.text) }
        w.u32(attemptsDropped); w.u32(UInt32(attempts.count))
        for a in attempts {
            w.u32(a.round); w.u32(a.shard); w.u32(a.attempt); w.u64(a.start); w.u64(a.count); w.string(a.worker); w.string(a.host)
            w.bool(a.hedge); w.u64(a.queued); w.u64(a.started); w.u64(a.finished); w.u64(a.compute); w.u8(a.outcome.rawValue)
            w.string(a.error)
        }
    }

    public static func decode(from r: inout ByteReader) throws -> JobDetail {
        let job = try ClusterStatus.Job.decode(from: &r)
        let policy = try r.string("detail.policy"), spec = try r.string("detail.spec_digest")
        let input = try r.string("detail.input_digest"), model = try r.string("detail.model_digest")
        let logFrom = try r.u32("detail.log_from"), logTotal = try r.u32("detail.log_total")
        let nl = try r.u32("detail.logs")
        guard Int(nl) <= r.remaining / 13 + 1 else { throw ByteReadError(field: "detail.logs", problem: "count \(nl) exceeds the message") }
        var logs: [JobLogLine] = []
        for _ in 0..<nl {
            let at = try r.u64("log.at"), lv = try r.u8("log.level")
            guard let level = JobLogLine.Level(rawValue: lv) else { throw ByteReadError(field: "log.level", problem: "unknown level \(lv)") }
            logs.append(JobLogLine(at: at, level: level, text: try r.string("log.text")))
        }
        let dropped = try r.u32("detail.attempts_dropped")
        let na = try r.u32("detail.attempts")
        guard Int(na) <= r.remaining / 70 + 1 else { throw ByteReadError(field: "detail.attempts", problem: "count \(na) exceeds the message") }
        var attempts: [AttemptRecord] = []
        attempts.reserveCapacity(Int(na))
        for _ in 0..<na {
            var a = AttemptRecord(round: try r.u32("attempt.round"), shard: try r.u32("attempt.shard"), attempt: try r.u32("attempt.attempt"),
                                  start: try r.u64("attempt.start"), count: try r.u64("attempt.count"), worker: try r.string("attempt.worker"),
                                  host: try r.string("attempt.host"), hedge: try r.bool("attempt.hedge"), queued: try r.u64("attempt.queued"),
                                  started: try r.u64("attempt.started"))
            a.finished = try r.u64("attempt.finished")
            a.compute = try r.u64("attempt.compute")
            let ov = try r.u8("attempt.outcome")
            guard let o = AttemptRecord.Outcome(rawValue: ov) else { throw ByteReadError(field: "attempt.outcome", problem: "unknown outcome \(ov)") }
            a.outcome = o
            a.error = try r.string("attempt.error")
            attempts.append(a)
        }
        return JobDetail(job: job, policy: policy, specDigest: spec, inputDigest: input, modelDigest: model, logFrom: logFrom,
                         logTotal: logTotal, logs: logs, attemptsDropped: dropped, attempts: attempts)
    }
}

/// A job, numbered by the coordinator from 1.
public typealias JobID = UInt64
/// A shard's index within its job, from 0.
public typealias ShardIndex = UInt32
/// An attempt number for a shard, from 1; a retry or re-run gets the next one.
public typealias Attempt = UInt32

/// A ZeroMQ routing identity: who sent a message to the coordinator's ROUTER socket.
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var description: String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}

/// Where a job stands.
public enum JobState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case queued = 0, running = 1, completed = 2, failed = 3, cancelled = 4

    public var description: String {
        switch self {
        case .queued: "queued"
        case .running: "running"
        case .completed: "completed"
        case .failed: "failed"
        case .cancelled: "cancelled"
        }
    }

    public var isFinal: Bool { self == .completed || self == .failed || self == .cancelled }
}

/// Monotonic time in nanoseconds, as read by a shell and passed into a pure core.
public typealias Nanos = UInt64

/// How much a log line matters: the cores' `log` actions, a job's log lines (`JobLogLine`, on the wire as the raw value).
public enum LogLevel: UInt8, Sendable, Equatable, CustomStringConvertible {
    case debug = 0, info = 1, warning = 2, error = 3

    public var description: String {
        switch self {
        case .debug: "debug"
        case .info: "info"
        case .warning: "warning"
        case .error: "error"
        }
    }
}

/// Progress arithmetic shared by every progress line, table and page: one ETA.
public enum Pace {
    /// Seconds left to reach `total` at the pace so far (`done` of it in `elapsed` seconds); nil before any progress
    /// and once done.
    public static func secondsLeft(elapsed: Double, done: Double, total: Double) -> Double? {
        guard elapsed > 0, done > 0, done < total else { return nil }
        return elapsed / done * (total - done)
    }
}

/// A job's pace over its recent past: items per second and the seconds left, measured over the last `window` ns
/// from the samples the coordinator takes each tick. Start-up does not count (the first sample is the first
/// progress seen), and a job that stops making progress shows 0 items/s once its window has passed, not an old
/// figure. Pure: `observe` takes the time.
public struct RecentRate: Sendable, Equatable {
    public struct Sample: Sendable, Equatable {
        public var t: UInt64
        public var items: UInt64
        /// 0…1.
        public var progress: Double
    }
    public let window: UInt64
    /// Oldest first: the anchor (the newest sample at or before now − window, or the oldest) and those after it.
    public private(set) var samples: [Sample] = []

    public init(window: UInt64 = 10_000_000_000) { self.window = window }

    /// Records what the job has done by `now`; a sample equal to the last one adds nothing, and the first sample is
    /// taken only once there is progress (so the time before it, the start-up, is never in a rate).
    public mutating func observe(_ now: UInt64, items: UInt64, progress: Double) {
        if let last = samples.last, last.items == items, last.progress == progress { return }
        if samples.isEmpty, items == 0, progress == 0 { return }
        samples.append(Sample(t: now, items: items, progress: progress))
        drop(before: now)
    }

    private mutating func drop(before now: UInt64) {
        guard now > window else { return }
        let edge = now - window
        if let k = samples.lastIndex(where: { $0.t <= edge }), k > 0 { samples.removeFirst(k) }
    }

    /// (items/s, seconds left at that pace) at `now`; nil before two samples. Seconds left is nil while the pace is 0.
    public func rate(now: UInt64) -> (itemsPerSecond: Double, secondsLeft: Double?)? {
        var s = self
        s.drop(before: now)
        guard samples.count >= 2, let anchor = s.samples.first, let newest = s.samples.last, now > anchor.t else { return nil }
        let seconds = Double(now - anchor.t) / 1e9
        let items = Double(newest.items - anchor.items) / seconds, progress = (newest.progress - anchor.progress) / seconds
        return (items, progress > 0 ? (1 - newest.progress) / progress : nil)
    }
}

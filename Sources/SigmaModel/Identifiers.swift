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

import SigmaModel

/// The jobs a worker was told have ended (the most recent `keep`, oldest first) and how many it was ever told of.
/// Each compute context remembers the count it last saw and takes only the jobs added since — it used to take the
/// whole list, and walk its caches with it, after every job that ended.
public struct EndedJobs: Sendable {
    public private(set) var total = 0
    private var recent: [JobID] = []
    public let keep: Int

    public init(keep: Int = 256) { self.keep = Swift.max(1, keep) }

    public mutating func add(_ job: JobID) {
        recent.append(job)
        if recent.count > keep { recent.removeFirst(recent.count - keep) }
        total += 1
    }

    /// The jobs added after the first `seen` ones, oldest first (those still kept: a reader `keep` or more behind
    /// gets the last `keep`).
    public func since(_ seen: Int) -> [JobID] {
        Array(recent.suffix(Swift.max(0, Swift.min(recent.count, total - seen))))
    }
}

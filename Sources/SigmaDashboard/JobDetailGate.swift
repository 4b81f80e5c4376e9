import SigmaModel

/// Which `/api/jobs/ID` requests reach the coordinator. Each one that does puts ID on the coordinator's list of jobs
/// whose details its poller thread publishes for 10 s (CoordinatorShell.jobDetail), so only ids the coordinator can
/// hold get through (1 … its newest job), and at most `limit` different ids per `window`: a loop over ids answers
/// 404 or 429 at once and never grows that list. Pure: the shell passes the clock and the newest job id.
public struct JobDetailGate: Sendable {
    /// Different job ids that may be asked about per window (the page asks for one; a few tabs, a few more).
    public var limit = 16
    /// nanoseconds; a little longer than the coordinator keeps an asked-for id (10 s).
    public var window: UInt64 = 11_000_000_000
    /// Ids let through, and when (ns).
    private(set) var recent: [JobID: UInt64] = [:]

    public init() {}

    public enum Verdict: Sendable, Equatable {
        case ask(JobID)
        /// 400, 404 or 429, with a short text.
        case refuse(status: Int, message: String)
    }

    /// The id in the path (`raw`), checked against `newest` (the newest job the coordinator lists; nil: none yet).
    public mutating func admit(_ raw: String, newest: JobID?, now: UInt64) -> Verdict {
        guard let id = JobDetailGate.parse(raw) else {
            return .refuse(status: 400, message: "job id must be a number such as 12, got '\(raw.prefix(40))'")
        }
        guard id >= 1, let newest, id <= newest else {
            return .refuse(status: 404, message: "no job \(id) on this coordinator" + (newest.map { " (the newest is \($0))" } ?? ""))
        }
        recent = recent.filter { now &- $0.value < window }
        if recent[id] == nil, recent.count >= limit {
            return .refuse(status: 429, message: "details of \(limit) different jobs were asked for in the last \(window / 1_000_000_000) s; try again shortly")
        }
        recent[id] = now
        return .ask(id)
    }

    /// A job id as a path gives it: 1 to 20 ASCII digits that fit in 64 bits.
    public static func parse(_ raw: String) -> JobID? {
        guard (1...20).contains(raw.utf8.count), raw.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return JobID(raw)
    }
}

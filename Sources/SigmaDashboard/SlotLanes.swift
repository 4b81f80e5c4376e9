import SigmaProtocol

/// Lanes for a shard timeline: one per compute slot a worker used at once, so that attempts running side by side on
/// one worker sit on separate lanes instead of one solid bar. Per worker (`worker@host`), attempts in start order
/// take the lowest lane free at their start (a lane frees when its attempt finishes; a running one holds it to
/// `now`). Used by the dashboard's job page and by `sigma trace`.
public enum SlotLanes {
    /// The track label of an attempt: its worker and host.
    public static func track(_ a: AttemptRecord) -> String { "\(a.worker)@\(a.host)" }

    /// For each attempt (same order), its lane within its worker, 0-based.
    public static func assign(_ attempts: [AttemptRecord], now: UInt64) -> [Int] {
        var lanes = [Int](repeating: 0, count: attempts.count)
        var busyUntil: [String: [UInt64]] = [:]   // track → per lane, when it frees
        let order = attempts.indices.sorted { (attempts[$0].started, $0) < (attempts[$1].started, $1) }
        for i in order {
            let a = attempts[i], key = track(a)
            let end = a.outcome == .running ? max(a.started, now) : max(a.started, a.finished)
            var free = busyUntil[key, default: []]
            if let lane = free.firstIndex(where: { $0 <= a.started }) {
                lanes[i] = lane
                free[lane] = end
            } else {
                lanes[i] = free.count
                free.append(end)
            }
            busyUntil[key] = free
        }
        return lanes
    }

    /// The tracks in first-seen order with how many lanes each needs.
    public static func layout(_ attempts: [AttemptRecord], lanes: [Int]) -> [(track: String, lanes: Int)] {
        var order: [String] = [], count: [String: Int] = [:]
        for (a, l) in zip(attempts, lanes) {
            let k = track(a)
            if count[k] == nil { order.append(k) }
            count[k] = max(count[k] ?? 0, l + 1)
        }
        return order.map { ($0, count[$0]!) }
    }
}

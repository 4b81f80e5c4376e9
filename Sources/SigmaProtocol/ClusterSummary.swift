/// The cluster-wide figures of one status snapshot, computed one way for `sigma top`, the dashboard's history and
/// its charts: live workers only; a host's cores and memory counted once, however many workers share it; CPU as a
/// share of those cores.
public struct ClusterSummary: Sendable, Equatable {
    public var live: Int = 0
    public var hosts: Int = 0
    public var slots: Int = 0
    /// Shards in flight on live workers (at most each worker's slots).
    public var busy: Int = 0
    /// Workers' process CPU, percent of one core, summed.
    public var cpuPercent: Double = 0
    public var hostCores: Int = 0
    public var hostMemory: UInt64 = 0
    public var rss: UInt64 = 0
    /// Items/s, the workers' recent measured rates summed.
    public var rate: Double = 0

    public init(_ status: ClusterStatus) {
        let live = status.workers.filter { $0.state != "dead" }
        self.live = live.count
        let byHost = Dictionary(grouping: live, by: \.host)
        hosts = byHost.count
        slots = live.reduce(0) { $0 + Int($1.slots) }
        busy = live.reduce(0) { $0 + Int(min($1.inFlight, $1.slots)) }
        cpuPercent = live.reduce(0) { $0 + $1.cpu }
        hostCores = byHost.values.reduce(0) { $0 + Int($1.map(\.cores).max() ?? 0) }
        hostMemory = byHost.values.reduce(0) { $0 + ($1.map(\.memory).max() ?? 0) }
        rss = live.reduce(0) { $0 + $1.rss }
        rate = live.reduce(0) { $0 + $1.throughput }
    }

    /// Shards in flight ÷ slots, 0…1.
    public var utilisation: Double { slots == 0 ? 0 : Double(busy) / Double(slots) }
    /// CPU ÷ the hosts' cores, 0…1.
    public var cpuShare: Double { hostCores == 0 ? 0 : cpuPercent / 100 / Double(hostCores) }
}

/// How shards are placed on workers (docs/scheduling.md): shared vocabulary of specs, the client, the coordinator and
/// the simulator, one list of policy names.
public enum SchedulingPolicy: String, CaseIterable, Sendable {
    /// Each shard goes to the worker expected to finish it first (queue wait + RTT + bytes / bandwidth +
    /// items / throughput); training steps are split so all shards are expected to finish together; stragglers
    /// near the end are hedged. The default.
    case latencyAware = "latency-aware"
    /// Each shard goes to the worker with the most free room (slots × (1 + prefetch)); equal shards per step.
    case leastLoaded = "least-loaded"
    /// Shard k goes to the next worker in turn, waiting for it if its window is full.
    case roundRobin = "round-robin"

    /// The policy's number in SUBMIT's option bits (docs/protocol.md §3.2); 0 there means the cluster's policy.
    public var code: UInt8 {
        switch self {
        case .roundRobin: 1
        case .leastLoaded: 2
        case .latencyAware: 3
        }
    }

    public init?(code: UInt8) {
        guard let p = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = p
    }

    public static func parse(_ s: String) throws -> SchedulingPolicy {
        guard let p = SchedulingPolicy(rawValue: s) else {
            throw SpecError(field: "policy", problem: "unknown scheduling policy '\(s)'; expected one of: "
                            + allCases.map(\.rawValue).joined(separator: ", "))
        }
        return p
    }
}


import SigmaModel

/// A training step the workers reduce among themselves: each of the step's `peers` (in rank order, this worker at
/// `rank`) owns an equal slice of the parameters; it receives every worker's partial sums for its slice, makes the
/// tree's additions and the optimizer step on it, and sends the updated slice to all (docs/protocol.md §4).
public struct CollectiveStep: Sendable, Equatable {
    /// Bumped whenever the coordinator (re)starts the workers from its snapshot: messages of another segment are stale.
    public var segment: UInt32
    public var rank: UInt16
    /// After the step, send the owned slice of the parameters and optimizer state with the result.
    public var snapshot: Bool
    public var peers: [PeerAddress]
    public init(segment: UInt32, rank: UInt16, snapshot: Bool, peers: [PeerAddress]) {
        self.segment = segment
        self.rank = rank
        self.snapshot = snapshot
        self.peers = peers
    }
}

/// Where another worker takes collective messages (`peer=` in its HELLO features) and its CURVE public key ("" without CURVE).
public struct PeerAddress: Sendable, Equatable, Hashable {
    public var endpoint: String
    public var key: String
    public init(endpoint: String, key: String = "") {
        self.endpoint = endpoint
        self.key = key
    }
}

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

/// Where another worker takes collective messages (`peer=` in its HELLO features), its CURVE public key ("" without
/// CURVE), and its shared-memory group: members with the same nonzero group offered the same `shm=` host key (same
/// machine, same `/dev/shm`, same user), so large messages between them go through shared memory; 0: none shares it.
public struct PeerAddress: Sendable, Equatable, Hashable {
    public var endpoint: String
    public var key: String
    public var memoryGroup: UInt16
    public init(endpoint: String, key: String = "", memoryGroup: UInt16 = 0) {
        self.endpoint = endpoint
        self.key = key
        self.memoryGroup = memoryGroup
    }
}

extension CollectiveStep {
    /// Whether this member and `peer` share memory (the same nonzero group).
    public func sharesMemory(with peer: PeerAddress) -> Bool {
        let own = Int(rank) < peers.count ? peers[Int(rank)].memoryGroup : 0
        return own != 0 && peer.memoryGroup == own
    }
}

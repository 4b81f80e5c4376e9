import Glibc
import SigmaModel
import Synchronization

/// The transport's in-process twin: routers and dealers that exchange `Envelope`s through memory, with the
/// same semantics the shells rely on (routing ids, non-blocking send, waker). Tests run the real shells and
/// cores on it without sockets.
public final class InMemoryNetwork: Sendable {
    final class Mailbox: Sendable {
        let queue = Mutex<[Envelope]>([])
        let waker = Waker()
        func put(_ e: Envelope) {
            queue.withLock { $0.append(e) }
            waker.wake()
        }
    }

    struct Router {
        let inbox: Mailbox
        var peers: [PeerID: Mailbox] = [:]
    }

    private let routers = Mutex<[String: Router]>([:])
    private let nextID = Atomic<UInt32>(1)

    public init() {}

    /// A router at `name`; throws if the name is taken.
    public func bind(_ name: String) throws -> MessageLink {
        let inbox = Mailbox()
        try routers.withLock { r in
            guard r[name] == nil else { throw TransportError.bind(endpoint: name, reason: "address in use") }
            r[name] = Router(inbox: inbox)
        }
        return RouterEnd(network: self, name: name, inbox: inbox)
    }

    /// A dealer connected to the router at `name`.
    public func connect(_ name: String) -> MessageLink {
        let n = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let id = PeerID([0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)])
        let inbox = Mailbox()
        routers.withLock { $0[name]?.peers[id] = inbox }
        return DealerEnd(network: self, name: name, id: id, inbox: inbox)
    }

    func toRouter(_ name: String, _ e: Envelope) -> Bool {
        guard let inbox = routers.withLock({ $0[name]?.inbox }) else { return false }
        inbox.put(e)
        return true
    }

    func toDealer(_ name: String, _ peer: PeerID, _ e: Envelope) -> Bool {
        guard let box = routers.withLock({ $0[name]?.peers[peer] }) else { return false }
        box.put(e)
        return true
    }

    func unbind(_ name: String) { routers.withLock { $0[name] = nil } }
    func disconnect(_ name: String, _ peer: PeerID) { routers.withLock { $0[name]?.peers[peer] = nil } }

    /// Shared by both ends: wait on the waker's eventfd, drain the mailbox in arrival order.
    class End {
        let network: InMemoryNetwork
        let name: String
        let inbox: Mailbox
        var local: [Envelope] = []
        var closed = false
        init(network: InMemoryNetwork, name: String, inbox: Mailbox) {
            self.network = network
            self.name = name
            self.inbox = inbox
        }
        var waker: Waker { inbox.waker }

        func wait(timeoutMs: Int32) throws {
            guard !closed else { throw TransportError.closed }
            if !local.isEmpty || inbox.queue.withLock({ !$0.isEmpty }) { return }
            var p = pollfd(fd: inbox.waker.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, timeoutMs)
            inbox.waker.drain()
        }

        func receive() throws -> Envelope? {
            guard !closed else { throw TransportError.closed }
            if local.isEmpty {
                local = inbox.queue.withLock { q in
                    let all = q
                    q.removeAll(keepingCapacity: true)
                    return all
                }
                local.reverse()
            }
            return local.popLast()
        }
    }

    final class RouterEnd: End, MessageLink {
        @discardableResult
        func send(_ e: Envelope) -> Bool {
            guard !closed, let peer = e.peer else { return false }
            return network.toDealer(name, peer, Envelope(peer: nil, frames: e.frames))
        }
        func close() {
            closed = true
            network.unbind(name)
        }
    }

    final class DealerEnd: End, MessageLink {
        let id: PeerID
        init(network: InMemoryNetwork, name: String, id: PeerID, inbox: Mailbox) {
            self.id = id
            super.init(network: network, name: name, inbox: inbox)
        }
        @discardableResult
        func send(_ e: Envelope) -> Bool {
            guard !closed else { return false }
            return network.toRouter(name, Envelope(peer: id, frames: e.frames))
        }
        func close() {
            closed = true
            network.disconnect(name, id)
        }
    }
}

/// How a shell gets its link: made on the shell's own poller thread (sockets never change threads).
public enum LinkFactory: Sendable {
    case zmqBind(String, LinkOptions)
    case zmqConnect(String, LinkOptions)
    case memoryBind(InMemoryNetwork, String)
    case memoryConnect(InMemoryNetwork, String)

    /// The endpoint this factory binds or connects to.
    public var endpoint: String {
        switch self {
        case .zmqBind(let ep, _), .zmqConnect(let ep, _): ep
        case .memoryBind(_, let ep), .memoryConnect(_, let ep): "inproc://" + ep
        }
    }

    public func make() throws -> MessageLink {
        switch self {
        case .zmqBind(let ep, let o): try ZmqLink.bind(ep, options: o)
        case .zmqConnect(let ep, let o): try ZmqLink.connect(ep, options: o)
        case .memoryBind(let n, let name): try n.bind(name)
        case .memoryConnect(let n, let name): n.connect(name)
        }
    }

    public static func bind(_ endpoint: String) -> LinkFactory { .zmqBind(endpoint, LinkOptions()) }
    public static func connect(_ endpoint: String) -> LinkFactory { .zmqConnect(endpoint, LinkOptions()) }
}

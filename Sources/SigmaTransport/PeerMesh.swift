import Glibc
import SigmaModel
import Synchronization

/// How a mesh authenticates: CURVE with this worker's key pair (peers admitted by public key, `admit(keys:)`),
/// the local user's token over ZeroMQ PLAIN (a keyless loopback cluster), or nothing (`--insecure`).
public enum PeerSecurity: Sendable, Equatable {
    case curve(publicKey: String, secretKey: String)
    case local(token: String)
    case none
}

/// Why a `PeerMesh.receive` gave up.
public enum PeerMeshError: Error, Equatable, CustomStringConvertible {
    /// Only `arrived` of the `wanted` messages with `tag` came in time (they stay buffered).
    case timedOut(tag: [UInt8], arrived: Int, wanted: Int)
    /// The caller's `cancelled()` said so.
    case cancelled
    /// The mesh was closed.
    case closed
    /// A message with `tag` arrived but could not be read (a shared-memory payload that did not resolve): why.
    case unreadable(String)

    public var description: String {
        switch self {
        case .timedOut(let tag, let arrived, let wanted): "timed out waiting for peers: \(arrived) of \(wanted) messages with tag \(tag) arrived"
        case .cancelled: "cancelled while waiting for peers"
        case .closed: "the peer mesh is closed"
        case .unreadable(let why): why
        }
    }
}

/// Worker-to-worker links for collective training steps: a ROUTER that peers send to, and one DEALER per peer this
/// worker sends to, all owned by the mesh's own OS thread. Messages carry a tag (what step and slice they belong
/// to, chosen by the caller); a receiver asks for a number of messages with a tag and blocks its OS thread — a
/// compute thread, never a Swift task — until they are there. Nothing is acknowledged: a message handed to a peer
/// whose connection then breaks for good is lost, and the caller's timeout says so.
///
/// Wire format, per message: [tag (1…256 bytes), flags (1 byte), frame…] with at most 4 frames, each at most
/// `maxFrame` bytes; flags bit i: frame i is a shared-memory reference (docs/protocol.md §6.1) — a message sent with
/// `sharedMemory` to a peer on this machine carries its large frames that way. Anything else from the network is
/// dropped. A DEALER is given messages only once its handshake has succeeded, so a
/// peer that refuses this worker's credentials (it has not admitted its key yet) costs nothing but time: the mesh
/// connects again (0.1 s, doubling up to 2 s) and keeps the messages until the peer takes them or they are discarded.
public final class PeerMesh: Sendable {
    /// Largest frame sent or accepted, bytes (libzmq drops the connection of a peer that sends more).
    public static let maxFrame = LinkOptions().maxFrame
    /// Largest tag, bytes.
    public static let maxTag = 256
    /// Frames per message after the tag.
    public static let maxFrames = 4

    /// "tcp://host:port" as bound (the real port).
    public let endpoint: String
    private let shared: Shared
    private let thread: Mutex<OSThread?>
    private let security: PeerSecurity
    /// The ZAP domain of the ROUTER (CURVE or the local token); nil without authentication.
    private let zapDomain: String?
    /// Where shared-memory segments live (nil: this mesh neither sends nor reads payloads through shared memory).
    private let sharedMemoryDirectory: String?
    /// The carriers of large frames to peers that share memory with this worker, by endpoint (the `maxCarriers`
    /// used most recently — far more than the workers one machine holds, so only peers long gone are dropped: a
    /// carrier dropped unlinks its segments and takes back its pool references, which a peer still reading would lose).
    private let carriers = Mutex<(byEndpoint: [String: SharedMemoryCarrier], order: [String])>(([:], []))
    static let maxCarriers = 256

    /// Binds a ROUTER on tcp://host:port (port 0: any free port; `host` an IPv4 address) on a thread of its own.
    /// Messages that arrived and wait for a `receive` hold at most `maxBufferedBytes` (then the oldest go, counted in
    /// `dropped`). `onRefusal` is called on the mesh's thread, once per run of failed connections to a peer, with
    /// the peer's endpoint and why (its key not admitted there, another kind of authentication, a bad endpoint).
    /// `sharedMemory`: the directory of same-host segments (`/dev/shm`; nil when shared memory is off or unusable here).
    public init(host: String, port: Int = 0, security: PeerSecurity, maxBufferedBytes: Int = 1 << 30,
                sharedMemory: String? = SharedMemory.hostKey == nil ? nil : SharedMemory.directory,
                onRefusal: (@Sendable (_ endpoint: String, _ reason: String) -> Void)? = nil) throws {
        let address = "tcp://\(host):\(port)"
        guard (0...65_535).contains(port) else { throw TransportError.bind(endpoint: address, reason: "the port must be 0…65535") }
        precondition(maxBufferedBytes > 0, "maxBufferedBytes must be positive")
        // (the ZAP domain is registered before the ROUTER exists: a server socket is never without authentication)
        var domain: String? = nil
        let server: LinkSecurity?
        switch security {
        case .curve(let pub, let secret):
            guard ZContext.hasCurve else { throw TransportError.socket("peer mesh: this libzmq has no CURVE support", errno: EINVAL) }
            guard Curve.publicKey(ofSecret: secret) == pub else {
                throw TransportError.socket("peer mesh: the CURVE public key does not belong to the secret key", errno: EINVAL)
            }
            let d = try ZAPService.shared.register(.peers([])) { _ in }
            domain = d
            server = .server(secretKey: secret, domain: d)
        case .local(let token):
            let d = try ZAPService.shared.register(.token(token)) { _ in }
            domain = d
            server = .localServer(domain: d)
        case .none:
            server = nil
        }
        zapDomain = domain
        self.security = security
        sharedMemoryDirectory = sharedMemory
        let shared = Shared(limit: maxBufferedBytes, security: security, sharedMemory: sharedMemory, onRefusal: onRefusal)
        self.shared = shared
        let t = OSThread(name: "sigma-peers") { Loop.run(shared, bind: address, server: server) }
        // Wait (briefly, on the caller's thread) until the ROUTER is bound or failed.
        while shared.started.withLock({ $0 }) == nil {
            var p = pollfd(fd: shared.startSignal.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
        }
        switch shared.started.withLock({ $0 })! {
        case .success(let bound):
            endpoint = bound
            thread = Mutex(t)
        case .failure(let e):
            t.join()
            if let d = zapDomain { ZAPService.shared.unregister(d) }
            throw e
        }
    }

    /// CURVE: the public keys (Z85) whose connections are admitted (replaces the set; others are refused by the ZAP
    /// handler). Connections admitted before stay. No-op otherwise.
    public func admit(keys: Set<String>) {
        guard case .curve = security, let d = zapDomain else { return }
        ZAPService.shared.update(d, to: .peers(keys))
    }

    /// Queues a message for the peer bound at `endpoint` (its CURVE public key `serverKey` under .curve); connects
    /// on first use and keeps the connection; never blocks the caller. `tag` is matched exactly by the receiver;
    /// `frames` (at most 4) travel as they are (zero-copy for large frames, as ZmqLink does) — or, with
    /// `sharedMemory` (the caller knows the peer shares this machine's `/dev/shm` and user), those of 64 KiB or more
    /// through shared memory: written once into a segment this worker owns (not even that when the frame was made
    /// in one, `Frame(shareable:)`), and the peer reads it in place. After `close()` it does nothing.
    public func send(to endpoint: String, serverKey: String?, tag: [UInt8], frames: [Frame], sharedMemory: Bool = false) {
        precondition(!tag.isEmpty && tag.count <= Self.maxTag, "a peer message's tag must be 1…\(Self.maxTag) bytes, got \(tag.count)")
        precondition(frames.count <= Self.maxFrames, "a peer message holds at most \(Self.maxFrames) frames, got \(frames.count)")
        precondition(frames.allSatisfy { $0.count <= Self.maxFrame }, "a peer message's frame may hold at most \(Self.maxFrame) bytes")
        guard !shared.stopping.load(ordering: .acquiring) else { return }
        var wire = frames, flags: UInt8 = 0
        let carrier = sharedMemory ? self.carrier(for: endpoint) : nil
        if let carrier {
            for i in frames.indices {
                if let r = carrier.carry(frames[i]) { wire[i] = r; flags |= 1 << i }
            }
        }
        let m = Outgoing(endpoint: endpoint, serverKey: serverKey, tag: tag, frames: [Frame(tag), Frame([flags])] + wire,
                         carrier: flags == 0 ? nil : carrier)
        shared.commands.withLock { $0.append(.send(m)) }
        shared.waker.wake()
    }

    /// The carrier of large frames to the peer at `endpoint` (made on first use); nil when shared memory is off.
    private func carrier(for endpoint: String) -> SharedMemoryCarrier? {
        guard let directory = sharedMemoryDirectory else { return nil }
        return carriers.withLock { c in
            if let k = c.byEndpoint[endpoint] {
                if c.order.last != endpoint, let i = c.order.firstIndex(of: endpoint) { c.order.append(c.order.remove(at: i)) }
                return k
            }
            let k = SharedMemoryCarrier(threshold: SharedMemory.meshThreshold, directory: directory)
            c.byEndpoint[endpoint] = k
            c.order.append(endpoint)
            if c.order.count > Self.maxCarriers { c.byEndpoint[c.order.removeFirst()] = nil }
            return k
        }
    }

    /// Large frames sent through shared memory, and those that went through the socket because every segment for
    /// their peer was busy (over the carriers kept now).
    public var sharedMemoryCounts: (carried: UInt64, fellBack: UInt64) {
        carriers.withLock { c in c.byEndpoint.values.reduce((UInt64(0), UInt64(0))) { ($0.0 + $1.counts.carried, $0.1 + $1.counts.fellBack) } }
    }

    /// Blocks the calling OS thread (a compute thread, never a Swift task) until `count` messages with `tag` have
    /// arrived, and returns their frames (without the tag), in arrival order, removing them from the buffer.
    /// Throws PeerMeshError.timedOut after `timeout` seconds and .cancelled as soon as `cancelled()` is true
    /// (checked at least every 20 ms); .closed after close() — and then nothing is removed; .unreadable when one of the
    /// `count` messages could not be read (a shared-memory reference that did not resolve), which takes them all.
    public func receive(tag: [UInt8], count: Int, timeout: Double, cancelled: () -> Bool) throws -> [[Frame]] {
        precondition(count >= 0, "count must be ≥ 0")
        if count == 0 { return [] }
        let deadline = monotonicNanos() + UInt64(min(max(timeout, 0), 1e9) * 1e9)
        while true {
            let left = deadline > monotonicNanos() ? Double(deadline - monotonicNanos()) / 1e9 : 0
            switch shared.inbox.take(tag: tag, count: count, waitingAtMost: min(left, 0.02)) {
            case .taken(let messages): return messages
            case .unreadable(let why): throw PeerMeshError.unreadable(why)
            case .closed: throw PeerMeshError.closed
            case .waiting(let arrived):
                if cancelled() { throw PeerMeshError.cancelled }
                if monotonicNanos() >= deadline { throw PeerMeshError.timedOut(tag: tag, arrived: arrived, wanted: count) }
            }
        }
    }

    /// Drops buffered messages (and stops buffering later ones) whose tag satisfies `predicate` — e.g. an aborted
    /// step's — and messages to peers with such a tag that no peer has taken yet. The predicate runs under the
    /// buffer's lock for every later arrival, so it must be quick; the 256 most recent predicates are kept (discard
    /// a range of steps with one predicate, not each step with its own).
    public func discard(where predicate: @escaping @Sendable ([UInt8]) -> Bool) {
        shared.inbox.discard(predicate)
        guard !shared.stopping.load(ordering: .acquiring) else { return }
        shared.commands.withLock { $0.append(.discard(predicate)) }
        shared.waker.wake()
    }

    /// Messages dropped because the buffer was full (`maxBufferedBytes`), oldest first.
    public var dropped: Int { shared.inbox.dropped }
    /// Messages never sent because their peer could not be connected to (a bad endpoint or CURVE key).
    public var undeliverable: Int { shared.undeliverable.load(ordering: .relaxed) }
    /// Messages with `tag` waiting for a `receive`.
    public func buffered(tag: [UInt8]) -> Int { shared.inbox.count(tag: tag) }
    /// Bytes waiting for a `receive` (tags and frames).
    public var bufferedBytes: Int { shared.inbox.bytes }
    /// Handshakes the ZAP handler answered for this mesh's ROUTER: admitted and refused (0, 0 without one).
    public var handshakes: (admitted: UInt64, refused: UInt64) { zapDomain.map { ZAPService.shared.handshakes($0) } ?? (0, 0) }

    /// Stops the thread, closes every socket and wakes every `receive` (which throws .closed). Idempotent.
    public func close() {
        shared.stopping.store(true, ordering: .releasing)
        shared.waker.wake()
        let t = thread.withLock { t -> OSThread? in
            defer { t = nil }
            return t
        }
        guard let t else { return }
        t.join()
        shared.inbox.close()
        carriers.withLock { $0 = ([:], []) }   // (their segments unlinked)
        if let d = zapDomain { ZAPService.shared.unregister(d) }
    }

    deinit { close() }

    /// The local IPv4 address this host uses to reach the host of `endpoint` (tcp://HOST:PORT), found without
    /// sending anything: a UDP socket connect()ed there tells its own address. 127.0.0.1 for a loopback endpoint; nil
    /// when the host cannot be resolved or has no route.
    public static func localAddress(reaching endpoint: String) -> String? {
        if LocalToken.isLoopback(endpoint: endpoint) { return "127.0.0.1" }
        guard let e = try? Endpoint.parse(endpoint) else { return nil }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(e.host, String(e.port), &hints, &list) == 0, let first = list else { return nil }
        defer { freeaddrinfo(list) }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        guard connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else { return nil }
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        guard rc == 0 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count)) != nil else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

import CZeroMQ
import DequeModule
import Glibc
import SigmaModel
import Synchronization

extension PeerMesh {
    /// A message on its way to a peer: the tag frame, the flags frame, then the caller's frames (those flagged are
    /// shared-memory references that `carrier` made).
    struct Outgoing: Sendable {
        let endpoint: String
        let serverKey: String?
        let tag: [UInt8]
        let frames: [Frame]
        let carrier: SharedMemoryCarrier?

        /// The message will never be sent: its references are taken back (their segments can be reused).
        func withdraw() {
            guard let carrier, let flags = frames[1].bytes.first else { return }
            for (i, f) in frames.dropFirst(2).enumerated() where flags & (1 << i) != 0 { carrier.withdraw(f) }
        }
    }

    /// What callers hand the mesh's thread.
    enum Command: Sendable {
        case send(Outgoing)
        case discard(@Sendable ([UInt8]) -> Bool)
    }

    /// What callers share with the mesh's thread.
    final class Shared: Sendable {
        let commands = Mutex<[Command]>([])
        let waker = Waker()
        let stopping = Atomic<Bool>(false)
        let inbox: Inbox
        let security: PeerSecurity
        let onRefusal: (@Sendable (String, String) -> Void)?
        let undeliverable = Atomic<Int>(0)
        /// The endpoint bound, or why not; set once by the thread.
        let started = Mutex<Result<String, TransportError>?>(nil)
        let startSignal = Waker()
        /// Maps the segments of peers that share memory with this worker (nil: shared memory is off here, and a
        /// message that carries a reference is unreadable).
        let reader: SharedMemoryCarrier?

        init(limit: Int, security: PeerSecurity, sharedMemory directory: String?, onRefusal: (@Sendable (String, String) -> Void)?) {
            inbox = Inbox(limit: limit)
            self.security = security
            self.onRefusal = onRefusal
            reader = directory.map { SharedMemoryCarrier(maxSegments: 0, directory: $0, maxMappings: 64) }
        }
    }

    /// A peer this mesh sends to: its DEALER (made and used on the mesh's thread only) and the messages it has not
    /// taken yet.
    final class Peer {
        let endpoint: String
        var serverKey: String?
        var link: ZmqLink?
        var pending = Deque<Outgoing>()
        /// Monotonic ns: no new link before then (after a refusal).
        var retryAt: Nanos = 0
        /// Nanoseconds to wait after the next refusal.
        var backoff: Nanos = Loop.firstBackoff
        /// A refusal was reported since the last handshake that worked.
        var told = false
        var lastUsed: Nanos

        init(endpoint: String, serverKey: String?, now: Nanos) {
            self.endpoint = endpoint
            self.serverKey = serverKey
            lastUsed = now
        }

        func drop() {
            link?.close()
            link = nil
        }
    }

    /// The mesh's thread: owns the ROUTER and every DEALER.
    struct Loop {
        static let firstBackoff: Nanos = 100_000_000
        static let maxBackoff: Nanos = 2_000_000_000
        /// A peer sent nothing for this long and with nothing pending: its connection is closed.
        static let idleClose: Nanos = 600_000_000_000
        /// Messages read from the ROUTER before the loop looks at its other sockets again.
        static let readBurst = 1_000

        let shared: Shared
        let router: ZmqLink
        var peers: [String: Peer] = [:]

        static func run(_ shared: Shared, bind address: String, server: LinkSecurity?) {
            var options = LinkOptions()
            options.security = server
            let router: ZmqLink
            do {
                router = try ZmqLink.bind(address, options: options)
            } catch {
                shared.started.withLock { $0 = .failure(error as? TransportError ?? .bind(endpoint: address, reason: "\(error)")) }
                shared.startSignal.wake()
                return
            }
            shared.started.withLock { $0 = .success(router.endpoint) }
            shared.startSignal.wake()
            var loop = Loop(shared: shared, router: router)
            loop.serve()
            shared.stopping.store(true, ordering: .releasing)   // (also when the loop ended on its own: later sends are dropped)
            for p in loop.peers.values { p.drop() }
            router.close()
            shared.inbox.close()
        }

        mutating func serve() {
            while !shared.stopping.load(ordering: .acquiring) {
                guard let r = router.socketHandle else { return }
                var items = [zmq_pollitem_t(socket: r, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0),
                             zmq_pollitem_t(socket: nil, fd: shared.waker.fd, events: Int16(ZMQ_POLLIN), revents: 0)]
                var owners: [Peer] = []
                for p in peers.values {
                    guard let l = p.link, let s = l.socketHandle else { continue }
                    // (POLLOUT only while messages wait for room: a writable socket would wake the loop at once)
                    let out = l.handshook && !p.pending.isEmpty ? ZMQ_POLLOUT : 0
                    items.append(zmq_pollitem_t(socket: s, fd: 0, events: Int16(ZMQ_POLLIN | out), revents: 0))
                    owners.append(p)
                    if let m = l.monitorHandle {
                        items.append(zmq_pollitem_t(socket: m, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0))
                        owners.append(p)
                    }
                }
                if zmq_poll(&items, Int32(items.count), pollTimeout()) < 0 {
                    if zmq_errno() == EINTR { continue }
                    return   // ETERM (the context is ending) or worse: receivers are told .closed
                }
                if items[1].revents != 0 { shared.waker.drain() }
                let commands = shared.commands.withLock { c -> [Command] in
                    defer { c.removeAll(keepingCapacity: true) }
                    return c
                }
                let now = monotonicNanos()
                for c in commands { apply(c, now: now) }
                if items[0].revents != 0 && !readRouter() { return }
                for (i, p) in owners.enumerated() where items[i + 2].revents != 0 {
                    guard let l = p.link else { continue }
                    l.readMonitor()
                    // A peer's ROUTER never sends to this DEALER: whatever comes is read and dropped.
                    var n = 0
                    while n < Self.readBurst, (try? l.receive()) != nil { n += 1 }
                }
                for p in Array(peers.values) { service(p, now: now) }
            }
        }

        /// Milliseconds until a refused peer may be tried again (at most a second, for the idle check).
        func pollTimeout() -> Int {
            let now = monotonicNanos()
            var wait: Nanos = 1_000_000_000
            for p in peers.values where p.link == nil && !p.pending.isEmpty {
                wait = min(wait, p.retryAt > now ? p.retryAt - now : 0)
            }
            return Int((wait + 999_999) / 1_000_000)
        }

        mutating func apply(_ c: Command, now: Nanos) {
            switch c {
            case .send(let m):
                let p = peers[m.endpoint] ?? Peer(endpoint: m.endpoint, serverKey: m.serverKey, now: now)
                peers[m.endpoint] = p
                if p.serverKey != m.serverKey {
                    // (another key at that address: a restarted peer; what waits goes to it)
                    p.drop()
                    p.serverKey = m.serverKey
                    p.retryAt = 0
                }
                p.pending.append(m)
                p.lastUsed = now
            case .discard(let predicate):
                for p in peers.values {
                    p.pending.filter { predicate($0.tag) }.forEach { $0.withdraw() }
                    p.pending.removeAll { predicate($0.tag) }
                }
            }
        }

        /// Reads what peers sent; false when the ROUTER failed (the mesh ends).
        func readRouter() -> Bool {
            for _ in 0..<Self.readBurst {
                let e: Envelope?
                do { e = try router.receive() } catch { return false }
                guard let e else { return true }
                // [tag, flags, frame…]: anything else (an empty or long tag, no flags byte, too many frames, a flag
                // for a frame that is not there) is dropped.
                guard e.frames.count >= 2, e.frames.count <= 2 + PeerMesh.maxFrames, case let tag = e.frames[0],
                      (1...PeerMesh.maxTag).contains(tag.count), e.frames[1].count == 1 else { continue }
                let flags = e.frames[1].bytes[0]
                guard flags >> (e.frames.count - 2) == 0 else { continue }
                var frames = Array(e.frames.dropFirst(2))
                var failure: String? = nil
                // (a reference is resolved now: the message then holds the segment until it is taken or dropped)
                for i in frames.indices where flags & (1 << i) != 0 {
                    guard let reader = shared.reader else {
                        failure = "a peer sent a payload through shared memory, but shared memory is off on this worker"
                        break
                    }
                    do { frames[i] = try reader.resolve(frames[i], limit: PeerMesh.maxFrame) } catch {
                        failure = "a peer's payload in shared memory cannot be read: \(error)"
                        break
                    }
                }
                shared.inbox.deliver(tag: tag.bytes, frames: failure == nil ? frames : [], failure: failure)
            }
            return true
        }

        /// Connects, reconnects after a refusal, hands over what waits, closes an idle peer.
        mutating func service(_ p: Peer, now: Nanos) {
            if let l = p.link, let refusal = l.refusal {
                p.drop()
                p.retryAt = now + p.backoff
                p.backoff = min(p.backoff * 2, Self.maxBackoff)
                report(p, Self.describe(refusal, endpoint: p.endpoint, security: shared.security))
            }
            if p.link == nil && !p.pending.isEmpty && now >= p.retryAt { connect(p, now: now) }
            if let l = p.link, l.handshook {
                p.backoff = Self.firstBackoff
                p.told = false
                while let m = p.pending.first, l.send(Envelope(frames: m.frames)) { p.pending.removeFirst() }
            }
            if p.pending.isEmpty && now &- p.lastUsed > Self.idleClose {
                p.drop()
                peers[p.endpoint] = nil
            }
        }

        mutating func connect(_ p: Peer, now: Nanos) {
            var options = LinkOptions()
            options.monitorHandshakes = true
            do {
                switch shared.security {
                case .curve(let pub, let secret):
                    guard let key = p.serverKey else { throw TransportError.connect(endpoint: p.endpoint, reason: "no CURVE public key given for this peer") }
                    options.security = .client(serverKey: key, publicKey: pub, secretKey: secret)
                case .local(let token):
                    options.security = .localClient(token: token)
                case .none:
                    break
                }
                p.link = try ZmqLink.connect(p.endpoint, options: options)
            } catch {
                // (a bad endpoint or key stays bad: what waits for it is dropped, later sends try again)
                shared.undeliverable.add(p.pending.count, ordering: .relaxed)
                p.pending.forEach { $0.withdraw() }
                p.pending.removeAll()
                p.retryAt = now + Self.maxBackoff
                report(p, "cannot connect to the peer at \(p.endpoint): \(error)")
            }
        }

        func report(_ p: Peer, _ reason: String) {
            guard !p.told else { return }
            p.told = true
            shared.onRefusal?(p.endpoint, reason)
        }

        static func describe(_ refusal: (event: Int32, value: UInt32), endpoint: String, security: PeerSecurity) -> String {
            if refusal.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH {
                switch security {
                case .curve: return "the peer at \(endpoint) refused this worker's key (ZAP status \(refusal.value)): it has not admitted it (yet); retrying"
                default: return "the peer at \(endpoint) refused this user's local token (ZAP status \(refusal.value)): it runs as another user or with another state folder; retrying"
                }
            }
            if refusal.value == UInt32(ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
                return "the peer at \(endpoint) authenticates another way (CURVE keys, the local token or --insecure) than this worker; retrying"
            }
            return "the handshake with the peer at \(endpoint) failed (protocol error 0x\(String(refusal.value, radix: 16))): is its public key right? retrying"
        }
    }
}

import CZeroMQ
import Glibc
import SigmaModel
import Synchronization

/// Socket options shared by every Sigma socket.
public struct LinkOptions: Sendable {
    /// Largest frame accepted from a peer, bytes (libzmq drops the connection of a peer that sends more).
    public var maxFrame: Int = 256 * 1024 * 1024
    /// Milliseconds queued messages may delay close.
    public var linger: Int32 = 200
    /// Messages queued per peer in each direction (then libzmq stops reading from that peer: back-pressure). Large
    /// frames are sent without copying, so a queued PARAMS or result refers to a buffer its owner holds anyway;
    /// bulk replies are bounded in bytes by their producer (`queuedBulkBytes`).
    public var highWaterMark: Int32 = 10_000
    /// Frames at or above this size are sent without copying, bytes.
    public var zeroCopyThreshold: Int = 64 * 1024
    /// CurveZMQ encryption and authentication; nil: plain ZMTP (loopback or `--insecure` only).
    public var security: LinkSecurity? = nil
    /// Called on the link's thread when a CURVE handshake with the peer fails (a DEALER's monitor), with why.
    public var onHandshakeFailure: (@Sendable (String) -> Void)? = nil
    /// A DEALER watches its handshakes (`handshook`, `refusal`) even without `onHandshakeFailure`.
    var monitorHandshakes = false
    public init() {}
}

/// A ZeroMQ ROUTER (bound) or DEALER (connected) socket plus a waker, polled together.
/// Create it on the thread that will use it; it is deliberately not Sendable.
public final class ZmqLink: MessageLink {
    public enum Role { case router, dealer }
    public let role: Role
    public let waker = Waker()
    private var socket: UnsafeMutableRawPointer?
    private let options: LinkOptions
    private let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
    /// Messages dropped because the peer was unknown or its queue was full.
    public private(set) var dropped = 0
    /// The endpoint actually bound (with the port chosen when binding port 0) or connected.
    public private(set) var endpoint: String
    /// A ROUTER whose peers were admitted by a ZAP handler (CURVE keys or the local token).
    private var authenticated: Bool {
        switch options.security {
        case .server?, .localServer?: true
        default: false
        }
    }
    /// A PAIR socket receiving this socket's handshake events (DEALERs with `onHandshakeFailure` or `monitorHandshakes`).
    private var monitor: UnsafeMutableRawPointer?
    /// A handshake with the peer has succeeded on this link (read from the monitor).
    private(set) var handshook = false
    /// The peer refused this link's credentials (ZAP status) or mechanism: the monitor's event and its value. libzmq
    /// 4.3 then gives the connection up for good — it reconnects only after resets — and drops what was queued, so
    /// whoever wants to try again makes a new link.
    private(set) var refusal: (event: Int32, value: UInt32)? = nil
    private static let monitors = Atomic<Int>(0)

    private init(role: Role, options: LinkOptions, endpoint: String) throws {
        self.role = role
        self.options = options
        self.endpoint = endpoint
        guard let s = zmq_socket(ZContext.process.handle, role == .router ? ZMQ_ROUTER : ZMQ_DEALER) else {
            throw TransportError.last("zmq_socket")
        }
        socket = s
        setInt(ZMQ_LINGER, options.linger)
        setInt(ZMQ_SNDHWM, options.highWaterMark)
        setInt(ZMQ_RCVHWM, options.highWaterMark)
        var maxSize = Int64(options.maxFrame)
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxSize, MemoryLayout<Int64>.size)
        if role == .router { setInt(ZMQ_ROUTER_MANDATORY, 1) }
        if role == .dealer {
            setInt(ZMQ_RECONNECT_IVL, 100)
            setInt(ZMQ_RECONNECT_IVL_MAX, 2000)
        }
        switch options.security {
        case .server(let secret, let domain):
            setInt(ZMQ_CURVE_SERVER, 1)
            try setKey(ZMQ_CURVE_SECRETKEY, secret)
            _ = domain.withCString { zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, $0, domain.utf8.count) }
        case .client(let server, let pub, let secret):
            try setKey(ZMQ_CURVE_SERVERKEY, server)
            try setKey(ZMQ_CURVE_PUBLICKEY, pub)
            try setKey(ZMQ_CURVE_SECRETKEY, secret)
        case .localServer(let domain):
            setInt(ZMQ_PLAIN_SERVER, 1)
            _ = domain.withCString { zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, $0, domain.utf8.count) }
        case .localClient(let token):
            _ = "local".withCString { zmq_setsockopt(s, ZMQ_PLAIN_USERNAME, $0, 5) }
            _ = token.withCString { zmq_setsockopt(s, ZMQ_PLAIN_PASSWORD, $0, token.utf8.count) }
        case nil:
            break
        }
        if role == .dealer, options.onHandshakeFailure != nil || options.monitorHandshakes {
            let address = "inproc://sigma-monitor-\(getpid())-\(Self.monitors.wrappingAdd(1, ordering: .relaxed).oldValue)"
            let events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
            if zmq_socket_monitor(s, address, events) == 0, let m = zmq_socket(ZContext.process.handle, ZMQ_PAIR) {
                if zmq_connect(m, address) == 0 { monitor = m } else { zmq_close(m) }
            }
        }
    }

    private func setKey(_ option: Int32, _ z85: String) throws {
        guard Z85.isKey(z85) else { throw TransportError.socket("CURVE key option \(option): not a 40-character Z85 key", errno: EINVAL) }
        let rc = z85.withCString { zmq_setsockopt(socket, option, $0, 40) }
        guard rc == 0 else { throw TransportError.last("zmq_setsockopt(CURVE key \(option))") }
    }

    /// A ROUTER bound to `endpoint` (e.g. tcp://127.0.0.1:7700, or port 0 for any free port).
    public static func bind(_ endpoint: String, options: LinkOptions = LinkOptions()) throws -> ZmqLink {
        let link = try ZmqLink(role: .router, options: options, endpoint: endpoint)
        let ep = endpoint.hasSuffix(":0") ? String(endpoint.dropLast(2)) + ":*" : endpoint
        guard zmq_bind(link.socket, ep) == 0 else {
            let e = zmq_errno()
            link.close()
            throw TransportError.bind(endpoint: endpoint, reason: String(cString: zmq_strerror(e)))
        }
        var buf = [CChar](repeating: 0, count: 256)
        var len = buf.count
        if zmq_getsockopt(link.socket, ZMQ_LAST_ENDPOINT, &buf, &len) == 0 {
            link.endpoint = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return link
    }

    /// A DEALER connected to `endpoint`; libzmq reconnects by itself if the connection drops.
    public static func connect(_ endpoint: String, options: LinkOptions = LinkOptions()) throws -> ZmqLink {
        let link = try ZmqLink(role: .dealer, options: options, endpoint: endpoint)
        guard zmq_connect(link.socket, endpoint) == 0 else {
            let e = zmq_errno()
            link.close()
            throw TransportError.connect(endpoint: endpoint, reason: String(cString: zmq_strerror(e)))
        }
        return link
    }

    private func setInt(_ option: Int32, _ value: Int32) {
        var v = value
        zmq_setsockopt(socket, option, &v, MemoryLayout<Int32>.size)
    }

    public func close() {
        if let m = monitor {
            if let s = socket { zmq_socket_monitor(s, nil, 0) }
            zmq_close(m)
            monitor = nil
        }
        if let s = socket { zmq_close(s) }
        socket = nil
    }

    deinit {
        close()
        msg.deallocate()
    }

    public func wait(timeoutMs: Int32) throws {
        guard let s = socket else { throw TransportError.closed }
        var items = [
            zmq_pollitem_t(socket: s, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0),
            zmq_pollitem_t(socket: nil, fd: waker.fd, events: Int16(ZMQ_POLLIN), revents: 0),
        ]
        if let m = monitor { items.append(zmq_pollitem_t(socket: m, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)) }
        let rc = zmq_poll(&items, Int32(items.count), Int(timeoutMs))
        if rc < 0 {
            let e = zmq_errno()
            if e == EINTR { return }
            if e == ETERM { throw TransportError.closed }
            throw TransportError.socket("zmq_poll", errno: e)
        }
        if items[1].revents != 0 { waker.drain() }
        if items.count > 2 && items[2].revents != 0 { readMonitor() }
    }

    /// The socket and its monitor, for a thread polling several links at once (`PeerMesh`); nil once closed.
    var socketHandle: UnsafeMutableRawPointer? { socket }
    var monitorHandle: UnsafeMutableRawPointer? { monitor }

    /// Reads pending handshake events: [event id (u16) + value (u32), endpoint] each.
    func readMonitor() {
        guard let m = monitor else { return }
        while true {
            var head = [UInt8](repeating: 0, count: 6)
            let n = zmq_recv(m, &head, 6, ZMQ_DONTWAIT)
            if n < 0 { return }
            var more: Int32 = 0, size = MemoryLayout<Int32>.size
            zmq_getsockopt(m, ZMQ_RCVMORE, &more, &size)
            if more != 0 {
                var tail = [UInt8](repeating: 0, count: 256)
                _ = zmq_recv(m, &tail, 256, 0)
            }
            guard n >= 6 else { continue }
            let event = UInt16(head[0]) | UInt16(head[1]) << 8
            let value = UInt32(head[2]) | UInt32(head[3]) << 8 | UInt32(head[4]) << 16 | UInt32(head[5]) << 24
            if Int32(event) == ZMQ_EVENT_HANDSHAKE_SUCCEEDED { handshook = true; continue }
            if Int32(event) == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || Int32(event) == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL {
                refusal = (Int32(event), value)
            }
            // A handshake cut short (the peer reset or closed the connection; `value` its errno) after one has worked
            // says nothing about keys or tokens: a coordinator killed and started again does that, and libzmq
            // reconnects. Before any has worked it is how a peer refuses a client without the credentials it needs.
            if Int32(event) == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && handshook { continue }
            options.onHandshakeFailure?(Self.describeHandshakeFailure(event: Int32(event), value: value, endpoint: endpoint,
                                                                      security: options.security))
        }
    }

    static func describeHandshakeFailure(event: Int32, value: UInt32, endpoint: String, security: LinkSecurity?) -> String {
        let mismatch = event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == UInt32(ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        switch security {
        case nil:
            return "the coordinator at \(endpoint) requires authentication and this side has none: pass --key NAME.key (sigma keygen NAME --coordinator-key coordinator.pub), enrolled with the coordinator; a loopback coordinator without keys admits only its own user's processes"
        case .localClient?:
            if mismatch {
                return "the coordinator at \(endpoint) does not take this user's local token: it runs with CURVE keys (pass --key NAME.key) or with --insecure (pass --insecure)"
            }
            return "the coordinator at \(endpoint) refused this user's local token (ZAP status \(value)): it runs as another user or with another state folder (SIGMA_STATE_DIR); use CURVE keys to reach another user's coordinator"
        default:
            break
        }
        switch event {
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            return "the coordinator at \(endpoint) refused this key (ZAP status \(value)): it is not enrolled — copy this key's .pub file into the coordinator's allow folder"
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if mismatch {
                return "the coordinator at \(endpoint) does not use CURVE keys but this side does: drop --key, or start the coordinator with --key and --allow"
            }
            return "CURVE handshake with the coordinator at \(endpoint) failed (protocol error 0x\(String(value, radix: 16))): is the coordinator key right?"
        default:
            return "CURVE handshake with the coordinator at \(endpoint) failed: does it run with --key and --allow, and is --coordinator-key its public key?"
        }
    }

    /// Frames kept per message; further parts are read and discarded (the decoder then rejects the message).
    static let maxFramesKept = 9

    public func receive() throws -> Envelope? {
        guard let s = socket else { throw TransportError.closed }
        var frames: [Frame] = []
        var peer: PeerID? = nil
        var user: String? = nil
        var first = true
        while true {
            zmq_msg_init(msg)
            let rc = zmq_msg_recv(msg, s, first ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let e = zmq_errno()
                zmq_msg_close(msg)
                if first && e == EAGAIN { return nil }
                if e == ETERM { throw TransportError.closed }
                if e == EINTR && first { return nil }
                throw TransportError.socket("zmq_msg_recv", errno: e)
            }
            let more = zmq_msg_more(msg) == 1
            if first && role == .router {
                peer = PeerID(Array(UnsafeRawBufferPointer(start: zmq_msg_data(msg), count: zmq_msg_size(msg))))
                zmq_msg_close(msg)
            } else if frames.count < Self.maxFramesKept {
                // Who the ZAP handler admitted this connection as: libzmq attaches it to the frames the peer sent
                // (not to the routing id ROUTER adds). A link with authentication fails closed: no user id, no one.
                if frames.isEmpty && role == .router && authenticated {
                    user = userID(zmq_msg_gets(msg, "User-Id"))
                }
                frames.append(takeFrame())
            } else {
                zmq_msg_close(msg)
            }
            first = false
            if !more { break }
        }
        return Envelope(peer: peer, frames: frames, user: user)
    }

    /// The last user id read, as C bytes and as a String: most messages come from the peer before, so its id is
    /// compared (strcmp), not copied into a new String each time.
    private var lastUser: (bytes: [CChar], text: String) = ([0], "")

    private func userID(_ p: UnsafePointer<CChar>?) -> String {
        guard let p else { return "" }
        if strcmp(p, lastUser.bytes) == 0 { return lastUser.text }
        let text = String(cString: p)
        lastUser = (Array(UnsafeBufferPointer(start: p, count: strlen(p) + 1)), text)
        return text
    }

    /// Turns the received `msg` into a Frame: small ones copied, large ones kept without a copy.
    private func takeFrame() -> Frame {
        let size = zmq_msg_size(msg)
        if size < options.zeroCopyThreshold {
            let f = Frame(UnsafeRawBufferPointer(start: zmq_msg_data(msg), count: size))
            zmq_msg_close(msg)
            return f
        }
        let owned = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        zmq_msg_init(owned)
        zmq_msg_move(owned, msg)
        zmq_msg_close(msg)
        let handle = MsgHandle(owned)
        return Frame(borrowing: UnsafeRawPointer(zmq_msg_data(owned)), count: size) { _ in handle.release() }
    }

    @discardableResult
    public func send(_ envelope: Envelope) -> Bool {
        guard let s = socket else { return false }
        var parts: [Frame] = []
        parts.reserveCapacity(envelope.frames.count + 1)
        if role == .router {
            guard let p = envelope.peer else { return false }
            parts.append(Frame(p.bytes))
        }
        parts.append(contentsOf: envelope.frames)
        for (i, f) in parts.enumerated() {
            let flags = ZMQ_DONTWAIT | (i < parts.count - 1 ? ZMQ_SNDMORE : 0)
            let rc: Int32
            if f.count >= options.zeroCopyThreshold {
                rc = sendZeroCopy(f, flags: flags, socket: s)
            } else {
                rc = f.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, flags) }
            }
            if rc < 0 {
                // A first part that fails leaves nothing queued; a later failure cannot happen for a
                // message whose first part was accepted (libzmq queues multipart messages atomically).
                dropped += 1
                return false
            }
        }
        return true
    }

    /// Bytes of large frames handed to libzmq and not yet on the wire, over every link of the process: what a
    /// producer of bulk replies (the coordinator's file server) waits on, so slow readers cause back-pressure, not
    /// growth. (Several sends of one buffer count once each: an upper bound.)
    public static let queuedBulkBytes = Atomic<Int>(0)

    private final class Sent {
        let storage: Frame.Storage
        let count: Int
        init(_ storage: Frame.Storage, _ count: Int) {
            self.storage = storage
            self.count = count
        }
    }

    private func sendZeroCopy(_ f: Frame, flags: Int32, socket s: UnsafeMutableRawPointer) -> Int32 {
        let sent = Unmanaged.passRetained(Sent(f.retainedStorage, f.count))
        let out = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        defer { out.deallocate() }
        let base = UnsafeMutableRawPointer(mutating: f.retainedStorage.base)
        Self.queuedBulkBytes.add(f.count, ordering: .relaxed)
        // The free callback runs on libzmq's I/O thread once the bytes are on the wire.
        zmq_msg_init_data(out, base, f.count, { _, hint in
            let sent = Unmanaged<Sent>.fromOpaque(hint!).takeRetainedValue()
            ZmqLink.queuedBulkBytes.subtract(sent.count, ordering: .relaxed)
        }, sent.toOpaque())
        let rc = zmq_msg_send(out, s, flags)
        if rc < 0 { zmq_msg_close(out) }   // releases the storage through the callback
        return rc < 0 ? -1 : 0
    }
}

/// A received zmq_msg_t kept alive while a Frame refers to its bytes.
private final class MsgHandle: @unchecked Sendable {
    let msg: UnsafeMutablePointer<zmq_msg_t>
    init(_ msg: UnsafeMutablePointer<zmq_msg_t>) { self.msg = msg }
    func release() {
        zmq_msg_close(msg)
        msg.deallocate()
    }
}

import CZeroMQ
import Glibc
import SigmaModel
import Synchronization

/// CurveZMQ on a link: encryption and authentication of every connection (RFC 26), keys as Z85 text.
public enum LinkSecurity: Sendable, Equatable {
    /// The coordinator's ROUTER: its secret key; clients are admitted by the ZAP handler for `domain`.
    case server(secretKey: String, domain: String)
    /// A worker's or client's DEALER: the coordinator's public key and its own key pair.
    case client(serverKey: String, publicKey: String, secretKey: String)
    /// A coordinator on loopback without keys: peers present the local token (ZeroMQ PLAIN, checked by the ZAP
    /// handler for `domain`); other local users do not have it.
    case localServer(domain: String)
    /// A worker or client of a loopback coordinator without keys: this user's local token.
    case localClient(token: String)
}

public enum Curve {
    /// A new key pair from libsodium's random source (through libzmq).
    public static func newKeyPair() throws -> (publicKey: String, secretKey: String) {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard ZContext.hasCurve, zmq_curve_keypair(&pub, &sec) == 0 else {
            throw TransportError.socket("zmq_curve_keypair (is libzmq built with CURVE?)", errno: zmq_errno())
        }
        return (string(pub), string(sec))
    }

    /// The public key that belongs to a Z85 secret key; nil if `secretKey` is not one.
    public static func publicKey(ofSecret secretKey: String) -> String? {
        guard Z85.isKey(secretKey) else { return nil }
        var pub = [CChar](repeating: 0, count: 41)
        let rc = secretKey.withCString { zmq_curve_public(&pub, $0) }
        return rc == 0 ? string(pub) : nil
    }

    /// A key pair file's keys, checked: the public key must be the secret key's.
    public static func verified(_ k: CurveKeyFile, file: String) throws -> (publicKey: String, secretKey: String) {
        guard let secret = k.secretKey else { throw KeyFileError(file: file, problem: "holds no 'secret' key") }
        guard publicKey(ofSecret: secret) == k.publicKey else {
            throw KeyFileError(file: file, problem: "its 'public' key does not belong to its 'secret' key (the file was edited or mixed up)")
        }
        return (k.publicKey, secret)
    }

    private static func string(_ c: [CChar]) -> String {
        String(decoding: c.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The process's ZAP handler (RFC 27): a REP socket on `inproc://zeromq.zap.01`, on its own thread, answering
/// libzmq's authentication requests for every CURVE server socket of the process. Each coordinator registers a
/// domain with its allow list; a request for an unknown domain is refused.
public final class ZAPService: Sendable {
    public static let shared = ZAPService()

    public typealias Observer = @Sendable (ZAP.Decision) -> Void
    /// Who a domain admits: enrolled keys (CURVE) or the holders of a local token (PLAIN).
    public enum Gate: Sendable {
        case keys(AllowList)
        case token(String)
        /// Exactly these CURVE public keys (Z85), admitted as workers: the peers of a `PeerMesh`, as the
        /// coordinator names them (`update(_:to:)` replaces the set).
        case peers(Set<String>)

        public func admit(_ c: ZAP.Credential) -> Principal? {
            switch (self, c) {
            case (.keys(let allow), .curve(let key)): return allow.principal(of: key)
            case (.peers(let keys), .curve(let key)): return keys.contains(key) ? Principal(name: "peer", key: key, role: .worker) : nil
            case (.token(let t), .plain(_, let password)):
                // (constant time: the comparison does not stop at the first differing byte)
                let a = Array(t.utf8), b = Array(password.utf8)
                guard a.count == b.count else { return nil }
                var diff: UInt8 = 0
                for i in a.indices { diff |= a[i] ^ b[i] }
                return diff == 0 ? .trusted : nil
            default: return nil
            }
        }
    }
    private let domains = Mutex<[String: (gate: Gate, observe: Observer)]>([:])
    private let started = Mutex<OSThread?>(nil)
    private let counter = Atomic<Int>(0)
    private let tallies = Mutex<[String: (admitted: UInt64, refused: UInt64)]>([:])

    /// CURVE handshakes answered for `domain` so far: admitted (enrolled keys) and refused.
    public func handshakes(_ domain: String) -> (admitted: UInt64, refused: UInt64) {
        tallies.withLock { $0[domain] } ?? (0, 0)
    }

    /// Registers an allow list under a new ZAP domain (returned) and starts the handler on first use; when this
    /// returns the handler is bound, so a server socket made afterwards is never without authentication.
    public func register(_ allow: AllowList, observe: @escaping Observer) throws -> String {
        try register(.keys(allow), observe: observe)
    }

    public func register(_ gate: Gate, observe: @escaping Observer) throws -> String {
        let domain = "sigma-\(getpid())-\(counter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        domains.withLock { $0[domain] = (gate, observe) }
        try startIfNeeded()
        return domain
    }

    public func unregister(_ domain: String) { _ = domains.withLock { $0.removeValue(forKey: domain) } }

    /// Replaces the gate of a registered domain: handshakes from now on are decided by `gate` (connections
    /// admitted before stay). No-op for a domain not registered.
    public func update(_ domain: String, to gate: Gate) {
        domains.withLock { d in
            if let entry = d[domain] { d[domain] = (gate, entry.observe) }
        }
    }

    /// The handler thread's start: bound or why not.
    final class StartGate: Sendable {
        let result = Mutex<Result<Void, TransportError>?>(nil)
        let waker = Waker()
        func finish(_ r: Result<Void, TransportError>) {
            result.withLock { $0 = r }
            waker.wake()
        }
    }

    private func startIfNeeded() throws {
        let gate = StartGate()
        let launched: Bool = started.withLock { current in
            if current != nil { return false }
            current = OSThread(name: "sigma-zap") { [self] in serve(gate) }
            return true
        }
        guard launched else { return }
        var item = pollfd(fd: gate.waker.fd, events: Int16(POLLIN), revents: 0)
        while gate.result.withLock({ $0 }) == nil { _ = poll(&item, 1, 100) }
        if case .failure(let e)? = gate.result.withLock({ $0 }) {
            started.withLock { $0 = nil }
            throw e
        }
    }

    private func serve(_ gate: StartGate) {
        guard let s = zmq_socket(ZContext.process.handle, ZMQ_REP) else {
            gate.finish(.failure(.last("zmq_socket(REP) for ZAP")))
            return
        }
        var linger: Int32 = 0
        zmq_setsockopt(s, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
        guard zmq_bind(s, "inproc://zeromq.zap.01") == 0 else {
            gate.finish(.failure(.bind(endpoint: "inproc://zeromq.zap.01", reason: String(cString: zmq_strerror(zmq_errno())))))
            zmq_close(s)
            return
        }
        gate.finish(.success(()))
        let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        while true {
            var frames: [[UInt8]] = []
            var more = true
            while more {
                zmq_msg_init(msg)
                if zmq_msg_recv(msg, s, 0) < 0 {
                    zmq_msg_close(msg)
                    if zmq_errno() == ETERM { zmq_close(s); return }
                    frames = []
                    break
                }
                if frames.count < 16 {
                    frames.append(Array(UnsafeRawBufferPointer(start: zmq_msg_data(msg), count: min(zmq_msg_size(msg), 4096))))
                }
                more = zmq_msg_more(msg) == 1
                zmq_msg_close(msg)
            }
            if frames.isEmpty { continue }
            var observer: Observer? = nil
            let decision = ZAP.decide(frames) { domain, credential in
                guard let entry = domains.withLock({ $0[domain] }) else { return nil }
                observer = entry.observe
                return entry.gate.admit(credential)
            }
            if frames.count > 2 {
                let domain = String(decoding: frames[2], as: UTF8.self)
                tallies.withLock { t in
                    var v = t[domain] ?? (0, 0)
                    if decision.admitted { v.admitted += 1 } else { v.refused += 1 }
                    t[domain] = v
                }
            }
            for (i, f) in decision.reply.enumerated() {
                _ = f.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, i < decision.reply.count - 1 ? ZMQ_SNDMORE : 0) }
            }
            observer?(decision)
        }
    }
}

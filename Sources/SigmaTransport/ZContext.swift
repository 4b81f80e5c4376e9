import CZeroMQ
import Foundation
import SigmaModel

/// The process's one ZeroMQ context. libzmq documents contexts as thread-safe, so sharing it is sound.
public final class ZContext: @unchecked Sendable {
    public let handle: UnsafeMutableRawPointer

    /// The context every Sigma socket in this process uses (one I/O thread carries ~8 GB/s plain, ~0.6 GB/s with
    /// CURVE; `SIGMA_ZMQ_IO_THREADS` in the environment sets another count).
    public static let process = ZContext(ioThreads: Int32(min(16, max(1, ProcessInfo.processInfo.environment["SIGMA_ZMQ_IO_THREADS"].flatMap { Int($0) } ?? 1))))

    init(ioThreads: Int32) {
        handle = zmq_ctx_new()!
        zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads)
        zmq_ctx_set(handle, ZMQ_BLOCKY, 0)   // sockets default to LINGER 0 unless set
    }

    /// libzmq's version, e.g. "4.3.4".
    public static var libraryVersion: String {
        var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
        zmq_version(&a, &b, &c)
        return "\(a).\(b).\(c)"
    }

    public static var hasCurve: Bool { zmq_has("curve") == 1 }
}

/// What went wrong in the transport.
public enum TransportError: Error, Equatable, CustomStringConvertible {
    case socket(String, errno: Int32)
    case bind(endpoint: String, reason: String)
    case connect(endpoint: String, reason: String)
    case closed

    public var description: String {
        switch self {
        case .socket(let what, let e): "\(what): \(String(cString: zmq_strerror(e)))"
        case .bind(let ep, let r): "cannot bind \(ep): \(r)"
        case .connect(let ep, let r): "cannot connect to \(ep): \(r)"
        case .closed: "transport closed"
        }
    }

    static func last(_ what: String) -> TransportError { .socket(what, errno: zmq_errno()) }
}

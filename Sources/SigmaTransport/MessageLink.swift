import CSysShims
import Glibc
import SigmaModel

/// One multipart message and, on a ROUTER-side link, the peer it came from or goes to.
public struct Envelope: Sendable {
    public var peer: PeerID?
    public var frames: [Frame]
    /// On a ROUTER-side link with authentication: the ZAP user id the sender's connection was admitted with
    /// (`Principal.userID`); nil where the link has none.
    public var user: String?
    public init(peer: PeerID? = nil, frames: [Frame], user: String? = nil) {
        self.peer = peer
        self.frames = frames
        self.user = user
    }
}

/// Moves multipart messages; knows no message types. A link is owned and used by exactly one thread (its
/// poller); other threads reach that thread only through its `Waker` and a mailbox of the shell's own.
public protocol MessageLink: AnyObject {
    /// Blocks up to `timeoutMs` (−1: no limit) until a message may be ready or the waker fired.
    func wait(timeoutMs: Int32) throws
    /// The next inbound message, without blocking; nil when none is ready.
    func receive() throws -> Envelope?
    /// Queues a message without blocking. False when it was dropped (unknown peer, or its queue is full).
    @discardableResult func send(_ envelope: Envelope) -> Bool
    /// Wakes `wait` from any thread.
    var waker: Waker { get }
    /// Closes the link; further use throws `.closed`.
    func close()
}

/// Wakes a poller thread from any thread (an eventfd polled next to the socket).
public final class Waker: Sendable {
    public let fd: Int32
    public init() {
        fd = csys_eventfd_nonblock()
        precondition(fd >= 0, "eventfd failed")
    }
    public func wake() { _ = csys_eventfd_signal(fd) }
    func drain() { csys_eventfd_drain(fd) }
    deinit { Glibc.close(fd) }
}

/// A joinable OS thread (not a Swift task): sockets live here, never on the cooperative pool.
public final class OSThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let box: Box
    private var joined = false

    final class Box: @unchecked Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        box = Box(name: name, body: body)
        let unmanaged = Unmanaged.passRetained(box)
        let rc = pthread_create(&thread, nil, { arg in
            let b = Unmanaged<OSThread.Box>.fromOpaque(arg!).takeRetainedValue()
            b.name.withCString { csys_set_thread_name($0) }
            b.body()
            return nil
        }, unmanaged.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    /// Waits for the thread to end (once).
    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}

import Glibc
import SigmaModel
import Synchronization

/// The async bridge: a link owned by its own OS thread, usable from Swift concurrency without ever blocking
/// the cooperative pool. Outbound messages go into a mailbox and wake the thread (eventfd); inbound messages
/// arrive on an `AsyncStream`.
public final class BridgedLink: Sendable {
    public let inbound: AsyncStream<Envelope>
    private let shared: Shared
    private let thread: Mutex<OSThread?>
    /// Set if the link could not be made (bad endpoint).
    public let startError: TransportError?

    final class Shared: Sendable {
        let outbox = Mutex<[Envelope]>([])
        let stopping = Atomic<Bool>(false)
        let waker = Mutex<Waker?>(nil)
        let ready = Mutex<(done: Bool, error: TransportError?)>((false, nil))
        let made = Waker()
    }

    /// Starts the poller thread and makes the link on it. Inbound messages go to `onReceive` when given — called
    /// on the link's thread, so it must be quick and never block (it saves a task hop per message) — else to
    /// `inbound`, which buffers at most `bufferLimit` unread messages.
    public init(_ factory: LinkFactory, name: String = "sigma-link", bufferLimit: Int = 100_000,
                onReceive: (@Sendable (Envelope) -> Void)? = nil) {
        let (stream, continuation) = AsyncStream<Envelope>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        inbound = stream
        let shared = Shared()
        self.shared = shared
        let t = OSThread(name: name) {
            let link: MessageLink
            do {
                link = try factory.make()
            } catch {
                shared.ready.withLock { $0 = (true, error as? TransportError ?? .closed) }
                shared.made.wake()
                continuation.finish()
                return
            }
            shared.waker.withLock { $0 = link.waker }
            shared.ready.withLock { $0.done = true }
            shared.made.wake()
            defer {
                link.close()
                continuation.finish()
            }
            while !shared.stopping.load(ordering: .acquiring) {
                do {
                    try link.wait(timeoutMs: 200)
                    while let e = try link.receive() {
                        if let deliver = onReceive { deliver(e) } else { continuation.yield(e) }
                    }
                } catch {
                    return
                }
                let pending = shared.outbox.withLock { q -> [Envelope] in
                    let all = q
                    q.removeAll(keepingCapacity: true)
                    return all
                }
                for e in pending { link.send(e) }
            }
        }
        thread = Mutex(t)
        // Wait (briefly, on the caller's thread) until the link exists so that early sends are not lost.
        while !shared.ready.withLock({ $0.done }) {
            var p = pollfd(fd: shared.made.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
        }
        startError = shared.ready.withLock { $0.error }
    }

    /// Queues a message; callable from any task or thread, never blocks.
    public func send(_ e: Envelope) {
        shared.outbox.withLock { $0.append(e) }
        shared.waker.withLock { $0 }?.wake()
    }

    /// Stops the thread and closes the link.
    public func close() {
        shared.stopping.store(true, ordering: .releasing)
        shared.waker.withLock { $0 }?.wake()
        let t = thread.withLock { t -> OSThread? in
            let x = t
            t = nil
            return x
        }
        t?.join()
    }

    deinit { close() }
}

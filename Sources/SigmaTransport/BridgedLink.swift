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

    /// Also a `TaskExecutor`: tasks that prefer it run on the link thread itself, so sending and resuming after
    /// a reply cost no thread wake-up at all (see `SigmaClient.withLinkExecutor`).
    final class Shared: TaskExecutor, Sendable {
        let jobs = Mutex<[UnownedJob]>([])
        func enqueue(_ job: consuming ExecutorJob) {
            let j = UnownedJob(job)
            jobs.withLock { $0.append(j) }
            waker.withLock { $0 }?.wake()
        }
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
                // Run tasks that prefer this thread, then send what they (and anyone else) queued. Repeat while
                // they keep the thread busy, so a task resumed by a reply and sending its next request does not
                // wait for a wake-up.
                repeat {
                    let ready = shared.jobs.withLock { q -> [UnownedJob] in
                        defer { q.removeAll(keepingCapacity: true) }
                        return q
                    }
                    for j in ready { j.runSynchronously(on: shared.asUnownedTaskExecutor()) }
                    let pending = shared.outbox.withLock { q -> [Envelope] in
                        defer { q.removeAll(keepingCapacity: true) }
                        return q
                    }
                    for e in pending { link.send(e) }
                } while shared.jobs.withLock({ !$0.isEmpty })
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

    /// An executor that runs tasks on this link's thread (use with `withTaskExecutorPreference`). Work run there
    /// must not block: it shares the thread with the socket.
    public var executor: any TaskExecutor { shared }

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

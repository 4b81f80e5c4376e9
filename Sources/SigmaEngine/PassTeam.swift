import CSysShims
import Dispatch
import Glibc

/// Elements 0..<total in up to `threads` contiguous ranges at once — one per thread, at most one per `minimumPart`
/// elements (an optimizer's update, a reduce's additions: each element's result is independent of the others, so
/// the bits do not depend on the split). The calling thread runs the first range, `PassTeam`'s helpers the others.
public func splitOverThreads(total: Int, threads: Int, minimumPart: Int = 65_536, _ body: @Sendable (Range<Int>) -> Void) {
    partsOverThreads(total: total, threads: threads, minimumPart: minimumPart) { k, n in body(total * k / n ..< total * (k + 1) / n) }
}

/// Parts 0..<n of a piece of work of `total` elements at once — n at most `threads`, at most one per `minimumPart`
/// elements — each `body(k, n)` on its own thread (the calling thread part 0, `PassTeam`'s helpers the others).
func partsOverThreads(total: Int, threads: Int, minimumPart: Int = 65_536, _ body: @Sendable (_ part: Int, _ parts: Int) -> Void) {
    let n = max(1, min(threads, total / max(1, minimumPart)))
    if n == 1 { body(0, 1); return }
    if PassTeam.shared.run(parts: n, { k in body(k, n) }) { return }
    // (the team is running another caller's work)
    DispatchQueue.concurrentPerform(iterations: n) { k in body(k, n) }
}

/// A buffer pointer handed to threads that write disjoint ranges of it.
public struct Unchecked<P>: @unchecked Sendable {
    public let v: P
    public init(_ v: P) { self.v = v }
}

/// The engine's threads: the calling thread runs part 0 of a piece of work (a product's first rows, a pass's first
/// range), helper threads the other parts at the same time. Made on first use and kept; one caller at a time (a
/// second caller meanwhile is told no and runs its work another way).
///
/// A helper that has finished a part spins for `helperSpin` before it sleeps: a training step's products follow each
/// other with gaps of tens of microseconds (an activation, a bias sum), and waking a sleeping thread costs about as
/// much on a virtual machine. The caller waits for its helpers the same way. Nothing spins longer than that between
/// steps or jobs.
final class PassTeam: @unchecked Sendable {
    static let shared = PassTeam()

    /// How long an idle helper spins before it sleeps, and how long the caller spins for a helper's part to end.
    static let helperSpin = 200_000, callerSpin = 2_000_000   // nanoseconds

    private let busy = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private var helpers: [Helper] = []

    private init() { busy.initialize(to: 0) }

    /// Runs `body(0)` on this thread and `body(1)` … `body(parts − 1)` on helpers, all at once; returns when all
    /// have — or false at once, nothing run, while another caller's work holds the team.
    func run(parts: Int, _ body: @Sendable (Int) -> Void) -> Bool {
        guard parts > 1 else { body(0); return true }
        guard csys_atomic_cas_u64(busy, 0, 1) != 0 else { return false }
        defer { csys_atomic_store_u64(busy, 0) }
        while helpers.count < parts - 1, let h = Helper() { helpers.append(h) }
        guard helpers.count >= parts - 1 else { return false }   // (no thread could be made: the caller's way)
        withoutActuallyEscaping(body) { b in
            for k in 1..<parts { helpers[k - 1].start(part: k, b) }
            b(0)
            for k in 1..<parts { helpers[k - 1].wait() }
        }
        return true
    }

    /// One helper thread: waits for a part (`go`), runs it, says so (`done`).
    final class Helper: @unchecked Sendable {
        private let go = csys_wake_new()!, done = csys_wake_new()!
        private var job: (@Sendable (Int) -> Void)?
        private var part = 0

        /// nil when the system makes no more threads.
        init?() {
            var thread = pthread_t()
            // (retained for good: the team keeps its helpers for the process's life)
            let me = Unmanaged.passRetained(self)
            guard pthread_create(&thread, nil, { arg in
                Unmanaged<Helper>.fromOpaque(arg!).takeUnretainedValue().loop()
                return nil
            }, me.toOpaque()) == 0 else {
                me.release()
                return nil
            }
            pthread_detach(thread)
        }

        private func loop() {
            csys_set_thread_name("sigma-engine")
            var seen: UInt64 = 0
            while true {
                seen = csys_wake_wait(go, seen, PassTeam.helperSpin)
                do { let body = job; body?(part) }   // (its reference dropped before the caller hears it is done)
                csys_wake_signal(done)
            }
        }

        /// (The ticket's sequentially consistent update publishes `job` and `part` to the helper, and its `done`
        /// signal the part's writes back to the caller.)
        func start(part: Int, _ body: @escaping @Sendable (Int) -> Void) {
            self.part = part
            job = body
            pending = csys_wake_ticket(done)
            csys_wake_signal(go)
        }

        private var pending: UInt64 = 0

        func wait() {
            _ = csys_wake_wait(done, pending, PassTeam.callerSpin)
            job = nil
        }
    }
}

import Foundation
import Synchronization

/// The cores one process may compute on, shared by everything it runs at once: a worker's compute threads each hold
/// one lane while they run a shard, and a shard that can split its work (a training shard's micro-batches, an
/// infer or embed shard's batches) borrows the lanes nobody holds. So a worker with N threads running one shard uses
/// N cores, running N shards uses N cores — never more (BLAS runs single-threaded inside each lane).
public final class ComputeLanes: Sendable {
    /// The process's lanes (one until the worker or a `--local` run says how many threads it may use).
    public static let shared = ComputeLanes(total: 1)

    private let state: Mutex<(total: Int, held: Int)>
    /// Work queued for the threads that hold lanes (a worker's shards not yet taken): those lanes are spoken for.
    private let queued = Mutex<(@Sendable () -> Int)?>(nil)

    public init(total: Int) { state = Mutex((max(1, total), 0)) }

    /// Sets how many lanes there are (the threads this process may compute on).
    public func configure(total: Int) { state.withLock { $0.total = max(1, total) } }

    public var total: Int { state.withLock { $0.total } }

    /// Lanes free right now.
    public var free: Int { state.withLock { max(0, $0.total - $0.held) } }

    /// Lanes stay with queued work: `count` says how many items wait for a thread that will hold a lane (a worker's
    /// shards not yet started), and that many free lanes are not lent — two shards that arrive together run side by
    /// side instead of the first taking every core.
    public func reserve(forQueued count: @escaping @Sendable () -> Int) { queued.withLock { $0 = count } }

    /// Takes up to `n` free lanes without waiting; returns how many it took (0 when all are held or spoken for).
    public func acquire(upTo n: Int) -> Int {
        let waiting = queued.withLock { $0 }?() ?? 0
        return state.withLock { s in
            let k = max(0, min(n, s.total - s.held - waiting))
            s.held += k
            return k
        }
    }

    /// Holds one lane whether or not one is free (a compute thread running a shard: it is running anyway).
    public func hold() { state.withLock { $0.held += 1 } }

    public func release(_ n: Int) {
        guard n > 0 else { return }
        state.withLock { $0.held = max(0, $0.held - n) }
    }

    /// Runs `body(i)` for every i in 0..<count, each exactly once: on the calling thread (which holds its own lane, or
    /// runs anyway) plus as many helper threads as there are free lanes, at most `maxThreads` threads in all.
    /// Indices are handed out in order as threads free up. What `body` computes must not depend on which thread ran
    /// it: callers combine the results by index, so the outcome is the same bits for any number of lanes.
    public func forEach(_ count: Int, maxThreads: Int = .max, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        guard count > 0 else { return }
        let extra = count > 1 ? acquire(upTo: min(maxThreads, count) - 1) : 0
        defer { release(extra) }
        let next = Atomic<Int>(0)
        let failure = Mutex<(any Error)?>(nil)
        let work: @Sendable () -> Void = {
            while true {
                if failure.withLock({ $0 }) != nil { return }
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < count else { return }
                do { try body(i) } catch { failure.withLock { if $0 == nil { $0 = error } } }
            }
        }
        let helpers = (0..<extra).map { _ in Thread.detachedJoinable(work) }
        work()
        for h in helpers { h.join() }
        if let e = failure.withLock({ $0 }) { throw e }
    }
}

import DequeModule
import Foundation

/// A FIFO handing work from one thread to OS threads that block waiting for it (a worker's compute threads, the
/// coordinator's resolver) — never to Swift tasks. It holds only elements not yet taken: a taken element is
/// released as soon as its taker is done with it (a training shard carries megabytes of parameters).
public final class BlockingQueue<Element: Sendable>: @unchecked Sendable {
    // @unchecked: every access to `items` and `closed` holds `cond`.
    private let cond = NSCondition()
    private var items = Deque<Element>()
    private var closed = false

    public init() {}

    public func push(_ e: Element) {
        cond.lock()
        items.append(e)
        cond.signal()
        cond.unlock()
    }

    /// Blocks until an element is available; nil once closed and empty.
    public func next() -> Element? {
        cond.lock()
        defer { cond.unlock() }
        while items.isEmpty && !closed { cond.wait() }
        return items.popFirst()
    }

    /// Nothing is waiting (takers may still be busy with what they took).
    public var isEmpty: Bool {
        cond.lock()
        defer { cond.unlock() }
        return items.isEmpty
    }

    /// Elements waiting to be taken.
    public var count: Int {
        cond.lock()
        defer { cond.unlock() }
        return items.count
    }

    public func remove(where match: (Element) -> Bool) {
        cond.lock()
        // (Deque's removeAll(where:) is the generic, unspecialized one: skipped when nothing matches — the usual case
        // of a worker told that a job which ran here has ended)
        if items.contains(where: match) { items.removeAll(where: match) }
        cond.unlock()
    }

    /// Wakes every taker; `next()` returns what is still waiting, then nil — or nil at once with `dropping`.
    public func close(dropping: Bool = false) {
        cond.lock()
        closed = true
        if dropping { items.removeAll() }
        cond.broadcast()
        cond.unlock()
    }
}

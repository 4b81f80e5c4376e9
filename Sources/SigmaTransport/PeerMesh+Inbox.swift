import DequeModule
import Foundation
import SigmaModel

extension PeerMesh {
    /// What `take` found.
    enum Taken {
        case taken([[Frame]])
        /// One of the messages could not be read (a shared-memory reference that did not resolve): why.
        case unreadable(String)
        /// Fewer than asked for: this many with the tag so far.
        case waiting(arrived: Int)
        case closed
    }

    /// Messages from peers waiting for a `receive`, by tag, at most `limit` bytes in all (then the oldest go). The
    /// mesh's thread puts them in; compute threads wait on `cond` and take them out.
    final class Inbox: @unchecked Sendable {
        // @unchecked: every stored var is read and written with `cond` held.
        private let cond = NSCondition()
        private var byTag: [[UInt8]: Deque<Arrival>] = [:]
        private var total = 0
        /// Arrival order across tags, for dropping the oldest.
        private var sequence: UInt64 = 0
        private var discards = Deque<@Sendable ([UInt8]) -> Bool>()
        private var droppedCount = 0
        private var closed = false
        let limit: Int

        struct Arrival {
            let sequence: UInt64
            let frames: [Frame]
            /// The tag's and the frames' bytes.
            let bytes: Int
            /// Why the message could not be read (its frames are then empty).
            let failure: String?
        }

        init(limit: Int) { self.limit = limit }

        private func locked<R>(_ body: () -> R) -> R {
            cond.lock()
            defer { cond.unlock() }
            return body()
        }

        var bytes: Int { locked { total } }
        var dropped: Int { locked { droppedCount } }
        func count(tag: [UInt8]) -> Int { locked { byTag[tag]?.count ?? 0 } }

        /// Keeps a message for a `receive` (on the mesh's thread) unless its tag was discarded.
        func deliver(tag: [UInt8], frames: [Frame], failure: String? = nil) {
            let size = frames.reduce(tag.count) { $0 + $1.count }
            cond.lock()
            defer { cond.unlock() }
            guard !closed, !discards.contains(where: { $0(tag) }) else { return }
            guard size <= limit else {
                droppedCount += 1
                return
            }
            byTag[tag, default: []].append(Arrival(sequence: sequence, frames: frames, bytes: size, failure: failure))
            sequence += 1
            total += size
            while total > limit { dropOldest() }
            cond.broadcast()
        }

        private func dropOldest() {
            guard let (tag, _) = byTag.min(by: { $0.value.first!.sequence < $1.value.first!.sequence }) else { return }
            let gone = byTag[tag]!.removeFirst()
            if byTag[tag]!.isEmpty { byTag[tag] = nil }
            total -= gone.bytes
            droppedCount += 1
        }

        /// The first `count` messages with `tag`, removed, if that many are here; else waits for an arrival up to
        /// `waitingAtMost` seconds and looks once more.
        func take(tag: [UInt8], count: Int, waitingAtMost seconds: Double) -> Taken {
            cond.lock()
            defer { cond.unlock() }
            for attempt in 0..<2 {
                if closed { return .closed }
                let arrived = byTag[tag]?.count ?? 0
                if arrived >= count {
                    var q = byTag[tag]!
                    let taken = q.prefix(count)
                    q.removeFirst(count)
                    byTag[tag] = q.isEmpty ? nil : q
                    total -= taken.reduce(0) { $0 + $1.bytes }
                    if let failure = taken.lazy.compactMap(\.failure).first { return .unreadable(failure) }
                    return .taken(taken.map(\.frames))
                }
                if attempt == 0 && seconds > 0 { _ = cond.wait(until: Date(timeIntervalSinceNow: seconds)) } else { return .waiting(arrived: arrived) }
            }
            return .waiting(arrived: byTag[tag]?.count ?? 0)
        }

        /// Drops what is here with a matching tag and what arrives later.
        func discard(_ predicate: @escaping @Sendable ([UInt8]) -> Bool) {
            cond.lock()
            defer { cond.unlock() }
            discards.append(predicate)
            if discards.count > 256 { discards.removeFirst() }
            for tag in byTag.keys.filter(predicate) {
                total -= byTag.removeValue(forKey: tag)!.reduce(0) { $0 + $1.bytes }
            }
        }

        /// Wakes every waiting `take` (which then answers `.closed`) and lets go of what is buffered.
        func close() {
            cond.lock()
            closed = true
            byTag = [:]
            total = 0
            cond.broadcast()
            cond.unlock()
        }
    }
}

import Foundation
import SigmaModel
import SigmaTransport
import SigmaWorkerCore
import Synchronization
import Testing

/// The queue between a worker's poller and its compute threads must not hold shards it has handed out: a
/// training shard carries the step's parameters (megabytes), and holding them made a worker grow by one
/// parameter vector per step (1.6 GB after 150 steps of a 1.9M-parameter MLP).
@Suite struct BlockingQueueTests {
    final class Released: Sendable {
        let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .relaxed) }
    }

    /// A queue of `n` shards (shard i for round i) whose parameter frames count their releases.
    func filled(_ n: Int) throws -> (BlockingQueue<ShardTask>, Released) {
        let released = Released(), queue = BlockingQueue<ShardTask>()
        let spec = try JobSpec.parse("kind: map-reduce\nname: q\ninput: {generate: range, count: 10}\nmap: square\nreduce: [sum]\nshards: 1\n")
        for i in 0..<n {
            let p = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
            let params = Frame(borrowing: p, count: 64) { base in
                released.count.add(1, ordering: .relaxed)
                UnsafeMutableRawPointer(mutating: base)?.deallocate()
            }
            queue.push(ShardTask(job: 1, shard: UInt32(i), attempt: 1, start: 0, count: 10, spec: spec, round: UInt32(i), params: params))
        }
        return (queue, released)
    }

    @Test func aTakenShardsParametersAreReleasedWhenTheComputeThreadDropsThem() throws {
        let (queue, released) = try filled(3)
        for i in 0..<3 {
            do {
                let t = try #require(queue.next())
                #expect(t.shard == UInt32(i), "FIFO order")
            }
            #expect(released.value == i + 1, "shard \(i)'s parameters are still held by the queue")
        }
        #expect(queue.isEmpty)
        queue.close()
        #expect(queue.next() == nil)
    }

    @Test func removedShardsAreReleasedAndTheRestKeepTheirOrder() throws {
        let (queue, released) = try filled(4)
        queue.remove { $0.shard % 2 == 0 }
        #expect(released.value == 2)
        #expect(queue.next()?.shard == 1)
        #expect(queue.next()?.shard == 3)
        #expect(queue.isEmpty)
    }

    @Test func closingHandsOutWhatWaitsUnlessDropping() throws {
        let (kept, _) = try filled(2)
        kept.close()
        #expect(kept.next()?.shard == 0 && kept.next()?.shard == 1 && kept.next() == nil)
        let (dropped, released) = try filled(2)
        dropped.close(dropping: true)
        #expect(dropped.next() == nil && released.value == 2)
    }
}

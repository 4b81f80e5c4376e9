import Foundation
import SigmaModel
@testable import SigmaWorker
import SigmaWorkerCore
import Synchronization
import Testing

/// The worker's queue between its poller and compute threads must not hold shards it has handed out: a
/// training shard carries the step's parameters (megabytes), and holding them made a worker grow by one
/// parameter vector per step (1.6 GB after 150 steps of a 1.9M-parameter MLP).
@Suite struct WorkQueueTests {
    final class Released: Sendable {
        let count = Atomic<Int>(0)
    }

    func task(_ shard: UInt32, params: Frame) throws -> ShardTask {
        let spec = try JobSpec.parse("kind: map-reduce\nname: q\ninput: {generate: range, count: 10}\nmap: square\nreduce: [sum]\nshards: 1\n")
        return ShardTask(job: 1, shard: shard, attempt: 1, start: 0, count: 10, spec: spec, round: shard, params: params)
    }

    @Test func aTakenShardsParametersAreReleasedWhenTheComputeThreadDropsThem() throws {
        let released = Released()
        let queue = WorkQueue()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { buffer.deallocate() }
        for i in 0..<3 {
            queue.push(try task(UInt32(i), params: Frame(borrowing: buffer, count: 64) { _ in released.count.add(1, ordering: .relaxed) }))
        }
        for i in 0..<3 {
            do {
                let t = try #require(queue.next())
                #expect(t.shard == UInt32(i), "FIFO order")
            }
            #expect(released.count.load(ordering: .relaxed) == i + 1, "shard \(i)'s parameters are still held by the queue")
        }
        #expect(queue.isIdle)
        queue.close()
        #expect(queue.next() == nil)
    }

    @Test func removedShardsAreReleasedAndTheRestKeepTheirOrder() throws {
        let released = Released()
        let queue = WorkQueue()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { buffer.deallocate() }
        for i in 0..<4 {
            queue.push(try task(UInt32(i), params: Frame(borrowing: buffer, count: 64) { _ in released.count.add(1, ordering: .relaxed) }))
        }
        queue.remove { $0.shard % 2 == 0 }
        #expect(released.count.load(ordering: .relaxed) == 2)
        #expect(queue.next()?.shard == 1)
        #expect(queue.next()?.shard == 3)
        #expect(queue.isIdle)
    }
}

import Foundation
import Logging
import SigmaJobs
import SigmaModel
import SigmaProtocol
@testable import SigmaWorker
import Testing

/// A worker's serving thread across a reconnect: an answer of the earlier connection is never sent on the next — a
/// restarted coordinator numbers its batches from 1 again, and an old BATCH-RESULT would answer its batch 1.
@Suite struct ServeHostTests {
    @Test func answersOfAnEarlierConnectionAreDropped() async throws {
        let host = ServeHost(kinds: .standard, roots: DataRoots.currentDirectory(), limits: .standard, logger: Logger(label: "test"), wake: {})
        defer { host.stop() }
        func batch(_ id: UInt64) -> Message { .batch(ServeBatch(deployment: 7, batch: id, input: .rows(width: 2, values: [1, 2]))) }
        // (deployment 7 is not loaded: each batch is answered at once, with an error)
        #expect(host.take(batch(1)))
        var got: [Message] = []
        for _ in 0..<500 where got.isEmpty {
            got = host.replies()
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        #expect(got.count == 1, "the same connection's answer is sent")
        #expect(host.take(batch(2)))
        try await Task.sleep(nanoseconds: 300_000_000)   // (answered by now, not sent yet)
        host.reset()
        #expect(host.replies().isEmpty, "an answer of the connection before the reset is not sent")
        #expect(host.take(batch(3)))
        got = []
        for _ in 0..<500 where got.isEmpty {
            got = host.replies()
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        #expect(got.map { m -> UInt64 in if case .batchResult(let r) = m { r.batch } else { 0 } } == [3])
    }
}

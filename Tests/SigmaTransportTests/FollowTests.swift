import Foundation
import SigmaClient
import SigmaJobs
import SigmaModel
import Synchronization
import Testing

/// Following a job by id (what `sigma submit --follow` does): while the coordinator answers, progress; once it stops
/// answering, `lost` is told each time a WATCH went unanswered, and after the deadline the stream ends naming the job
/// and how to follow it later.
@Suite(.serialized) struct FollowTests {
    @Test func aLostCoordinatorIsReportedNamingTheJob() async throws {
        let cluster = try TestCluster(.tcp, workers: 0)
        defer { cluster.stop() }
        let spec = JobSpec.mapReduce(MapReduceSpec(name: "waits", input: .range(count: 10, start: 0, step: 1), reduce: [.sum]))
        let a = try await cluster.client.submit(spec)
        let losses = Mutex(0)
        var progress = 0
        var ended: Error? = nil
        do {
            for try await e in cluster.client.follow(job: a.job, silence: 0.3, giveUp: 6, lost: { _ in losses.withLock { $0 += 1 } }) {
                if case .progress(let p) = e {
                    progress += 1
                    #expect(p.job == a.job && p.running == 0)
                    if progress == 1 { cluster.coordinator.stop() }   // (no worker: the job waits; then nobody answers)
                }
            }
        } catch {
            ended = error
        }
        #expect(progress >= 1)
        #expect(losses.withLock { $0 } >= 1)
        let text = "\(ended.map { "\($0)" } ?? "no error")"
        #expect(text.contains("job \(a.job)") && text.contains("sigma results \(a.job)"), "\(text)")
    }
}

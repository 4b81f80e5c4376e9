import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaWorkerCore
import Testing

@Suite struct WorkerCoreTests {
    func core() -> WorkerCore {
        WorkerCore(config: .init(hello: Hello(cores: 2, slots: 1, memory: 1, host: "h", name: "n", instance: "i", features: "")))
    }

    @Test func handshakeComputeAndReport() {
        var c = core()
        var a = c.handle(.connected, now: 0)
        #expect(a.count == 1)
        if case .send(.hello) = a[0] {} else { Issue.record("expected HELLO") }
        _ = c.handle(.received(.ready(Ready(workerID: "w7", heartbeatInterval: 500, liveness: 3))), now: 1)
        #expect(c.workerID == "w7")
        let spec = JobSpec.mapReduce(MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum]))
        a = c.handle(.received(.assign(Assign(job: 1, shard: 0, attempt: 1, start: 0, count: 4, spec: spec))), now: 2)
        #expect(a.contains { if case .compute(let t) = $0 { t.job == 1 && t.shard == 0 && t.count == 4 && t.spec == spec } else { false } })
        // Same job without the spec attached: served from the cache.
        a = c.handle(.received(.assign(Assign(job: 1, shard: 1, attempt: 1, start: 4, count: 0))), now: 3)
        #expect(a.contains { if case .compute(let t) = $0 { t.spec == spec } else { false } })
        a = c.handle(.computed(ShardResult(job: 1, shard: 0, attempt: 1, status: .ok)), now: 4)
        #expect(a.contains { if case .send(.result) = $0 { true } else { false } })
        // Unknown job without spec: ask for it.
        a = c.handle(.received(.assign(Assign(job: 9, shard: 0, attempt: 1, start: 0, count: 1))), now: 5)
        #expect(a.contains { if case .send(.result(let r)) = $0 { r.status == .unknownJob } else { false } })
        // Cancelled attempts are not reported.
        _ = c.handle(.received(.cancel(Cancel(job: 1, shard: Cancel.allShards, attempt: 0))), now: 6)
        a = c.handle(.computed(ShardResult(job: 1, shard: 1, attempt: 1, status: .ok)), now: 7)
        #expect(a.isEmpty)
    }

    /// A new registration (a restarted coordinator) drops every cached spec and parameter version: a reused job id
    /// with a lower parameter version is then taken, not ignored as older (issue 19: the livelock that re-sent
    /// parameters forever).
    @Test func aNewRegistrationForgetsCachedSpecsAndParameters() {
        var c = core()
        _ = c.handle(.connected, now: 0)
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 500, liveness: 3))), now: 1)
        let spec = JobSpec.mapReduce(MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum]))
        _ = c.handle(.received(.params(Params(job: 1, version: 40, payload: Frame([1, 2, 3, 4])))), now: 2)
        _ = c.handle(.received(.assign(Assign(job: 1, shard: 0, attempt: 1, start: 0, count: 4, round: 40, withParams: true, spec: spec))), now: 3)
        // The coordinator restarts: job 1 is another job, at version 0.
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 500, liveness: 3))), now: 4)
        var a = c.handle(.received(.assign(Assign(job: 1, shard: 0, attempt: 1, start: 0, count: 4))), now: 5)
        #expect(a.contains { if case .send(.result(let r)) = $0 { r.status == .unknownJob } else { false } }, "the old spec is gone")
        _ = c.handle(.received(.params(Params(job: 1, version: 0, payload: Frame([9, 9, 9, 9])))), now: 6)
        a = c.handle(.received(.assign(Assign(job: 1, shard: 1, attempt: 1, start: 0, count: 4, round: 0, withParams: true, spec: spec))), now: 7)
        #expect(a.contains { if case .compute(let t) = $0 { t.params == Frame([9, 9, 9, 9]) } else { false } }, "version 0 taken: \(a)")
    }

    @Test func heartbeatsWhenIdleAndReconnectsWhenCoordinatorIsSilent() {
        var c = core()
        _ = c.handle(.connected, now: 0)
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 100, liveness: 3))), now: 0)
        var a = c.handle(.tick, now: 100_000_000)
        #expect(a.contains { if case .send(.heartbeat) = $0 { true } else { false } })
        a = c.handle(.tick, now: 301_000_000)
        #expect(a.contains { if case .reconnect = $0 { true } else { false } })
    }

    @Test func refusedVersionIsFatalAndUnknownWorkerReRegisters() {
        var c = core()
        _ = c.handle(.connected, now: 0)
        var a = c.handle(.received(.error(ErrorReply(.versionNotSupported, "protocol version 1 is not supported; this peer speaks version 2"))), now: 1)
        #expect(a.contains { if case .fatal(let m) = $0 { m.contains("version 2") } else { false } })
        c = core()
        _ = c.handle(.connected, now: 0)
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 100, liveness: 3))), now: 0)
        a = c.handle(.received(.error(ErrorReply(.notReady, "HEARTBEAT from an unregistered worker; send HELLO first"))), now: 1)
        #expect(a.contains { if case .send(.hello) = $0 { true } else { false } })
    }

    /// READY's timings are clamped (10 ms…1 h, liveness 1…1,000): the largest the wire carries overflowed a tick.
    @Test func aReadyWithLargeTimingsDoesNotTrapOnTick() async {
        await #expect(processExitsWith: .success) {
            var c = WorkerCore(config: .init(hello: Hello(cores: 2, slots: 1, memory: 1, host: "h", name: "n", instance: "i", features: "")))
            _ = c.handle(.connected, now: 0)
            _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: .max, liveness: .max))), now: 1)
            _ = c.handle(.tick, now: 2)
        }
    }

    /// A result computed for an attempt of an earlier connection is dropped even when the new connection assigned an
    /// attempt of the same numbers (a restarted coordinator numbers its jobs from 1 again); the new attempt's own
    /// result is sent.
    @Test func aResultFromAnEarlierSessionIsNotSentForTheSameNumbers() {
        var c = WorkerCore(config: .init(hello: Hello(cores: 2, slots: 1, memory: 1, host: "h", name: "n", instance: "i", features: "")))
        let spec = JobSpec(kind: "map-reduce", name: "x", body: [1])
        func assign() -> ShardTask? {
            c.handle(.received(.assign(Assign(job: 1, shard: 0, attempt: 1, start: 0, count: 1, spec: spec))), now: 3)
                .compactMap { if case .compute(let t) = $0 { t } else { nil } }.first
        }
        _ = c.handle(.connected, now: 0)
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 1000, liveness: 3))), now: 1)
        let old = assign()
        _ = c.handle(.connected, now: 2)   // (reconnected: a restarted coordinator)
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 1000, liveness: 3))), now: 2)
        let new = assign()
        #expect(old != nil && new != nil && old?.session != new?.session)
        func sent(_ a: [WorkerAction]) -> Bool { a.contains { if case .send(.result) = $0 { true } else { false } } }
        let r = ShardResult(job: 1, shard: 0, attempt: 1, status: .ok)
        #expect(!sent(c.handle(.computed(r, session: old!.session), now: 4)), "the earlier session's result is dropped")
        #expect(sent(c.handle(.computed(r, session: new!.session), now: 5)), "the new attempt's result is sent")
    }

    /// A CANCEL of one attempt names that attempt to the shell, which drops only it: another attempt of the same shard
    /// queued here is still wanted (and still pending in the core).
    @Test func cancellingOneAttemptNamesIt() {
        var c = WorkerCore(config: .init(hello: Hello(cores: 2, slots: 1, memory: 1, host: "h", name: "n", instance: "i", features: "")))
        let spec = JobSpec(kind: "map-reduce", name: "x", body: [1])
        _ = c.handle(.connected, now: 0)
        _ = c.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 1000, liveness: 3))), now: 1)
        _ = c.handle(.received(.assign(Assign(job: 1, shard: 0, attempt: 2, start: 0, count: 1, spec: spec))), now: 2)
        let out = c.handle(.received(.cancel(Cancel(job: 1, shard: 0, attempt: 1))), now: 3)
        #expect(out.contains(.cancel(job: 1, shard: 0, attempt: 1)))
        #expect(c.pending.count == 1, "attempt 2 is still pending")
    }
}

/// What a compute context takes from the jobs a worker heard have ended: only those added since it last looked.
@Suite struct EndedJobsTests {
    @Test func aReaderTakesWhatWasAddedSinceItLooked() {
        var e = EndedJobs(keep: 4)
        #expect(e.since(0).isEmpty && e.total == 0)
        for j in [JobID(7), 8, 9] { e.add(j) }
        #expect(e.since(0) == [7, 8, 9])
        #expect(e.since(1) == [8, 9])
        #expect(e.since(3).isEmpty)
        for j in [JobID(10), 11, 12] { e.add(j) }
        #expect(e.total == 6)
        #expect(e.since(3) == [10, 11, 12])
        // A reader more than `keep` behind gets the last `keep`; what was dropped before is gone for everyone.
        #expect(e.since(0) == [9, 10, 11, 12])
        #expect(e.since(1) == [9, 10, 11, 12])
    }
}

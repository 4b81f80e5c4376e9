@testable import SigmaCoordinatorCore
@testable import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// A one-round job whose shards return one float per row (the row's index): planned by the real `RowOutputs`
/// (infer, eval, embed, predict), four shards per share.
final class RowsDriver: RoundDriver, @unchecked Sendable {
    var rows: RowOutputs
    var result: [Float] = []
    init(items: Int) { rows = RowOutputs(items: items, batch: 1, width: 1, what: "rows") }
    var kind: String { "embed" }
    var round: UInt32 { 0 }
    var params: Frame? { nil }
    var unit: String { "rows" }
    var roundItems: Int { rows.items }
    var progress: RoundProgress { RoundProgress(step: 0, steps: 0, loss: .nan, accuracy: .nan) }
    func plan(shares: [Double]) -> [ShardPlan] { rows.plan(shares: shares) }
    func accept(shard index: Int, payload: Frame) throws { try rows.accept(shard: index, payload: payload) }
    func completeRound() throws -> RoundEnd {
        result = rows.outputs.flatMap { $0 ?? [] }
        var e = RoundEnd()
        e.finished = true
        return e
    }
    /// What a worker returns for an ASSIGN: each row's index.
    static func payload(_ a: Assign) -> Frame {
        var w = ByteWriter()
        let v = (a.start..<(a.start + a.count)).map { Float($0) }
        v.withUnsafeBufferPointer { w.floats($0) }
        return Frame(w.bytes)
    }
}

/// The coordinator's jobs from acceptance to the end and after a restart: nothing traps on a clock that restarted,
/// no job is forgotten while its result is written, an ended job leaves nothing behind (queued shards, per-worker
/// state, a draining worker held).
@Suite struct JobLifecycleTests {
    /// A job of one shard (ten generated values, summed).
    let one = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum], sharding: .count(1))

    /// A journal written before a host reboot holds a job that ran longer than the new boot's monotonic clock:
    /// restoring it must not trap (`now - submittedAt` with submittedAt = now &- elapsed wrapped).
    @Test func restoringAnEndedJobOlderThanTheClockDoesNotTrap() throws {
        var h = Harness()   // now = 1 s after "boot"
        let j = JournaledJob(id: 1, spec: .mapReduce(one), options: [], key: "", owner: Principal.trusted.owner, ownerName: "local")
        let hour: Nanos = 3600 * 1_000_000_000
        h.event(.restore(next: 2, jobs: [RestoredJob(job: j, state: .completed, result: [1, 2, 3], shards: 1, elapsed: hour)]))
        let s = try #require(h.core.status(now: h.now).jobs.first)
        #expect(s.state == .completed && s.elapsed == hour)
        guard case .jobResult(let o)? = h.event(.received(client, .fetch(request: 3, job: 1))).last?.1 else { Issue.record("no JOB-RESULT"); return }
        #expect(o.elapsed == hour)
    }

    /// A job whose stored result is still being written is pushed out of `keepFinishedJobs` by later jobs: this
    /// must not trap (keptResultBytes underflow), and its end must still reach the journal and its submitter.
    @Test func aJobWhoseResultIsBeingWrittenIsNotForgotten() throws {
        var h = Harness.storingResults { $0.keepFinishedJobs = 1 }
        let big = MapReduceSpec(input: .range(count: 4, start: 0, step: 1), reduce: [.sum, .histogram(bins: 4, low: 0, high: 4)], sharding: .count(1))
        var ids: [JobID] = []
        for r in 1...2 {
            h.event(.received(client, .submit(Submit(request: UInt64(r), options: [.pushResult], spec: .mapReduce(big)))))
            let a = try #require(h.takeAssigns(w1).first)
            ids.append(a.job)
            _ = try h.answer(w1, a, spec: big)   // job 2's end pushes job 1 out of the kept jobs
        }
        for id in ids { h.event(.resultStored(job: id, error: nil)) }
        let ended = h.journal.compactMap { e -> JobID? in if case .ended(let id, _, _, _, _, _, _) = e { id } else { nil } }
        #expect(ended.contains(ids[0]), "job \(ids[0])'s end is journaled (else a restart runs it again)")
        #expect(h.outbox.contains { $0.0 == client && { if case .jobResult(let o) = $0 { o.job == ids[0] } else { false } }($0.1) },
                "its submitter gets its JOB-RESULT")
    }

    /// After a restart (no worker registered yet) a job planned by worker count was planned again with one share:
    /// committed shard k of the first plan was not shard k of the second, and its rows landed elsewhere. The first
    /// plan's slots are journaled: the same ranges, the committed shards in place, only the others run again.
    @Test func aResumedRowOutputJobKeepsItsShardsInPlace() throws {
        var config = CoordinatorConfig()
        config.journal = true
        var h = Harness(config)
        h.hello(w1)
        h.hello(w2)
        let submit = Submit(request: 1, options: [], spec: .mapReduce(spec))
        h.event(.inputResolved(client, submit, .success(RowsDriver(items: 5))))
        // Two slots → 8 parts → 5 one-row shards. Shards 1, 2 and 3 are committed before the kill.
        for w in [w1, w2] {
            for a in h.takeAssigns(w) where (1...3).contains(a.shard) {
                h.event(.received(w, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1, payload: RowsDriver.payload(a)))))
            }
        }
        let committed = h.journal.compactMap { e -> (shard: ShardIndex, payload: Frame)? in
            if case .committed(_, let s, let p) = e { (s, p) } else { nil }
        }
        #expect(committed.count == 3)
        // The restarted coordinator.
        var r = Harness(config)
        let again = RowsDriver(items: 5)
        let j = try #require(h.journal.compactMap { e -> JournaledJob? in if case .accepted(let j) = e { j } else { nil } }.first)
        #expect(j.shares == 2, "the first plan's slots are journaled")
        r.event(.restore(next: 2, jobs: [RestoredJob(job: j, state: .running, input: .success(again), committed: committed)]))
        r.hello(w1)
        var rerun = 0
        for _ in 0..<10 {
            for a in r.takeAssigns(w1) {
                rerun += 1
                r.event(.received(w1, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1, payload: RowsDriver.payload(a)))))
            }
        }
        #expect(r.core.job(1)?.state == .completed)
        #expect(again.result == [0, 1, 2, 3, 4], "rows in place (got \(again.result))")
        #expect(rerun == 2, "only the shards not committed run again")
        // A journal of an older Sigma has no plan: its committed shards run again (the result is still right).
        var old = Harness(config)
        let older = RowsDriver(items: 5)
        var unplanned = j
        unplanned.shares = 0
        old.event(.restore(next: 2, jobs: [RestoredJob(job: unplanned, state: .running, input: .success(older), committed: committed)]))
        old.hello(w1)
        for _ in 0..<10 {
            for a in old.takeAssigns(w1) {
                old.event(.received(w1, .result(ShardResult(job: a.job, shard: a.shard, attempt: a.attempt, status: .ok, computeTime: 1, payload: RowsDriver.payload(a)))))
            }
        }
        #expect(older.result == [0, 1, 2, 3, 4])
    }

    /// A draining worker whose last shards belong to a job that is cancelled holds nothing: it is told DISCONNECT
    /// "drained" and leaves (docs/architecture.md, worker states).
    @Test func aDrainingWorkerLeavesWhenItsJobIsCancelled() throws {
        var h = Harness()
        h.hello(w1)
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(one)))))
        let a = try #require(h.takeAssigns(w1).first)
        h.event(.received(w1, .drain(reason: "SIGTERM")))
        let sent = h.event(.received(client, .cancelJob(request: 2, job: a.job)))
        #expect(sent.contains { $0.0 == w1 && $0.1 == .disconnect(reason: "drained") }, "\(sent.map(\.1))")
        #expect(h.core.liveWorkers == 0)
    }

    /// A cancelled job's queued shards must not keep counting against `maxQueuedShards`.
    @Test func aCancelledJobsQueuedShardsDoNotFillTheQueue() throws {
        var config = CoordinatorConfig()
        config.maxQueuedShards = 30
        var h = Harness(config)   // no worker yet
        let twenty = MapReduceSpec(input: .range(count: 100, start: 0, step: 1), reduce: [.sum], sharding: .count(20))
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(twenty)))))
        h.event(.received(client, .cancelJob(request: 2, job: 1)))
        let sent = h.event(.received(client, .submit(Submit(request: 3, options: [], spec: .mapReduce(twenty)))))
        #expect(sent.contains { if case .accept = $0.1 { true } else { false } }, "\(sent.map(\.1))")
        #expect(h.core.status(now: h.now).queuedShards == 20)
    }

    /// Per-worker state for ended jobs (`specSent`, `warmJobs`) goes with them.
    @Test func aWorkersPerJobStateDoesNotGrowWithEndedJobs() throws {
        var h = Harness()
        h.hello(w1)
        for r in 1...50 {
            h.event(.received(client, .submit(Submit(request: UInt64(r), options: [], spec: .mapReduce(one)))))
            for a in h.takeAssigns(w1) { _ = try h.answer(w1, a, spec: one) }
        }
        #expect(h.core.jobs.values.allSatisfy { $0.state == .completed })
        #expect(h.core.table[0].specSent.count <= 1 && h.core.table[0].warmJobs.count <= 1,
                "specSent \(h.core.table[0].specSent.count), warmJobs \(h.core.table[0].warmJobs.count)")
    }

    /// A job that ends normally still tells the workers that got its spec to let go of it (CANCEL of all its
    /// shards): they pin its shipped input files in their cache until then, and kept them for good. Nothing of it
    /// runs any more, so they hear at the next tick — once, and not from a worker that died meanwhile.
    @Test func theWorkersOfAJobThatEndedAreToldToReleaseIt() throws {
        var h = Harness()
        h.hello(w1)
        h.hello(w2)
        let release = { (job: JobID) in Message.cancel(Cancel(job: job, shard: Cancel.allShards, attempt: 0)) }
        h.event(.received(client, .submit(Submit(request: 1, options: [], spec: .mapReduce(one)))))
        let a = try #require(h.takeAssigns(w1).first ?? h.takeAssigns(w2).first)
        let holder = h.outbox.first { if case .assign(let x) = $0.1 { x == a } else { false } }?.0 ?? w1
        let sent = try h.answer(holder, a, spec: one)
        #expect(h.core.job(a.job)?.state == .completed)
        #expect(!sent.contains { $0.1 == release(a.job) }, "\(sent.map(\.1))")
        let tick = h.event(.tick)
        #expect(tick.filter { $0.1 == release(a.job) }.map(\.0) == [holder], "\(tick.map(\.1))")
        #expect(!h.event(.tick).contains { $0.1 == release(a.job) })
        // A worker that dies before the tick is not told.
        h.event(.received(client, .submit(Submit(request: 2, options: [], spec: .mapReduce(one)))))
        let b = try #require(h.takeAssigns(w1).first ?? h.takeAssigns(w2).first)
        let second = h.outbox.last { if case .assign(let x) = $0.1 { x == b } else { false } }?.0 ?? w1
        _ = try h.answer(second, b, spec: one)
        h.event(.received(second, .disconnect(reason: "going")))
        #expect(!h.event(.tick).contains { $0.0 == second && $0.1 == release(b.job) })
    }
}

import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

// Jobs: admission, rounds, results, the end of a job.

extension CoordinatorCore {
    /// Admits a job: a new one (its id the next free one), or one the journal restores (`restoring`: its own id,
    /// no capacity check, no ACCEPT — its client follows it again by id).
    mutating func accept(_ peer: PeerID, _ s: Submit, _ who: Principal, driver: any RoundDriver, now: Nanos, into out: inout [CoordinatorAction],
                         restoring: JournaledJob? = nil) {
        // (restored: the slots of the first plan, so the shards' ranges — and the committed payloads — are the same)
        let shares = restoring.flatMap { $0.shares > 0 && !driver.sharesPerWorker ? [Double](repeating: 1, count: $0.shares) : nil } ?? firstShares(driver)
        let ranges = driver.plan(shares: shares).map { ($0.start, $0.count) }
        let detail = driver.planSummary ?? "\(ranges.count) shards"
        guard restoring != nil || (activeJobs < config.maxActiveJobs && queue.count + ranges.count <= config.maxQueuedShards) else {
            out.append(.send(peer, .error(ErrorReply(.unavailable, request: s.request,
                "coordinator is full (\(activeJobs) active jobs, \(queue.count) shards queued); retry later"))))
            return
        }
        let id = restoring?.id ?? nextJob
        nextJob = max(nextJob, id + 1)
        activeJobs += 1
        let job = JobEntry(id: id, spec: s.spec, driver: driver, ranges: ranges, submitter: peer, request: s.request, options: s.options, submittedAt: now)
        job.kindSlot = kindSlots.of(s.spec.kind)
        job.key = s.key
        job.owner = restoring?.owner ?? who.owner
        job.ownerName = restoring?.ownerName ?? who.name
        if !s.key.isEmpty { keyed[Self.scoped(s.key, owner: job.owner)] = id }
        job.policyName = policy(of: job).rawValue
        if s.options.contains(.watch) { addWatcher(job, peer, request: s.request) }
        jobs[id] = job
        for i in 0..<ranges.count { queue.append(ShardRef(job: id, shard: ShardIndex(i))) }
        if config.journal, restoring == nil {
            out.append(.journal(.accepted(JournaledJob(id: id, spec: s.spec, options: s.options, key: s.key, owner: job.owner, ownerName: job.ownerName,
                                                       shares: shares.count))))
        }
        if restoring != nil {
        } else if s.options.contains(.deferAccept) {
            job.acceptPending = true
        } else {
            out.append(.send(peer, .accept(Accept(request: s.request, job: id, shards: UInt32(ranges.count)))))
        }
        out.append(.log(.info, "job \(id) '\(s.spec.name)' (\(s.spec.kind)) accepted: \(detail)", job: id))
        if ranges.isEmpty { completeRound(job, driver, now: now, into: &out) }
    }

    /// A round of an ML job is complete: reduce it, then start the next round or finish the job.
    mutating func completeRound(_ job: JobEntry, _ d: any RoundDriver, now: Nanos, into out: inout [CoordinatorAction]) {
        let end: RoundEnd
        do { end = try d.completeRound() } catch {
            finish(job.id, state: .failed, error: "job \(job.id): \(error)", now: now, into: &out)
            return
        }
        if end.reduceNanos > 0, reduceSamples.count < CoordinatorCore.maxSamples {
            reduceSamples.append(end.reduceNanos)
            optimizerSamples.append(end.optimizerNanos)
        }
        for f in end.files { out.append(.writeFile(f)) }
        for line in end.log { out.append(.log(.info, "job \(job.id): \(line)", job: job.id)) }
        if end.finished {
            job.result = end.results
            finish(job.id, state: .completed, error: "", now: now, into: &out)
            return
        }
        planRound(job, d, now: now, into: &out)
    }

    /// Plans the driver's current round over the workers and queues its shards.
    mutating func planRound(_ job: JobEntry, _ d: any RoundDriver, now: Nanos, into out: inout [CoordinatorAction]) {
        var shares = roundShares(job, items: d.roundItems, bytes: d.params?.count ?? 0, now: now)
        if d.sharesPerWorker { shares = collectiveShares(job, d, shares, into: &out) }
        let planned = d.plan(shares: shares.map(\.weight))
        let refs = job.startRound(planned.map { ($0.start, $0.count) }, now: now)
        for (g, p) in zip(refs, planned) {
            job.shards[g - job.base].preferred = p.share.flatMap { $0 < shares.count ? shares[$0].worker : nil }
            queue.append(ShardRef(job: job.id, shard: ShardIndex(g)))
        }
        sendProgress(job.id, now: now, force: false, into: &out)
        if refs.isEmpty { completeRound(job, d, now: now, into: &out) }
    }

    mutating func result(_ peer: PeerID, _ r: ShardResult, now: Nanos, into out: inout [CoordinatorAction]) {
        let key = AttemptKey(job: r.job, shard: r.shard, attempt: r.attempt)
        let k = index[peer]!
        let wasInFlight = table[k].inFlight.removeValue(forKey: key)
        table[k].bytesIn += UInt64(r.payload.count + 32)
        totals.bytesIn += UInt64(r.payload.count + 32)
        defer { finishDrain(k, now: now, into: &out) }
        guard let job = jobs[r.job], !job.state.isFinal else {
            strayResults += 1
            return
        }
        if Int(r.shard) < job.base {
            job.duplicates += 1   // a late answer from an earlier round
            if let f = wasInFlight { job.endAttempt(f.record, .late, now: now, compute: r.computeTime) }
            return
        }
        guard let i = job.local(r.shard), r.attempt >= 1, r.attempt <= job.shards[i].attempts else {
            out.append(.send(peer, .error(ErrorReply(.badRequest, "RESULT for job \(r.job) shard \(r.shard) attempt \(r.attempt) that was never assigned"))))
            strayResults += 1
            return
        }
        if let f = wasInFlight, r.status == .ok {
            table[k].observeShard(f, job: job.id, kind: job.kindSlot, items: job.ranges[i].count, compute: r.computeTime,
                                  resultBytes: r.payload.count, now: now)
        }
        let record = wasInFlight?.record ?? -1
        if job.shards[i].state == .done {
            job.shards[i].holders.removeAll { $0 == peer }
            job.endAttempt(record, .late, now: now, compute: r.computeTime)
            job.duplicates += 1
            jobs[r.job] = job
            return
        }
        // Only the worker holding that attempt may answer for it: a result for an attempt this worker was never given,
        // or no longer holds (it answered already), commits nothing and fails nothing.
        guard wasInFlight != nil else {
            strayResults += 1
            out.append(.log(.warning, "job \(r.job) shard \(r.shard) attempt \(r.attempt): ignored a \(r.status) result from worker \(table[k].id) (\(table[k].hello.name)), which does not hold that attempt", job: r.job))
            return
        }
        job.shards[i].holders.removeAll { $0 == peer }
        let w = table[k]
        var fatal: String? = nil
        switch r.status {
        case .ok:
            do {
                if let d = job.driver {
                    try d.accept(shard: i, payload: r.payload)
                    job.commit(shard: i)
                    if config.journal, d.resumesFromShards { out.append(.journal(.committed(job: job.id, shard: r.shard, payload: r.payload))) }
                }
                table[k].shardsDone += 1
                totals.shardsDone += 1
                if let f = wasInFlight, shardSamples.count < CoordinatorCore.maxSamples { shardSamples.append(now &- f.sentAt) }
                job.endAttempt(record, .ok, now: now, compute: r.computeTime)
                if job.shards[i].hedged && r.attempt == job.shards[i].attempts { job.hedgesWon += 1 }
                cancelOthers(job, i, except: peer, now: now, into: &out)
            } catch {
                out.append(.log(.warning, "job \(r.job) shard \(r.shard): bad partial from worker \(w.id) (\(w.hello.host)): \(error)", job: r.job))
                collectiveFailed(job, w, "malformed result: \(error)", into: &out)
                job.endAttempt(record, .failed, now: now, compute: r.computeTime, error: "malformed result: \(error)")
                fatal = job.requeueOrFail(shard: i, worker: w, error: "malformed result: \(error)", config: config, now: now, queue: &queue, into: &out)
            }
        case .failed:
            totals.shardsFailed += 1
            collectiveFailed(job, w, r.error, into: &out)
            job.endAttempt(record, .failed, now: now, compute: r.computeTime, error: r.error)
            fatal = job.requeueOrFail(shard: i, worker: w, error: r.error, config: config, now: now, queue: &queue, into: &out)
        case .tooLarge:
            // Running it again would make the same result: the job fails now, naming the shard and its size.
            totals.shardsFailed += 1
            job.endAttempt(record, .failed, now: now, compute: r.computeTime, error: r.error)
            fatal = "job \(job.id) shard \(r.shard) (rows \(job.ranges[i].start)..<\(job.ranges[i].start + job.ranges[i].count)) on worker \(w.id) (\(w.hello.host)): \(r.error)"
        case .unknownJob:
            // The worker no longer has the spec: send it again with the retry.
            job.endAttempt(record, .failed, now: now, error: "the worker no longer had the job's spec; sent again")
            table[k].specSent.remove(r.job)
            table[k].paramsSent[r.job] = nil
            job.requeue(i, rerun: false, now: now, queue: &queue)
        case .declined:
            // A draining worker did not start it: run it elsewhere (not a failure).
            job.endAttempt(record, .declined, now: now, error: r.error)
            job.requeue(i, rerun: false, now: now, queue: &queue)
        }
        jobs[r.job] = job
        if let error = fatal {
            finish(r.job, state: .failed, error: error, now: now, into: &out)
        } else if job.done == job.shards.count {
            if let d = job.driver { completeRound(job, d, now: now, into: &out) }
        } else {
            sendProgress(r.job, now: now, force: false, into: &out)
        }
    }

    /// Ends a job (`journaled`: its end is in the journal already — a job restored as ended).
    mutating func finish(_ id: JobID, state: JobState, error: String, now: Nanos, into out: inout [CoordinatorAction], journaled: Bool = false) {
        guard let job = jobs[id], !job.state.isFinal else { return }
        activeJobs -= 1
        job.acceptPending = false   // JOB-RESULT (or the job's status) now says it was accepted
        finishedOrder.append(id)
        // (a job whose stored result is still being written has not been announced yet: it stays until it is)
        while finishedOrder.count > config.keepFinishedJobs, let first = finishedOrder.first, jobs[first]?.resultPending != true {
            let old = finishedOrder.removeFirst()
            if let j = jobs[old], !j.key.isEmpty { keyed[Self.scoped(j.key, owner: j.owner)] = nil }
            rerunsOfForgottenJobs += UInt64(jobs[old]?.reruns ?? 0)
            keptResultBytes -= jobs[old]?.resultSize ?? 0
            if jobs[old]?.resultStored == true { out.append(.discardResult(job: old)) }
            jobs[old] = nil
        }
        job.state = state
        job.error = error
        job.endedAt = now
        switch state {
        case .completed: totals.jobsCompleted += 1
        case .failed: totals.jobsFailed += 1
        case .cancelled: totals.jobsCancelled += 1
        default: break
        }
        job.releaseDriver()   // (its data, model and parameter payload: megabytes to gigabytes per job)
        if let limit = config.storeResultsOver, !journaled, UInt64(job.result.count) > limit {
            // (its end is announced once the shell has the result on disk: `.resultStored`)
            let size = job.resultSize
            out.append(.storeResult(job: id, bytes: job.result))
            job.result = []
            job.resultSize = size
            job.resultStored = true
            job.resultPending = true
        }
        // Stop whatever still runs for this job; workers that hold its parameters are told too, so they free
        // the job's state (model, gradients, data) rather than when a later job pushes it out.
        var emptied: [Int] = [], releases: [CoordinatorAction] = []
        // (and every worker that got the job's spec: it releases what it holds of the job — shipped input files pinned
        // in its cache, per-job maps — which a job that ended normally never freed)
        for k in table.indices where table[k].isLive {
            let running = table[k].inFlight.keys.contains(where: { $0.job == id })
            guard running || table[k].paramsSent[id] != nil || table[k].specSent.contains(id) else { continue }
            // (at once where something may still run; a completed job's state at the next tick)
            if running || state != .completed {
                releases.append(.send(table[k].peer, .cancel(Cancel(job: id, shard: Cancel.allShards, attempt: 0))))
            } else {
                table[k].releases.append(id)
            }
            for (key, f) in table[k].inFlight where key.job == id { job.endAttempt(f.record, .cancelled, now: now, error: "job \(state)") }
            table[k].inFlight = table[k].inFlight.filter { $0.key.job != id }
            if table[k].inFlight.isEmpty { table[k].busyUntil = now; emptied.append(k) }
        }
        queue.removeAll { $0.job == id }
        for k in table.indices {
            // (what workers hold of an ended job goes with it: these sets grew by one job id per job ever run)
            table[k].paramsSent[id] = nil
            table[k].specSent.remove(id)
            table[k].warmJobs.remove(id)
        }
        job.running = 0   // (nothing of an ended job runs: `sigma jobs` no longer shows a cancelled job's shards running)
        jobs[id] = job
        let seconds = Double(now &- job.submittedAt) / 1e9
        if !journaled {
            out.append(.log(state == .completed ? .info : .error,
                            "job \(id) \(state) in \(Self.threeDecimals(seconds)) s" + (error.isEmpty ? "" : ": \(error)"), job: id))
        }
        if !job.resultPending { announce(job, now: now, into: &out, journaled: journaled) }
        // (the workers hear after whoever waits for the result: a small job's round trip ends with that reply)
        out.append(contentsOf: releases)
        for k in emptied { finishDrain(k, now: now, into: &out) }
    }

    /// `x` with three decimals, as `String(format: "%.3f")` writes it, without Foundation's formatter (whose ~10 µs
    /// a job's end paid on the dispatch path, log level or not).
    static func threeDecimals(_ x: Double) -> String {
        guard x.isFinite, x >= 0, x < 1e12 else { return "\(x)" }
        let thousandths = UInt64((x * 1000).rounded())
        let fraction = String(thousandths % 1000)
        return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// A job's end, told: to the journal, its followers (final PROGRESS) and whoever waits for its result
    /// (JOB-RESULT) — at once, or for a stored result once it is on disk.
    mutating func announce(_ job: JobEntry, now: Nanos, into out: inout [CoordinatorAction], journaled: Bool = false) {
        if config.journal, !journaled {
            out.append(.journal(.ended(job: job.id, state: job.state, error: job.error, result: job.result, resultSize: job.resultSize,
                                       shards: UInt32(job.shardCount), elapsed: (job.endedAt ?? now) &- job.submittedAt)))
        }
        sendProgress(job.id, now: now, force: true, into: &out)
        releaseWatches(job)
        job.watchers.removeAll()
        if job.options.contains(.pushResult) {
            out.append(.send(job.submitter, .jobResult(job.outcome(request: job.request))))
        }
        for (p, req) in job.extraResultTo { out.append(.send(p, .jobResult(job.outcome(request: req)))) }
        job.extraResultTo = []
        keepResults(within: config.keepResultBytes, adding: job, into: &out)
    }

    /// The shell has written a stored result (or could not: `error`): the job's end is told now.
    mutating func resultStored(_ id: JobID, error: String?, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let job = jobs[id], job.resultPending else { return }
        job.resultPending = false
        if let error {
            out.append(.log(.error, "job \(id): its result could not be kept: \(error)", job: id))
            job.result = []
            job.resultStored = false
            job.resultDropped = true
            job.resultLost = error
        }
        announce(job, now: now, into: &out)
    }

    /// A job's PROGRESS, with the live workers that could run it.
    func progress(_ job: JobEntry, request: UInt64) -> JobProgress {
        var p = job.progress(request: request)
        p.workers = UInt32(liveCount)
        return p
    }

    mutating func sendProgress(_ id: JobID, now: Nanos, force: Bool, into out: inout [CoordinatorAction]) {
        guard let job = jobs[id], !job.watchers.isEmpty else { return }
        for k in job.watchers.indices where force || now &- job.watchers[k].lastSent >= config.progressInterval {
            job.watchers[k].lastSent = now
            out.append(.send(job.watchers[k].peer, .progress(progress(job, request: job.watchers[k].request))))
        }
        jobs[id] = job
    }

    /// Other attempts of a committed shard are cancelled on their workers.
    mutating func cancelOthers(_ job: JobEntry, _ i: Int, except winner: PeerID, now: Nanos, into out: inout [CoordinatorAction]) {
        for p in job.shards[i].holders where p != winner {
            guard let k = index[p] else { continue }
            let keys = table[k].inFlight.keys.filter { $0.job == job.id && $0.shard == ShardIndex(job.base + i) }
            for key in keys {
                if let f = table[k].inFlight[key] { job.endAttempt(f.record, .cancelled, now: now, error: "another attempt finished first") }
                table[k].inFlight[key] = nil
                out.append(.send(p, .cancel(Cancel(job: job.id, shard: key.shard, attempt: key.attempt))))
            }
            if table[k].inFlight.isEmpty { table[k].busyUntil = now }
            finishDrain(k, now: now, into: &out)
        }
        job.shards[i].holders.removeAll()
    }

    /// Counts `job`'s result among the kept ones; past `budget`, the oldest finished jobs' results go (their jobs stay
    /// listed), `job`'s last — it was sent to whoever waited for it already.
    mutating func keepResults(within budget: UInt64, adding job: JobEntry, into out: inout [CoordinatorAction]) {
        keptResultBytes += job.resultSize
        var i = finishedOrder.startIndex
        while keptResultBytes > budget, i < finishedOrder.endIndex {
            let id = finishedOrder[i]
            i += 1
            guard id != job.id, let old = jobs[id], old.resultSize > 0, !old.resultPending else { continue }
            dropResult(old, into: &out)
        }
        if keptResultBytes > budget, job.resultSize > 0 { dropResult(job, into: &out) }
    }

    mutating func dropResult(_ job: JobEntry, into out: inout [CoordinatorAction]) {
        keptResultBytes -= job.resultSize
        if job.resultStored { out.append(.discardResult(job: job.id)) }
        job.result = []
        job.resultStored = false
        job.resultDropped = true
        if config.journal { out.append(.journal(.resultDropped(job: job.id))) }
    }
}

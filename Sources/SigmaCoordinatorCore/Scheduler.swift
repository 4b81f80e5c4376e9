import SigmaJobCore
import SigmaModel
import SigmaProtocol

/// Job kinds as small integers, in the order the coordinator first sees them (throughput is modelled per kind;
/// kinds past the first `count - 1` share the last slot).
struct JobKindIndex {
    static let count = 8
    var slots: [String: Int] = [:]
    mutating func of(_ kind: String) -> Int {
        if let k = slots[kind] { return k }
        let k = min(slots.count, Self.count - 1)
        slots[kind] = k
        return k
    }
}

/// The cost model: when would `items` items (with `bytes` to send) finish on worker `w` if sent `now`?
/// Expected finish = max(now + RTT/2 + bytes/bandwidth, when its slots free up) + items/throughput + RTT/2.
struct CostModel {
    /// Throughput assumed for workers not yet measured on a kind: the mean of those measured, else 1 item/µs.
    var fallbackRate: [Double]
    let now: Nanos
    let ttl: Nanos

    init(_ table: [WorkerEntry], now: Nanos, ttl: Nanos) {
        self.now = now
        self.ttl = ttl
        var sum = [Double](repeating: 0, count: JobKindIndex.count), n = sum
        table.withUnsafeBufferPointer { ws in
            for i in ws.indices where ws[i].state != .dead {
                for k in 0..<JobKindIndex.count where ws[i].rates[k] > 0 && now &- ws[i].ratedAt[k] <= ttl {
                    sum[k] += ws[i].rates[k]
                    n[k] += 1
                }
            }
        }
        fallbackRate = (0..<JobKindIndex.count).map { n[$0] > 0 ? sum[$0] / n[$0] : 1e6 }
    }

    // (Workers are passed `borrowing`: copying a WorkerEntry per candidate dominated placement at 1,000 workers.)
    func rate(_ w: borrowing WorkerEntry, kind: Int) -> Double { w.rate(kind, now: now, ttl: ttl) ?? fallbackRate[kind] }
    func measured(_ w: borrowing WorkerEntry, kind: Int) -> Bool { w.rate(kind, now: now, ttl: ttl) != nil }

    /// Expected compute, ns.
    func compute(_ w: borrowing WorkerEntry, kind: Int, items: UInt64) -> Double { Double(items) / rate(w, kind: kind) * 1e9 }

    /// Transfer time of `bytes`, ns (0 when the link is not yet measured: loopback-like).
    func transfer(_ w: borrowing WorkerEntry, bytes: Int) -> Double { w.bandwidth > 0 ? Double(bytes) / w.bandwidth * 1e9 : 0 }

    func finish(_ w: borrowing WorkerEntry, kind: Int, items: UInt64, bytes: Int, now: Nanos) -> Double {
        Self.finish(rtt: w.rtt, bandwidth: w.bandwidth, busyUntil: w.busyUntil, rate: rate(w, kind: kind), items: items, bytes: bytes, now: now)
    }

    /// The formula above from plain fields; `rate` in items/s.
    static func finish(rtt: Double, bandwidth: Double, busyUntil: Nanos, rate: Double, items: UInt64, bytes: Int, now: Nanos) -> Double {
        let arrive = Double(now) + rtt / 2 + (bandwidth > 0 ? Double(bytes) / bandwidth * 1e9 : 0)
        return Swift.max(arrive, Double(busyUntil)) + Double(items) / rate * 1e9 + rtt / 2
    }
}

/// `t + d` nanoseconds, clamped (estimates from absurd shard sizes must not trap).
func saturatingAdd(_ t: Nanos, _ d: Double) -> Nanos {
    guard d.isFinite, d > 0 else { return t }
    let cap = Double(Nanos.max / 2)
    let r = Double(t) + d
    return r >= cap ? Nanos.max / 2 : Nanos(r)
}

extension CoordinatorCore {
    /// The policy a job runs under.
    func policy(of job: JobEntry) -> SchedulingPolicy {
        SchedulingPolicy(code: job.options.policyCode) ?? config.policy
    }

    // MARK: training steps: how to split a round

    /// Relative sizes of the shards of a new round, and the worker each is for. Latency-aware: one share per live
    /// worker slot, sized so every shard is expected to finish at the same time (T = offset_i + c_i / rate_i);
    /// other policies: equal shares, placed by dispatch.
    ///
    /// A training step gets one share per worker, not per slot: the worker runs it on all its compute lanes (its
    /// micro-batches in parallel, docs/architecture.md "Cores") and returns one partial sum for its whole host, so
    /// the coordinator reduces one gradient per worker instead of one per core. Its rate is the whole worker's once
    /// measured (a shard's items over its compute time), the per-slot guess times its slots before.
    func roundShares(_ job: JobEntry, items: Int, bytes: Int, now: Nanos) -> [(weight: Double, worker: PeerID?)] {
        let live = table.filter(\.accepts)
        guard !live.isEmpty else { return [(1, nil)] }
        let perWorker = job.driver?.sharesPerWorker ?? false
        guard policy(of: job) == .latencyAware else {
            return perWorker ? live.map { (Double($0.slots), nil) } : Array(repeating: (1, nil), count: live.reduce(0) { $0 + $1.slots })
        }
        let kind = job.kindSlot, model = CostModel(table, now: now, ttl: config.rateTTL)
        // One entry per slot (per worker for a training step): (offset ns, rate items/ns, worker).
        var slots: [(offset: Double, rate: Double, peer: PeerID)] = []
        for w in live {
            let wait = Swift.max(0, Double(w.busyUntil) - Double(now))
            let offset = wait + w.rtt + 2 * model.transfer(w, bytes: bytes)   // parameters out, gradients back
            if perWorker {
                let whole = model.measured(w, kind: kind) ? model.rate(w, kind: kind) : model.rate(w, kind: kind) * Double(w.slots)
                slots.append((offset, whole / 1e9, w.peer))
            } else {
                for _ in 0..<w.slots { slots.append((offset, model.rate(w, kind: kind) / 1e9, w.peer)) }
            }
        }
        // Equal finish time T over the slots that get work; a slot whose offset alone exceeds T gets none.
        slots.sort { $0.offset < $1.offset }
        var used = slots.count
        while used > 1 {
            let head = slots[0..<used]
            let t = (Double(items) + head.reduce(0) { $0 + $1.rate * $1.offset }) / head.reduce(0) { $0 + $1.rate }
            if slots[used - 1].offset < t { break }
            used -= 1
        }
        let head = slots[0..<used]
        let t = (Double(items) + head.reduce(0) { $0 + $1.rate * $1.offset }) / head.reduce(0) { $0 + $1.rate }
        return head.map { (Swift.max(0, $0.rate * (t - $0.offset)), $0.peer) }
    }

    /// Whether a round of this job is split one share per worker (training steps) rather than one per slot.

    /// The first round's shares, before anything is measured: per worker (weighted by its slots) for a training
    /// step, else one per slot.
    func firstShares(_ driver: any RoundDriver) -> [Double] {
        let live = table.filter(\.accepts)
        guard !live.isEmpty else { return [1] }
        return driver.sharesPerWorker ? live.map { Double($0.slots) } : Array(repeating: 1, count: live.reduce(0) { $0 + $1.slots })
    }

    // MARK: placement

    /// Places queued shards on workers, in queue order, under each job's policy. A shard whose best worker has no
    /// room waits (later shards wait behind it), so a slow worker is not handed work a fast one would finish sooner.
    mutating func dispatch(now: Nanos, into out: inout [CoordinatorAction]) {
        let live = liveCount
        guard !queue.isEmpty, live > 0 else { return }
        var model: CostModel? = nil
        while let ref = queue.first {
            guard let job = jobs[ref.job], !job.state.isFinal, let i = job.local(ref.shard), job.shards[i].state == .pending else {
                queue.removeFirst()
                continue
            }
            let policy = policy(of: job)
            let kind = job.kindSlot
            let items = job.ranges[i].count
            let bytes = job.driver?.params.map(\.count) ?? 0
            var chosen: Int? = nil
            if let p = job.shards[i].preferred, let k = index[p], job.collective != nil ? table[k].state == .ready : table[k].accepts {
                if table[k].inFlight.count < table[k].window(config, adaptive: true) { chosen = k } else { break }
            } else if job.collective != nil {
                // (a collective step's shard runs on its member only; without it the step starts again)
                queue.removeFirst()
                if job.collectiveBroken == nil { job.collectiveBroken = "its worker for \(job.describe(i)) is gone" }
                continue
            } else {
                switch policy {
                case .roundRobin:
                    // Strict turns among the workers taking shards; wait for the one whose turn it is.
                    let n = table.count
                    var k = roundRobin % n, tries = 0
                    while !table[k].accepts && tries < n { k = (k + 1) % n; tries += 1 }
                    guard table[k].accepts, table[k].inFlight.count < table[k].window(config, adaptive: false) else { break }
                    chosen = k
                    roundRobin = (k + 1) % n
                case .leastLoaded:
                    var best = -1.0
                    let n = table.count
                    for j in 0..<n {
                        let k = (roundRobin + j) % n
                        guard table[k].accepts else { continue }
                        let window = table[k].window(config, adaptive: false)
                        let free = Double(window - table[k].inFlight.count) / Double(window)
                        if free > best && free > 0 { best = free; chosen = k }
                    }
                    roundRobin = (roundRobin + 1) % Swift.max(1, n)
                case .latencyAware:
                    if model == nil { model = CostModel(table, now: now, ttl: config.rateTTL) }
                    // The earliest expected finish among workers with room (windows are sized to keep each busy
                    // across its round trip). In the tail, if the overall best is full, wait for it when it would
                    // still finish clearly sooner (by more than one of its shards plus a round trip).
                    var best = Double.infinity, bestRoom = Double.infinity, full: Int? = nil
                    let m = model!, c = config, round = job.driver?.round, hasParams = bytes > 0
                    // (fields read through the buffer: copying a WorkerEntry per candidate dominated at 1,000 workers)
                    table.withUnsafeBufferPointer { ws in
                        for k in ws.indices where ws[k].state == .ready && !ws[k].suspect && !ws[k].lowMemory {
                            let send = hasParams && ws[k].paramsSent[job.id] != round ? bytes : 0
                            let r = ws[k].rates[kind] > 0 && now &- ws[k].ratedAt[kind] <= m.ttl ? ws[k].rates[kind] : m.fallbackRate[kind]
                            let f = CostModel.finish(rtt: ws[k].rtt, bandwidth: ws[k].bandwidth, busyUntil: ws[k].busyUntil,
                                                     rate: r, items: items, bytes: send, now: now)
                            let room = ws[k].inFlight.count < WorkerEntry.window(slots: Int(ws[k].hello.slots), rtt: ws[k].rtt,
                                                                                 shardTime: ws[k].shardTime, c)
                            if f < best { best = f; full = room ? nil : k }
                            if room && f < bestRoom { bestRoom = f; chosen = k }
                        }
                    }
                    // (Only in the tail: while plenty is queued, every worker with room gets work.)
                    if let k = full, chosen != nil, job.pending <= live,
                       bestRoom > best + model!.compute(table[k], kind: kind, items: items) + table[k].rtt {
                        chosen = nil
                    }
                }
            }
            guard let k = chosen else { break }
            if model == nil { model = CostModel(table, now: now, ttl: config.rateTTL) }
            queue.removeFirst()
            assign(job, i, to: k, kind: kind, model: model!, now: now, into: &out)
        }
    }

    func needsParams(_ k: Int, _ job: JobEntry) -> Bool {
        guard let d = job.driver, d.params != nil else { return false }
        return table[k].paramsSent[job.id] != d.round
    }

    /// Sends attempt `attempts + 1` of shard `i` to worker `k` (with the spec and parameters it lacks).
    mutating func assign(_ job: JobEntry, _ i: Int, to k: Int, kind: Int, model: CostModel, now: Nanos, into out: inout [CoordinatorAction]) {
        let peer = table[k].peer
        let shard = ShardIndex(job.base + i)
        job.shards[i].attempts += 1
        if job.shards[i].state != .running {
            job.shards[i].state = .running
            job.running += 1
        }
        job.shards[i].holders.append(peer)
        if job.state == .queued {
            job.state = .running
            job.startedAt = now
        }
        let attempt = job.shards[i].attempts
        let needsSpec = !table[k].specSent.contains(job.id)
        if needsSpec { table[k].specSent.insert(job.id) }
        let round = job.driver?.round ?? 0
        var bytes = 64
        let collective = collectiveStep(job, i)
        if table[k].paramsSent[job.id] != round, let params = params(job, shard: i) {
            table[k].paramsSent[job.id] = round
            bytes += params.count
            out.append(.send(peer, .params(Params(job: job.id, version: round, payload: params))))
        }
        let items = job.ranges[i].count
        let compute = model.compute(table[k], kind: kind, items: items)
        let arrive = saturatingAdd(now, table[k].rtt / 2 + model.transfer(table[k], bytes: bytes))
        table[k].busyUntil = saturatingAdd(Swift.max(table[k].busyUntil, arrive), compute / Double(table[k].slots))
        job.shards[i].sentAt = now
        // (unknown until this worker's throughput on the kind is measured: no hedging against a guess)
        job.shards[i].expected = model.measured(table[k], kind: kind) ? table[k].rtt + model.transfer(table[k], bytes: bytes) + compute : 0
        let record = job.recordAttempt(i, attempt: attempt, worker: table[k], hedge: job.shards[i].holders.count > 1, now: now)
        table[k].inFlight[AttemptKey(job: job.id, shard: shard, attempt: attempt)] =
            WorkerEntry.InFlight(sentAt: now, compute: compute, bytes: bytes, ahead: table[k].inFlight.count, record: record)
        table[k].lastSent = now
        table[k].bytesOut += UInt64(bytes)
        totals.bytesOut += UInt64(bytes)
        decisions += 1
        out.append(.send(peer, .assign(Assign(job: job.id, shard: shard, attempt: attempt, start: job.ranges[i].start,
                                              count: items, round: round, withParams: job.driver?.params != nil,
                                              spec: needsSpec ? job.spec : nil, collective: collective))))
    }

    // MARK: hedging

    /// Near the end of a job or step (nothing of it queued), a shard running well past its expected time gets a
    /// backup attempt on an idle worker expected to finish it sooner; the first result wins.
    mutating func hedge(now: Nanos, into out: inout [CoordinatorAction]) {
        guard config.hedging, idleCount(now: now) > 0 else { return }
        var model: CostModel? = nil
        for id in jobs.keys.sorted() {
            guard let job = jobs[id], job.state == .running, policy(of: job) == .latencyAware, job.pending == 0, job.running > 0,
                  job.collective == nil else { continue }
            let kind = job.kindSlot
            for i in job.shards.indices where job.shards[i].state == .running && !job.shards[i].hedged && job.shards[i].holders.count == 1 {
                let s = job.shards[i]
                guard s.expected > 0 else { continue }
                let late = Double(now &- s.sentAt)
                guard late > Swift.max(config.hedgeFactor * s.expected, s.expected + Double(config.hedgeDelay)) else { continue }
                if model == nil { model = CostModel(table, now: now, ttl: config.rateTTL) }
                // The idle worker expected to finish it first; only if that beats what is left of the original,
                // taken as at least as long again as it has already run.
                var best: Int? = nil, bestFinish = Double(now) + late
                for k in table.indices where table[k].accepts && table[k].inFlight.isEmpty && table[k].peer != s.holders[0] {
                    let bytes = job.driver?.params.map(\.count) ?? 0
                    let f = model!.finish(table[k], kind: kind, items: job.ranges[i].count, bytes: needsParams(k, job) ? bytes : 0, now: now)
                    if f < bestFinish { bestFinish = f; best = k }
                }
                guard let k = best else { continue }
                job.shards[i].hedged = true
                job.hedges += 1
                hedgesStarted += 1
                let original = table[index[s.holders[0]]!].label
                out.append(.log(.info, "job \(id): \(job.describe(i)) on \(original) running \(Int(late / 1e6)) ms (expected \(Int(s.expected / 1e6)) ms): hedging on \(table[k].label)", job: id))
                assign(job, i, to: k, kind: kind, model: model!, now: now, into: &out)
                if idleCount(now: now) == 0 { return }
            }
        }
    }

    func idleCount(now: Nanos) -> Int {
        table.withUnsafeBufferPointer { ws in
            var n = 0
            for i in ws.indices where ws[i].state == .ready && !ws[i].suspect && !ws[i].lowMemory && ws[i].inFlight.isEmpty { n += 1 }
            return n
        }
    }

    // MARK: step timeouts

    /// Fails jobs whose current step (the whole job, for single-round jobs) has run longer than the step timeout,
    /// naming the shards still missing and where they are.
    mutating func checkTimeouts(now: Nanos, into out: inout [CoordinatorAction]) {
        guard config.stepTimeout > 0 else { return }
        for id in jobs.keys.sorted() {
            guard let job = jobs[id], !job.state.isFinal, now &- job.roundStartedAt > config.stepTimeout else { continue }
            var missing: [String] = []
            for i in job.shards.indices where job.shards[i].state != .done {
                let s = job.shards[i]
                let holders = s.holders.compactMap { index[$0].map { table[$0].label } }
                let where_ = holders.isEmpty ? "queued, no worker took it" : "running on " + holders.joined(separator: " and ")
                missing.append("shard \(job.base + i) (\(job.unit) \(job.ranges[i].start)..<\(job.ranges[i].start + job.ranges[i].count)): \(where_)")
                if missing.count == 10 { break }
            }
            let left = job.shards.count - job.done
            let more = left > missing.count ? "; and \(left - missing.count) more" : ""
            let step = job.driver.map { $0.sharesPerWorker ? "step \($0.round + 1)" : "reduce" } ?? "reduce"
            finish(id, state: .failed, error: "job \(id): \(step) timed out after \(config.stepTimeout / 1_000_000_000) s with \(left) of \(job.shards.count) shards missing: "
                   + missing.joined(separator: "; ") + more + " — see `sigma status`", now: now, into: &out)
        }
    }
}

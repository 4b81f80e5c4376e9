import SigmaJobCore
import SigmaModel
import SigmaProtocol

// Collective training steps (docs/architecture.md "Collective steps"): the workers of a step reduce its gradient
// among themselves. The core picks the members (workers that offer a peer endpoint), keeps them for a segment of
// steps, gives member k share k, and sends each the others' addresses; a member lost or failing mid-segment
// takes the job back to the driver's last snapshot with new members (or none: the coordinator reduces).

/// A job's current collective segment: its number and members in rank order.
struct CollectiveSegment {
    var segment: UInt32
    var members: [PeerID]
    var peers: [PeerAddress]
    /// Among how many members the optimizer's state at the segment's start is shared out: 1 (all of it to every
    /// member, one frame) when weights and state fit one payload, else every member gets its own slice.
    var stateShares: Int
}

extension CoordinatorCore {
    /// Collective attempts stopped in a row at one step before the coordinator takes over that job's reduce.
    static let collectiveStopsAllowed = 3

    /// The address other workers reach worker `k` on for collective steps, if it offers one.
    func peerAddress(_ k: Int) -> PeerAddress? {
        guard let e = table[k].features["peer"], !e.isEmpty else { return nil }
        return PeerAddress(endpoint: e, key: table[k].features["peer-key"] ?? "")
    }

    /// Whether every one of `workers` (table indices) shares this coordinator's memory (its `shm=` key is ours).
    func sharesOurMemory(_ workers: [Int]) -> Bool {
        guard let key = config.sharedMemoryKey else { return false }
        return workers.allSatisfy { table[$0].features["shm"] == key }
    }

    /// Each member's shared-memory group from its `shm=` host key ("" when it offers none): members with the same key
    /// share a group numbered from 1 in order of first appearance; a key no other member has gives 0.
    public static func memoryGroups(_ keys: [String]) -> [UInt16] {
        let counts = Dictionary(keys.map { ($0, 1) }, uniquingKeysWith: +)
        var numbers: [String: UInt16] = [:]
        for key in keys where !key.isEmpty && numbers[key] == nil && counts[key]! > 1 { numbers[key] = UInt16(numbers.count + 1) }
        return keys.map { numbers[$0] ?? 0 }
    }

    /// The shares of a training step, made collective where the job can be: the segment's members (kept while all
    /// are live and, between snapshots, whatever else changes), each with its share of `shares` (a member the cost
    /// model left out gets the least share: every member owns a slice, so every one computes).
    mutating func collectiveShares(_ job: JobEntry, _ driver: any RoundDriver, _ shares: [(weight: Double, worker: PeerID?)],
                                   into out: inout [CoordinatorAction]) -> [(weight: Double, worker: PeerID?)] {
        guard let d = driver as? any CollectiveRounds else { return shares }
        // (the largest member's start is with two members: each then gets the weights and half of the state)
        if config.collectiveSteps, d.collectiveCapable, !job.collectiveOff, d.segmentSize == 0, d.segmentStartBytes(members: 2) > config.maxPayload {
            job.collectiveOff = true
            out.append(.log(.info, "job \(job.id): the coordinator reduces the steps: a collective segment's start (the weights and half of the optimizer's state, \(d.segmentStartBytes(members: 2)) bytes) exceeds the payload limit of \(config.maxPayload) bytes (cluster.yaml coordinator.max_frame_bytes)", job: job.id))
        }
        guard config.collectiveSteps, d.collectiveCapable, !job.collectiveOff else {
            // (collective steps turned off for the job: back to the coordinator reducing, from the snapshot)
            if d.segmentSize > 0 && d.atSnapshot {
                _ = d.beginSegment(size: 0)
                for k in table.indices { table[k].paramsSent[job.id] = nil }
            }
            return shares
        }
        if let c = job.collective, !c.members.allSatisfy({ index[$0].map { table[$0].state == .ready } ?? false }) || c.members.count > d.roundItems {
            // (a member draining, or fewer micro-batches than members: the segment cannot go on)
            job.collective = nil
            if !d.atSnapshot {
                let lost = d.rollback()
                out.append(.log(.info, "job \(job.id): a worker of the collective steps is leaving; back to step \(d.progress.step), \(lost) step(s) run again", job: job.id))
            }
        }
        let members = Array(table.indices.filter { table[$0].accepts && peerAddress($0) != nil }.prefix(d.roundItems))
        if let c = job.collective, d.atSnapshot && members.map({ table[$0].peer }) != c.members {
            job.collective = nil   // (at a snapshot: the workers there now make the next segment)
        }
        if job.collective == nil {
            guard d.atSnapshot else { return shares }
            let onOneMachine = members.count >= 2 && members.count < config.sameMachineCollectiveFrom && sharesOurMemory(members)
            if onOneMachine && !job.reducedOnOneMachineSaid {
                job.reducedOnOneMachineSaid = true
                out.append(.log(.info, "job \(job.id): the coordinator reduces the steps: its \(members.count) workers share its machine's memory, where its path copies nothing (collective steps there from \(config.sameMachineCollectiveFrom) workers)", job: job.id))
            }
            let size = members.count >= 2 && !onOneMachine ? members.count : 0
            guard size > 0 || d.segmentSize > 0 else { return shares }
            let segment = d.beginSegment(size: size)
            // (the weights' form changes with the segment: every worker gets them again)
            for k in table.indices { table[k].paramsSent[job.id] = nil }
            guard size > 0 else { return shares }
            let whole = d.segmentStartBytes(members: 1)
            let groups = Self.memoryGroups(members.map { table[$0].features["shm"] ?? "" })
            let peers = zip(members, groups).map { k, g in
                var p = peerAddress(k)!
                p.memoryGroup = g
                return p
            }
            job.collective = CollectiveSegment(segment: segment, members: members.map { table[$0].peer }, peers: peers,
                                               stateShares: whole <= config.maxPayload ? 1 : size)
            collectiveJobs.insert(job.id)
            let start = whole <= config.maxPayload ? "" : "; each starts from the weights and its slice of the optimizer's state (all of it, \(whole) bytes, exceeds the payload limit)"
            let sharing = groups.filter { $0 != 0 }.count
            let memory = sharing == 0 ? "" : sharing == size ? "; all share memory (large payloads through /dev/shm)" : "; \(sharing) of them share memory with another (large payloads between those through /dev/shm)"
            out.append(.log(.info, "job \(job.id): step \(d.progress.step + 1) on, \(size) workers reduce the steps among themselves (segment \(segment))\(start)\(memory)", job: job.id))
        }
        let c = job.collective!
        let least = shares.map(\.weight).filter { $0 > 0 }.min() ?? 1
        return c.members.map { m in (shares.first { $0.worker == m }?.weight ?? least, m) }
    }

    /// A collective step can no longer finish (a member was lost, a shard failed or was declined): its attempts
    /// are cancelled, the driver goes back to its snapshot, and the step is planned again.
    mutating func repairCollectives(now: Nanos, into out: inout [CoordinatorAction]) {
        guard !collectiveJobs.isEmpty else { return }
        for id in collectiveJobs.sorted() {
            guard let job = jobs[id], !job.state.isFinal, job.collective != nil || job.collectiveBroken != nil else {
                collectiveJobs.remove(id)
                continue
            }
            guard let reason = job.collectiveBroken, let d = job.driver as? any CollectiveRounds else { continue }
            job.collectiveBroken = nil
            for i in job.shards.indices {
                for p in job.shards[i].holders {
                    guard let k = index[p] else { continue }
                    for key in table[k].inFlight.keys where key.job == id && key.shard == ShardIndex(job.base + i) {
                        if let f = table[k].inFlight.removeValue(forKey: key) { job.endAttempt(f.record, .cancelled, now: now, error: "collective step stopped: \(reason)") }
                        out.append(.send(p, .cancel(Cancel(job: id, shard: key.shard, attempt: key.attempt))))
                    }
                    if table[k].inFlight.isEmpty { table[k].busyUntil = now }
                }
                job.shards[i].holders.removeAll()
            }
            let step = d.progress.step + 1
            job.collective = nil
            let lost = d.rollback()
            out.append(.log(.warning, "job \(id): collective step \(step) stopped (\(reason)); back to step \(d.progress.step), \(lost) step(s) run again", job: id))
            // (stopped again and again at the same step — a worker refusing the segment's start, say: its retries
            // would only repeat; the coordinator reduces the job's steps)
            let again = job.collectiveStops.step == d.progress.step ? job.collectiveStops.count + 1 : 1
            job.collectiveStops = (d.progress.step, again)
            if again >= CoordinatorCore.collectiveStopsAllowed, !job.collectiveOff {
                job.collectiveOff = true
                out.append(.log(.warning, "job \(id): collective steps stopped \(again) times at step \(step); the coordinator reduces this job's steps from now on", job: id))
            }
            planRound(job, d, now: now, into: &out)
        }
    }

    /// A collective step failed on a worker (its peers unreachable, say): the coordinator reduces this job's steps
    /// from now on — trying the same workers again would likely fail the same way.
    func collectiveFailed(_ job: JobEntry, _ w: WorkerEntry, _ error: String, into out: inout [CoordinatorAction]) {
        guard job.collective != nil, !job.collectiveOff else { return }
        job.collectiveOff = true
        out.append(.log(.warning, "job \(job.id): a collective step failed on worker \(w.label) (\(error)); the coordinator reduces this job's steps from now on", job: job.id))
    }

    /// The PARAMS for shard `i` of `job`'s round: at a collective segment's start, member i's — the weights and the
    /// optimizer's state shared out as the segment decided (all of it in one frame, or its own slice); else the driver's.
    func params(_ job: JobEntry, shard i: Int) -> Frame? {
        if let c = job.collective, i < c.members.count, let d = job.driver as? any CollectiveRounds { return d.params(member: i, of: c.stateShares) }
        return job.driver?.params
    }

    /// The collective step of `job` to send with shard `i` (its rank), if the round is one.
    func collectiveStep(_ job: JobEntry, _ i: Int) -> CollectiveStep? {
        guard let c = job.collective, let d = job.driver as? any CollectiveRounds, i < c.members.count else { return nil }
        return CollectiveStep(segment: c.segment, rank: UInt16(i), snapshot: d.snapshotDue, peers: c.peers)
    }
}

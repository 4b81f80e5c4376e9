import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

// Workers joining, draining, leaving and falling silent; the periodic tick.

extension CoordinatorCore {
    mutating func hello(_ peer: PeerID, _ h: Hello, now: Nanos, into out: inout [CoordinatorAction]) {
        guard h.slots >= 1, h.slots <= 4096 else {
            out.append(.send(peer, .error(ErrorReply(.badRequest, "HELLO: slots must be between 1 and 4096, got \(h.slots)"))))
            return
        }
        // The same worker process registering again, or on a new connection (it found this coordinator silent):
        // its old session's shards run again, but the process is alive, so no shard is blamed for killing it.
        if index[peer] != nil { retire(peer, reason: "re-registered", now: now, into: &out, blame: false) }
        for w in table where w.hello.instance == h.instance && !h.instance.isEmpty && w.isLive {
            retire(w.peer, reason: "reconnected as a new session", now: now, into: &out, blame: false)
        }
        if let old = index[peer] {   // the same peer id registering again: its old entry leaves the table
            table.remove(at: old)
            reindex()
        }
        let id = "w\(nextWorker)"
        nextWorker += 1
        var w = WorkerEntry(peer: peer, id: id, hello: h, joinedAt: now, lastSeen: now)
        w.lastSent = now
        w.busyUntil = now
        index[peer] = table.count
        table.append(w)
        out.append(.send(peer, .ready(Ready(workerID: id, heartbeatInterval: UInt32(config.heartbeatInterval / 1_000_000),
                                            liveness: UInt16(config.liveness), build: config.build))))
        out.append(.log(.info, "worker \(id) joined: \(h.name)@\(h.host), \(h.cores) cores, \(h.slots) slots, \(h.build)"))
        if h.build != config.build {
            // (each build computes its own bits: a job's results on workers of mixed builds need not equal --local's)
            out.append(.log(.warning, "worker \(id) (\(h.name)@\(h.host)) runs \(h.build), this coordinator \(config.build): "
                + "results of jobs it computes may differ bitwise from --local and from other builds; run one build on every host"))
        }
        // (each kernel set rounds its products its own way: a job whose shards run on both gets bits that depend on
        // which worker ran what)
        if let blas = h.feature("blas"), !blas.isEmpty,
           let other = table.first(where: { $0.isLive && $0.peer != peer && ($0.features["blas"] ?? "").isEmpty == false && $0.features["blas"] != blas }) {
            out.append(.log(.warning, "worker \(id) (\(h.name)@\(h.host)) runs OpenBLAS \(blas) kernels, worker \(other.id) (\(other.hello.name)@\(other.hello.host)) "
                + "\(other.features["blas"] ?? ""): a job's results then depend on which worker computed what (not bitwise reproducible); "
                + "see sigma workers for why each runs its set"))
        }
        placeAllReplicas(into: &out)
    }

    /// Takes a worker out of service and queues its shards again, first in line.
    /// `died`: its shards were lost (else it declined them). `blame`: a shard that was running on a worker that
    /// died counts that death; at `poisonDeaths` it fails its job.
    mutating func retire(_ peer: PeerID, reason: String, now: Nanos, into out: inout [CoordinatorAction], died: Bool = true, blame: Bool = true) {
        guard let k = index[peer], table[k].isLive else { return }
        let w = table[k]
        let lost = w.inFlight.keys.sorted { ($0.job, $0.shard) > ($1.job, $1.shard) }
        for (key, f) in w.inFlight { jobs[key.job]?.endAttempt(f.record, died ? .lost : .declined, now: now, error: "worker \(w.id) \(reason)") }
        table[k].inFlight.removeAll()
        table[k].paramsSent.removeAll()
        table[k].releases.removeAll()
        table[k].state = .dead
        table[k].diedAt = now
        var poisoned: [(JobID, String)] = []
        for key in lost {
            guard let job = jobs[key.job], !job.state.isFinal, let i = job.local(key.shard) else { continue }
            job.shards[i].holders.removeAll { $0 == peer }
            guard job.shards[i].state == .running else { continue }
            if died && blame {
                job.shards[i].killed.append("\(w.id)@\(w.hello.host)")
                if job.shards[i].killed.count >= config.poisonDeaths {
                    poisoned.append((key.job, "job \(key.job): \(job.describe(i)) was running on \(job.shards[i].killed.count) workers that died (\(job.shards[i].killed.joined(separator: ", "))); not running it again — it may be what kills them"))
                    continue
                }
            }
            job.requeue(i, rerun: true, now: now, queue: &queue)
        }
        if !lost.isEmpty {
            out.append(.log(.warning, "worker \(w.label) \(reason); \(lost.count) shard(s) queued again"))
        }
        for (job, error) in poisoned { finish(job, state: .failed, error: error, now: now, into: &out) }
        workerGone(peer, now: now, into: &out)
    }

    /// A worker asked to leave once its shards are done: no new shards; DISCONNECT when it holds none.
    mutating func drain(_ peer: PeerID, reason: String, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let k = index[peer], table[k].state == .ready else { return }
        table[k].state = .draining
        // Shards it was assigned but has not started would wait behind its running ones: it declines those.
        out.append(.log(.info, "worker \(table[k].label) draining (\(reason)); \(table[k].inFlight.count) shard(s) to finish"))
        finishDrain(k, now: now, into: &out)
    }

    mutating func finishDrain(_ k: Int, now: Nanos, into out: inout [CoordinatorAction]) {
        guard table[k].state == .draining, table[k].inFlight.isEmpty, !servingBatches.values.contains(where: { $0.worker == table[k].peer }) else { return }
        out.append(.send(table[k].peer, .disconnect(reason: "drained")))
        out.append(.log(.info, "worker \(table[k].label) drained and left"))
        retire(table[k].peer, reason: "drained", now: now, into: &out, died: false)
    }

    mutating func reindex() {
        index = [:]
        for (k, w) in table.enumerated() { index[w.peer] = k }
    }

    mutating func heard(_ peer: PeerID, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let k = index[peer] else { return }
        table[k].lastSeen = now
        if table[k].suspect {
            table[k].suspect = false
            out.append(.log(.info, "worker \(table[k].label) heard from again; no longer suspect"))
        }
    }

    mutating func tick(now: Nanos, into out: inout [CoordinatorAction]) {
        for j in jobs.values where j.state == .running { j.pace.observe(now, items: j.itemsDone, progress: j.progress) }
        // (fields read in place: a copy of each entry per tick was an idle coordinator's largest cost)
        for k in table.indices where table[k].isLive {
            let lastSeen = table[k].lastSeen
            if !table[k].suspect, config.suspectAfter < config.deadAfter, now &- lastSeen > config.suspectAfter {
                table[k].suspect = true
                out.append(.log(.warning, "worker \(table[k].label) suspect: silent for \((now - lastSeen) / 1_000_000) ms; no new shards until heard from"))
            }
            if now &- lastSeen > config.deadAfter {
                let peer = table[k].peer
                out.append(.send(peer, .disconnect(reason: "no heartbeat for \((now - lastSeen) / 1_000_000) ms")))
                retire(peer, reason: "missed \(config.liveness) heartbeats (silent \((now - lastSeen) / 1_000_000) ms)", now: now, into: &out)
            } else if now &- table[k].lastSent >= config.heartbeatInterval {
                out.append(.send(table[k].peer, .heartbeat(table[k].heartbeat(now: now))))
                table[k].lastSent = now
            }
            if table[k].isLive, !table[k].releases.isEmpty {
                for job in table[k].releases { out.append(.send(table[k].peer, .cancel(Cancel(job: job, shard: Cancel.allShards, attempt: 0)))) }
                table[k].releases = []
            }
        }
        // Forget workers dead for a while (they stay visible in STATUS for 10 liveness windows).
        let forgetAfter = config.deadAfter * 10
        if table.contains(where: { !$0.isLive && now &- $0.diedAt > forgetAfter }) {
            table.removeAll { !$0.isLive && now &- $0.diedAt > forgetAfter }
            reindex()
            roundRobin = 0
        }
        hedge(now: now, into: &out)
        checkTimeouts(now: now, into: &out)
        for (id, job) in jobs where !job.state.isFinal {
            if job.acceptPending {
                job.acceptPending = false
                out.append(.send(job.submitter, .accept(Accept(request: job.request, job: id, shards: UInt32(job.shards.count)))))
            }
            if !job.watchers.isEmpty { sendProgress(id, now: now, force: false, into: &out) }
        }
    }
}

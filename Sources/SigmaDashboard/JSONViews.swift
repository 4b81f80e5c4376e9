import Foundation
import SigmaModel
import SigmaProtocol

// JSON views of the coordinator's snapshots, shared by the CLI's --json output and the web dashboard's API.

extension ClusterStatus.Job {
    public var jsonObject: [String: Any] {
        var o: [String: Any] = ["id": Int(id), "name": name, "kind": kind, "state": state.description, "done": Int(done),
                                "total": Int(total), "running": Int(running), "reruns": Int(reruns), "duplicates": Int(duplicates),
                                "elapsed_s": Double(elapsed) / 1e9, "error": error, "hedges": Int(hedges), "hedges_won": Int(hedgesWon),
                                "items": Int(items), "progress": progressFraction]
        if !key.isEmpty { o["client_id"] = key }
        if steps > 0 {
            o["step"] = Int(step)
            o["steps"] = Int(steps)
            if let at = position, let e = at.epoch, let t = at.epochs {
                o["epoch"] = e
                o["epochs"] = t
            }
            o["position"] = position?.description
            if loss.isFinite { o["loss"] = loss }
            if accuracy.isFinite { o["accuracy"] = accuracy }
            if evalLoss.isFinite { o["eval_loss"] = evalLoss }
        }
        if let e = eta { o["eta_s"] = e }
        if let r = recentRate {
            o["rate_per_s"] = r
            o["rate_unit"] = itemUnit
        }
        return o
    }
}

extension ClusterStatus.Worker {
    public var jsonObject: [String: Any] {
        ["id": id, "name": name, "host": host, "cores": Int(cores), "slots": Int(slots), "state": state,
         "in_flight": Int(inFlight), "rtt_us": Double(rtt) / 1e3, "last_seen_ms": Double(lastSeen) / 1e6,
         "shards_done": Int(shardsDone), "throughput_items_per_s": throughput, "bandwidth_bytes_per_s": bandwidth,
         "bytes_in": Int(bytesIn), "bytes_out": Int(bytesOut), "cpu_percent": cpu, "rss_bytes": Int(rss),
         "memory_bytes": Int(memory), "compression_ratio": compressionRatio, "up_s": Double(joined) / 1e9,
         "blas": blas, "blas_choice": blasChoice, "blas_best": blasBest, "blas_below_best": blasBelowBest]
    }
}

extension AttemptRecord {
    public var jsonObject: [String: Any] {
        ["round": Int(round), "shard": Int(shard), "attempt": Int(attempt), "start": Int(start), "count": Int(count),
         "worker": worker, "host": host, "hedge": hedge, "queued_s": Double(queued) / 1e9, "started_s": Double(started) / 1e9,
         "finished_s": outcome == .running ? NSNull() : Double(finished) / 1e9 as Any, "compute_s": Double(compute) / 1e9,
         "outcome": outcome.description, "error": error]
    }
}

extension JobDetail {
    /// `sigma job --json` and the dashboard's /api/jobs/ID: the job's summary, policy and provenance digests
    /// ("" where there is no such file), and with `attempts` every recorded shard attempt.
    public func jsonObject(attempts withAttempts: Bool) -> [String: Any] {
        var o = job.jsonObject
        o["policy"] = policy
        o["spec_digest"] = specDigest
        o["input_digest"] = inputDigest
        o["model_digest"] = modelDigest
        if withAttempts {
            // (each attempt with its lane: the compute slot it held on its worker, for timelines)
            o["attempts"] = zip(attempts, SlotLanes.assign(attempts, now: job.elapsed)).map { a, lane in
                var x = a.jsonObject
                x["lane"] = lane
                return x
            }
            o["attempts_not_recorded"] = Int(attemptsDropped)
        }
        return o
    }

    /// Chrome trace format: one process per job, one thread (track) per compute slot a worker used ("w1@host slot 2",
    /// `SlotLanes`), one complete ("X") slice per attempt — so slices on one track never overlap.
    public var chromeTrace: [String: Any] {
        var tracks: [String: Int] = [:]
        var events: [Any] = [["name": "process_name", "ph": "M", "pid": 1, "tid": 0,
                              "args": ["name": "job \(job.id) \(job.name) (\(job.kind))"]] as [String: Any]]
        for (a, lane) in zip(attempts, SlotLanes.assign(attempts, now: job.elapsed)) {
            let label = "\(SlotLanes.track(a)) slot \(lane + 1)"
            let tid: Int
            if let t = tracks[label] { tid = t } else {
                tid = tracks.count + 1
                tracks[label] = tid
                events.append(["name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": ["name": label]] as [String: Any])
                events.append(["name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid, "args": ["sort_index": tid]] as [String: Any])
            }
            let end = a.outcome == .running ? max(a.started, job.elapsed) : a.finished
            events.append(["name": (job.steps > 0 ? "step \(a.round + 1) " : "") + "shard \(a.shard)" + (a.attempt > 1 ? " #\(a.attempt)" : ""),
                           "cat": a.outcome.description, "ph": "X", "pid": 1, "tid": tid,
                           "ts": Double(a.started) / 1e3, "dur": Double(end - a.started) / 1e3,
                           "args": ["range": "\(a.start)..<\(a.start + a.count)", "attempt": Int(a.attempt), "hedge": a.hedge,
                                    "queued_ms": Double(a.queued) / 1e6, "compute_ms": Double(a.compute) / 1e6,
                                    "outcome": a.outcome.description, "error": a.error] as [String: Any]] as [String: Any])
        }
        return ["traceEvents": events, "displayTimeUnit": "ms",
                "otherData": ["job": Int(job.id), "policy": policy, "spec_digest": specDigest, "input_digest": inputDigest,
                              "model_digest": modelDigest]]
    }
}


extension ClusterStatus {
    public var jsonObject: [String: Any] {
        [
            "build": build, "uptime_s": Double(uptime) / 1e9, "queued_shards": Int(queuedShards), "policy": policy,
            "workers": workers.map(\.jsonObject),
            "jobs": jobs.map(\.jsonObject),
            "totals": ["bytes_in": Int(totals.bytesIn), "bytes_out": Int(totals.bytesOut), "shards_done": Int(totals.shardsDone),
                       "shards_failed": Int(totals.shardsFailed), "reruns": Int(totals.reruns), "hedges": Int(totals.hedges),
                       "jobs_completed": Int(totals.jobsCompleted), "jobs_failed": Int(totals.jobsFailed),
                       "jobs_cancelled": Int(totals.jobsCancelled)],
        ]
    }
}

/// Compact JSON text of a JSON object (sorted keys, so output is stable for snapshots).
public func jsonText(_ object: Any, pretty: Bool = false) -> String {
    guard JSONSerialization.isValidJSONObject(object),
          let d = try? JSONSerialization.data(withJSONObject: object, options: pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]) else { return "{}" }
    return String(decoding: d, as: UTF8.self)
}

extension DeploymentStatus {
    public var jsonObject: [String: Any] {
        var o: [String: Any] = ["name": name, "model": model, "replicas_wanted": replicasWanted == 0 ? "all" : "\(replicasWanted)" as Any,
                                "replicas_ready": ready, "queued": Int(queued), "queue_limit": Int(queueLimit), "max_batch": Int(maxBatch),
                                "max_wait_ms": maxWaitMs, "requests": Int(requests), "rejected_429": Int(tooBusy), "unavailable_503": Int(unavailable),
                                "timed_out_504": Int(timedOut), "failed": Int(failed), "answered": Int(answered), "withdrawn": Int(withdrawn), "requests_per_s": rate]
        for (k, v) in [("p50_ms", p50Ms), ("p99_ms", p99Ms), ("queue_p50_ms", queueP50Ms), ("compute_p50_ms", computeP50Ms), ("mean_batch", meanBatch)]
        where v.isFinite { o[k] = v }
        if !labels.isEmpty { o["labels"] = labels }
        if draining { o["draining"] = true }
        o["replicas"] = replicas.map { r in
            ["worker": r.worker, "name": r.name, "state": r.state, "error": r.error, "in_flight": Int(r.inFlight), "batches": Int(r.batches)] as [String: Any]
        }
        return o
    }
}

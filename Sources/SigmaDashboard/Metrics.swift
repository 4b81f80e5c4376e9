import Prometheus
import SigmaProtocol
import Synchronization

/// Prometheus metrics (`sigma_` prefix) kept from coordinator snapshots: gauges set at each scrape, counters
/// advanced by the totals' growth, histograms fed with the samples the coordinator gathered since the last scrape.
public final class SigmaMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    static let workerStates = ["ready", "busy", "draining", "suspect", "low-memory", "dead"]
    static let shardStates = ["queued", "running", "done"]
    let workers: [String: Gauge]
    let shards: [String: Gauge]
    let jobsActive: Gauge
    let slots: Gauge
    let cpu: Gauge
    let counters: [(name: String, counter: Counter, value: @Sendable (ClusterStatus.Totals) -> UInt64)]
    let last = Mutex<[UInt64]>([])
    let rtt: ValueHistogram
    let shardDuration: DurationHistogram
    let reduce: DurationHistogram
    let optimizer: DurationHistogram
    /// Per-worker gauges (labels worker, host), one set per live worker; a worker's series go when it does.
    static let perWorker: [(name: String, help: String, value: @Sendable (ClusterStatus.Worker) -> Double)] = [
        ("sigma_worker_in_flight", "Shards held by the worker", { Double($0.inFlight) }),
        ("sigma_worker_cpu_percent_by_worker", "Worker process CPU use, percent of one core", { $0.cpu }),
        ("sigma_worker_rss_bytes", "Worker process resident memory", { Double($0.rss) }),
        ("sigma_worker_rtt_by_worker_seconds", "Smoothed round-trip time to the worker", { Double($0.rtt) / 1e9 }),
        ("sigma_worker_throughput_items_per_second", "Measured items per second (current job kind)", { $0.throughput }),
        ("sigma_worker_shards_done", "Shard results committed from the worker", { Double($0.shardsDone) }),
        ("sigma_worker_bytes_in", "Result bytes received from the worker", { Double($0.bytesIn) }),
        ("sigma_worker_bytes_out", "Bytes sent to the worker", { Double($0.bytesOut) }),
    ]
    let workerGauges = Mutex<[String: [Gauge]]>([:])
    /// Per-deployment gauges (label deployment), one set per deployment; they go when it does (docs/serving.md).
    static let perDeployment: [(name: String, help: String, value: @Sendable (DeploymentStatus) -> Double)] = [
        ("sigma_serve_latency_p50_seconds", "Median request latency in the coordinator, arrival to answer (last 2,000 requests)", { $0.p50Ms / 1e3 }),
        ("sigma_serve_latency_p99_seconds", "99th percentile request latency in the coordinator (last 2,000 requests)", { $0.p99Ms / 1e3 }),
        ("sigma_serve_queue_p50_seconds", "Median time a request waited in the queue (last 2,000 requests)", { $0.queueP50Ms / 1e3 }),
        ("sigma_serve_compute_p50_seconds", "Median compute time of a request's batch on its worker (last 2,000 requests)", { $0.computeP50Ms / 1e3 }),
        ("sigma_serve_batch_size_mean", "Mean rows per batch sent", { $0.meanBatch }),
        ("sigma_serve_requests_per_second", "Requests answered per second over the last 10 s", { $0.rate }),
        ("sigma_serve_queued", "Requests waiting for a batch", { Double($0.queued) }),
        ("sigma_serve_replicas_ready", "Replicas loaded and answering", { Double($0.ready) }),
        ("sigma_serve_requests", "Requests accepted since the deployment started", { Double($0.requests) }),
        ("sigma_serve_rejected_429", "Requests refused over the queue limit (429) since the deployment started", { Double($0.tooBusy) }),
        ("sigma_serve_unavailable_503", "Requests refused with no replica ready (503) since the deployment started", { Double($0.unavailable) }),
        ("sigma_serve_timed_out_504", "Requests not answered within their timeout (504) since the deployment started", { Double($0.timedOut) }),
        ("sigma_serve_withdrawn", "Requests withdrawn by their clients before the answer (an HTTP caller that hung up) since the deployment started", { Double($0.withdrawn) }),
    ]
    let deploymentGauges = Mutex<[String: [Gauge]]>([:])
    /// sigma_curve_handshakes_total{outcome}: made at the first scrape that has CURVE figures, with their last values.
    let handshakeCounters = Mutex<(admitted: Counter, refused: Counter, last: (UInt64, UInt64))?>(nil)

    public init() {
        let r = registry
        workers = Dictionary(uniqueKeysWithValues: SigmaMetrics.workerStates.map {
            ($0, r.makeGauge(descriptor: .sigma("sigma_workers", "Workers by state"), labels: [("state", $0)]))
        })
        shards = Dictionary(uniqueKeysWithValues: SigmaMetrics.shardStates.map {
            ($0, r.makeGauge(descriptor: .sigma("sigma_shards", "Shards of unfinished jobs by state (current round)"), labels: [("state", $0)]))
        })
        jobsActive = r.makeGauge(descriptor: .sigma("sigma_jobs_active", "Jobs queued or running"))
        slots = r.makeGauge(descriptor: .sigma("sigma_worker_slots", "Compute slots of live workers"))
        cpu = r.makeGauge(descriptor: .sigma("sigma_worker_cpu_percent", "Sum of live workers' CPU use, percent of one core"))
        counters = [
            ("sigma_bytes_received_total", r.makeCounter(descriptor: .sigma("sigma_bytes_received_total", "Bytes of shard results received from workers")), { $0.bytesIn }),
            ("sigma_bytes_sent_total", r.makeCounter(descriptor: .sigma("sigma_bytes_sent_total", "Bytes of assignments and parameters sent to workers")), { $0.bytesOut }),
            ("sigma_shards_completed_total", r.makeCounter(descriptor: .sigma("sigma_shards_completed_total", "Shard results committed")), { $0.shardsDone }),
            ("sigma_shards_failed_total", r.makeCounter(descriptor: .sigma("sigma_shards_failed_total", "Shard attempts that failed")), { $0.shardsFailed }),
            ("sigma_shard_reruns_total", r.makeCounter(descriptor: .sigma("sigma_shard_reruns_total", "Shards run again after a worker died or failed them")), { $0.reruns }),
            ("sigma_hedges_total", r.makeCounter(descriptor: .sigma("sigma_hedges_total", "Backup attempts started by hedging")), { $0.hedges }),
            ("sigma_jobs_completed_total", r.makeCounter(descriptor: .sigma("sigma_jobs_completed_total", "Jobs completed")), { $0.jobsCompleted }),
            ("sigma_jobs_failed_total", r.makeCounter(descriptor: .sigma("sigma_jobs_failed_total", "Jobs failed")), { $0.jobsFailed }),
            ("sigma_jobs_cancelled_total", r.makeCounter(descriptor: .sigma("sigma_jobs_cancelled_total", "Jobs cancelled")), { $0.jobsCancelled }),
        ]
        rtt = r.makeValueHistogram(descriptor: .sigma("sigma_worker_rtt_seconds", "Live workers' smoothed round-trip times, one sample per worker per scrape"),
                                   buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1])
        shardDuration = r.makeDurationHistogram(descriptor: .sigma("sigma_shard_duration_seconds", "Shard attempts from sent to result committed"),
                                                buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                                          .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5), .seconds(30)])
        reduce = r.makeDurationHistogram(descriptor: .sigma("sigma_reduce_duration_seconds", "Reduction (and optimizer step) per completed round of an ML job"),
                                         buckets: [.microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                                   .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(2)])
        optimizer = r.makeDurationHistogram(descriptor: .sigma("sigma_optimizer_duration_seconds", "Optimizer step (with the gradient tree's last addition) per training step; part of the reduce duration"),
                                            buckets: [.microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                                      .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(2)])
    }

    /// Brings the metrics up to `status` and the new samples; returns the text exposition.
    public func scrape(_ status: ClusterStatus?, samples: CoordinatorSamples,
                       handshakes: (admitted: UInt64, refused: UInt64)? = nil, deployments: [DeploymentStatus] = []) -> String {
        deploymentGauges.withLock { g in
            let names = Set(deployments.map(\.name))
            for (name, gauges) in g where !names.contains(name) {
                for x in gauges { registry.unregisterGauge(x) }
                g[name] = nil
            }
            for d in deployments {
                let gauges = g[d.name] ?? SigmaMetrics.perDeployment.map { registry.makeGauge(descriptor: .sigma($0.name, $0.help), labels: [("deployment", d.name)]) }
                g[d.name] = gauges
                // (figures not measured yet read 0)
                for (x, m) in zip(gauges, SigmaMetrics.perDeployment) { let v = m.value(d); x.set(to: v.isFinite ? v : 0) }
            }
        }
        if let h = handshakes {
            handshakeCounters.withLock { c in
                if c == nil {
                    let help = "CURVE handshakes answered: admitted (enrolled keys) or refused"
                    c = (registry.makeCounter(descriptor: .sigma("sigma_curve_handshakes_total", help), labels: [("outcome", "admitted")]),
                         registry.makeCounter(descriptor: .sigma("sigma_curve_handshakes_total", help), labels: [("outcome", "refused")]), (0, 0))
                }
                if h.admitted > c!.last.0 { c!.admitted.increment(by: Int64(clamping: h.admitted - c!.last.0)) }
                if h.refused > c!.last.1 { c!.refused.increment(by: Int64(clamping: h.refused - c!.last.1)) }
                c!.last = (max(c!.last.0, h.admitted), max(c!.last.1, h.refused))
            }
        }
        for s in samples.shards { shardDuration.recordNanoseconds(Int64(clamping: s)) }
        for s in samples.reduces { reduce.recordNanoseconds(Int64(clamping: s)) }
        for s in samples.optimizers where s > 0 { optimizer.recordNanoseconds(Int64(clamping: s)) }
        if let st = status {
            for state in SigmaMetrics.workerStates { workers[state]!.set(to: Double(st.workers.filter { $0.state == state }.count)) }
            let active = st.jobs.filter { !$0.state.isFinal }
            shards["queued"]!.set(to: Double(st.queuedShards))
            shards["running"]!.set(to: Double(active.reduce(0) { $0 + Int($1.running) }))
            shards["done"]!.set(to: Double(active.reduce(0) { $0 + Int($1.done) }))
            jobsActive.set(to: Double(active.count))
            let live = st.workers.filter { $0.state != "dead" }
            slots.set(to: Double(live.reduce(0) { $0 + Int($1.slots) }))
            cpu.set(to: live.reduce(0) { $0 + $1.cpu })
            for w in live where w.rtt > 0 { rtt.record(Double(w.rtt) / 1e9) }
            workerGauges.withLock { g in
                let ids = Set(live.map(\.id))
                for (id, gauges) in g where !ids.contains(id) {
                    for x in gauges { registry.unregisterGauge(x) }
                    g[id] = nil
                }
                for w in live {
                    let gauges = g[w.id] ?? SigmaMetrics.perWorker.map {
                        registry.makeGauge(descriptor: .sigma($0.name, $0.help), labels: [("worker", w.id), ("host", w.host)])
                    }
                    g[w.id] = gauges
                    for (x, m) in zip(gauges, SigmaMetrics.perWorker) { x.set(to: m.value(w)) }
                }
            }
            last.withLock { prev in
                if prev.count != counters.count { prev = Array(repeating: 0, count: counters.count) }
                for (i, c) in counters.enumerated() {
                    let v = c.value(st.totals)
                    if v > prev[i] { c.counter.increment(by: Int64(clamping: v - prev[i])) }
                    prev[i] = max(prev[i], v)
                }
            }
        }
        return registry.emitToString()
    }
}

extension MetricNameDescriptor {
    /// A metric named whole (Sigma's names carry their unit), with its help text.
    static func sigma(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}

import Foundation
import SigmaModel
import SigmaProtocol

extension ClusterStatus {
    public static func workersTable(_ workers: [Worker]) -> String {
        let ww = [5, 14, 14, 9, 6, 9, 6, 9, 9, 10, 10, 6, 12]
        var out = columns(["ID", "NAME", "HOST", "STATE", "CPU%", "MEM", "SHARDS", "ITEMS/S", "RTT", "IN", "OUT", "LZ4", "BLAS"], ww) + "\n"
        for w in workers {
            // (a dead worker's last figures are not shown as if current)
            let dead = w.state == "dead"
            out += columns([w.id, w.name, w.host, w.state, dead ? "-" : String(format: "%.0f", w.cpu), dead ? "-" : formatBytes(w.rss), "\(w.inFlight)",
                            w.throughput == 0 ? "-" : formatRate(w.throughput), w.rtt == 0 || dead ? "-" : formatDuration(w.rtt),
                            formatBytes(w.bytesIn), formatBytes(w.bytesOut), String(format: "%.2f", w.compressionRatio),
                            w.blasLabel() + (w.blasChoice.isEmpty ? "" : " (\(w.blasChoice))")], ww) + "\n"
        }
        if workers.isEmpty { out += "(no workers; join one with: sigma worker --coordinator tcp://COORDINATOR:7700)\n" }
        out += blasWarnings(workers).map { $0 + "\n" }.joined()
        return out
    }
}

/// One line per worker whose BLAS kernel set is below what its CPU could run (marked `!` in the tables).
public func blasWarnings(_ workers: [ClusterStatus.Worker]) -> [String] {
    workers.filter { $0.blasBelowBest && $0.state != "dead" }.map { w in
        "! worker \(w.id) (\(w.name)@\(w.host)) runs OpenBLAS \(w.blas) kernels; its CPU runs \(w.blasBest) faster"
            + (w.blasChoice == "env" ? " (OPENBLAS_CORETYPE=\(w.blas) is set there: unset it)" : "")
    }
}

extension DeploymentStatus {
    /// One line per deployment (ready replicas of wanted, queue, requests, latency split into queue and compute,
    /// mean batch, rate, refusals), then one per replica, and a classifier's class names.
    public static func table(_ list: [DeploymentStatus]) -> String {
        let dw = [14, 6, 9, 11, 9, 17, 15, 7, 8, 12]
        var out = columns(["NAME", "MODEL", "REPLICAS", "QUEUED", "REQUESTS", "P50/P99 MS", "QUEUE/COMP MS", "BATCH", "REQ/S", "429/503/504"], dw) + "\n"
        func ms(_ v: Double) -> String { v.isFinite ? String(format: v < 10 ? "%.2f" : "%.0f", v) : "-" }
        for d in list {
            out += columns([d.name, d.model, "\(d.ready)/\(d.replicasWanted == 0 ? "all" : "\(d.replicasWanted)")", "\(d.queued)/\(d.queueLimit)",
                            "\(d.requests)", "\(ms(d.p50Ms))/\(ms(d.p99Ms))", "\(ms(d.queueP50Ms))/\(ms(d.computeP50Ms))",
                            d.meanBatch.isFinite ? String(format: "%.1f", d.meanBatch) : "-", formatRate(d.rate), "\(d.tooBusy)/\(d.unavailable)/\(d.timedOut)"], dw) + "\n"
            for r in d.replicas {
                out += "    replica on \(r.worker) (\(r.name)): \(r.state)" + (r.error.isEmpty ? "" : ": \(r.error)")
                    + (r.state == "ready" || r.state == "draining" ? ", \(r.batches) batches, \(r.inFlight) in flight" : "") + "\n"
            }
            if d.replicas.isEmpty { out += "    no replica: no worker to load it on\n" }
            // (a classifier whose weights name its classes answers each row's class name: which ones)
            if !d.labels.isEmpty {
                out += "    classes: " + d.labels.prefix(8).joined(separator: ", ") + (d.labels.count > 8 ? ", … (\(d.labels.count) in all)" : "") + "\n"
            }
        }
        return out
    }
}

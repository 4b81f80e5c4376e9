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
        "! worker \(w.id) (\(w.name)@\(w.host)) runs OpenBLAS \(w.blas) kernels; its CPU can run \(w.blasBest)"
            + (w.blasChoice == "env" ? " (OPENBLAS_CORETYPE=\(w.blas) is set there: unset it)" : "")
    }
}

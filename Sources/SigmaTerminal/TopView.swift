import Foundation
import SigmaModel
import SigmaProtocol

/// One frame of `sigma top`, as lines no wider than the terminal. Pure: status in, text out.
public struct TopView {
    public init(status: ClusterStatus, sort: Sort) {
        self.status = status
        self.sort = sort
    }

    public enum Sort: String, CaseIterable, Sendable {
        case id, cpu, throughput, rtt, inFlight = "in-flight"
        public var next: Sort { let all = Sort.allCases; return all[(all.firstIndex(of: self)! + 1) % all.count] }
    }
    public var status: ClusterStatus
    public var sort: Sort
    /// Deployments (docs/serving.md): a line each under the header, at most 3.
    public var deployments: [DeploymentStatus] = []

    public func render(width: Int, height: Int) -> [String] {
        let width = max(60, width), height = max(12, height)
        let live = status.workers.filter { $0.state != "dead" }
        let sum = ClusterSummary(status)
        let raw = live.reduce(UInt64(0)) { $0 + $1.rawBytes }, wire = live.reduce(UInt64(0)) { $0 + $1.wireBytes }
        let lz4Ratio: Double = wire == 0 ? 1.0 : Double(raw) / Double(wire)
        let running = status.jobs.filter { $0.state == .running || $0.state == .queued }
        var lines: [String] = []
        lines.append("sigma top  up \(formatDuration(status.uptime))  policy \(status.policy)  sort \(sort.rawValue)  (s: sort, q: quit)")
        lines.append("workers \(sum.live) live on \(sum.hosts) host\(sum.hosts == 1 ? "" : "s")  slots \(sum.slots)  in flight \(sum.busy)  queued \(status.queuedShards)  jobs \(running.count) running")
        lines.append("cpu \(String(format: "%.0f", sum.cpuShare * 100))% of \(sum.hostCores) cores  workers' memory \(formatBytes(sum.rss)) of \(formatBytes(sum.hostMemory))"
                     + "  throughput \(sum.rate > 0 ? formatRate(sum.rate) + " items/s" : "-")  in \(formatBytes(live.reduce(0) { $0 + $1.bytesIn }))  out \(formatBytes(live.reduce(0) { $0 + $1.bytesOut }))  lz4 \(String(format: "%.2f", lz4Ratio))x")
        for d in deployments.prefix(3) {
            func ms(_ v: Double) -> String { v.isFinite ? String(format: v < 10 ? "%.2f" : "%.0f", v) : "-" }
            lines.append("serve \(d.name) \(d.ready)/\(d.replicasWanted == 0 ? "all" : "\(d.replicasWanted)") ready  \(formatRate(d.rate)) req/s  p50 \(ms(d.p50Ms)) p99 \(ms(d.p99Ms)) ms"
                         + " (queue \(ms(d.queueP50Ms)), compute \(ms(d.computeP50Ms)))  batch \(d.meanBatch.isFinite ? String(format: "%.1f", d.meanBatch) : "-")  queued \(d.queued)"
                         + "  429/503/504 \(d.tooBusy)/\(d.unavailable)/\(d.timedOut)")
        }
        if deployments.count > 3 { lines.append("… \(deployments.count - 3) more deployments (sigma deployments)") }
        // The screen is shared: workers get the rows they need up to half of what is left, jobs the rest (running
        // newest first, then the latest finished) — a tall terminal shows more of both, never blank rows under a cut list.
        let warnings = blasWarnings(status.workers).prefix(3)
        let free = max(4, height - lines.count - 3 - warnings.count)   // (2 table headers, 1 blank line)
        let workerRows = min(max(1, status.workers.count), max(1, free / 2))
        let allJobs = running.reversed() + status.jobs.filter { $0.state.isFinal }.reversed()
        let jobRows = max(1, free - workerRows - (status.workers.count > workerRows ? 1 : 0) - (allJobs.count > free - workerRows ? 1 : 0))
        let shown = allJobs.prefix(jobRows)
        lines.append(pad("JOB", 6) + pad("NAME", 16) + pad("STATE", 10) + "PROGRESS")
        for j in shown {
            let f = j.progressFraction
            var info = String(format: " %3.0f%%", f * 100)
            // (a train job's held-out figure — a classifier's accuracy, a regressor's loss — when the line has room)
            var heldOut = ""
            if let at = j.position {
                info += " " + at.description + (j.loss.isFinite ? String(format: " loss %.3f", j.loss) : "")
                heldOut = j.accuracy.isFinite ? String(format: " acc %.3f", j.accuracy) : j.evalLoss.isFinite ? String(format: " eval %.3g", j.evalLoss) : ""
            }
            else { info += " \(j.done)/\(j.total)" }
            var tail = ""
            if let r = j.recentRate { tail += " \(formatRate(r)) \(j.itemUnit == "samples" ? "smp" : "it")/s" }
            tail += j.eta.map { " ETA \(formatDuration(UInt64($0 * 1e9)))" } ?? " \(formatDuration(j.elapsed))"
            info += (6 + 16 + 10 + 2 + 10 + info.count + heldOut.count + tail.count <= width ? heldOut : "") + tail
            // (the bar takes what the line has left after the job's numbers, so the ETA is never cut off)
            let barWidth = max(10, width - 6 - 16 - 10 - 2 - info.count)
            let filled = Int((f * Double(barWidth)).rounded(.down))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: barWidth - filled)
            lines.append(pad("\(j.id)", 6) + pad(j.name, 16) + pad(j.state.description, 10) + "[" + bar + "]" + info)
        }
        if shown.isEmpty { lines.append("(no jobs yet)") }
        if allJobs.count > shown.count { lines.append("… \(allJobs.count - shown.count) more jobs (enlarge the terminal, or: sigma jobs)") }
        lines.append("")
        // Worker columns by importance: those that do not fit the width are left out whole, never cut.
        let columns = workerColumns.reduce(into: [WorkerColumn]()) { kept, c in
            if kept.reduce(0, { $0 + $1.width }) + c.width <= width { kept.append(c) }
        }
        lines.append(columns.map { pad($0.title, $0.width) }.joined())
        let ordered = sorted(status.workers)
        for w in ordered.prefix(workerRows) {
            lines.append(columns.map { pad($0.value(w), $0.width) }.joined())
        }
        if ordered.count > workerRows { lines.append("… \(ordered.count - workerRows) more workers (enlarge the terminal, or: sigma workers)") }
        if status.workers.isEmpty { lines.append("(no workers; join one with: sigma worker --coordinator tcp://COORDINATOR:7700)") }
        lines += warnings
        return lines.map { $0.count > width ? String($0.prefix(width)) : $0 }
    }

    /// A column of the worker table: its title, width and value.
    struct WorkerColumn {
        let title: String
        let width: Int
        let value: (ClusterStatus.Worker) -> String
    }

    /// In order of importance (the first ones always fit 60 columns).
    var workerColumns: [WorkerColumn] {
        [WorkerColumn(title: "WORKER", width: 8) { $0.id }, WorkerColumn(title: "HOST", width: 13) { $0.host },
         WorkerColumn(title: "STATE", width: 11) { $0.state }, WorkerColumn(title: "CPU%", width: 6) { $0.state == "dead" ? "-" : String(format: "%.0f", $0.cpu) },
         WorkerColumn(title: "SHARDS", width: 7) { "\($0.inFlight)" },
         WorkerColumn(title: "ITEMS/S", width: 9) { $0.throughput == 0 ? "-" : formatRate($0.throughput) },
         WorkerColumn(title: "MEM", width: 8) { $0.state == "dead" ? "-" : formatBytes($0.rss) },
         WorkerColumn(title: "RTT", width: 9) { $0.rtt == 0 || $0.state == "dead" ? "-" : formatDuration($0.rtt) },
         WorkerColumn(title: "IN", width: 8) { formatBytes($0.bytesIn) }, WorkerColumn(title: "OUT", width: 8) { formatBytes($0.bytesOut) },
         WorkerColumn(title: "LZ4", width: 6) { String(format: "%.2f", $0.compressionRatio) },
         WorkerColumn(title: "BLAS", width: 26) { $0.blasLabel() }]
    }

    func sorted(_ ws: [ClusterStatus.Worker]) -> [ClusterStatus.Worker] {
        switch sort {
        case .id: ws
        case .cpu: ws.sorted { $0.cpu > $1.cpu }
        case .throughput: ws.sorted { $0.throughput > $1.throughput }
        case .rtt: ws.sorted { $0.rtt > $1.rtt }
        case .inFlight: ws.sorted { $0.inFlight > $1.inFlight }
        }
    }

    func pad(_ s: String, _ w: Int) -> String {
        s.count >= w ? String(s.prefix(w - 1)) + " " : s + String(repeating: " ", count: w - s.count)
    }
}

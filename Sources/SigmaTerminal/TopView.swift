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

    public func render(width: Int, height: Int) -> [String] {
        let width = max(60, width), height = max(12, height)
        let live = status.workers.filter { $0.state != "dead" }
        let slots = live.reduce(0) { $0 + Int($1.slots) }
        let busy = live.reduce(0) { $0 + Int($1.inFlight) }
        let cpu = live.reduce(0.0) { $0 + $1.cpu }
        let cores = live.reduce(0) { $0 + Int($1.cores) }
        let rate = live.reduce(0.0) { $0 + ($1.inFlight > 0 ? $1.throughput * Double($1.slots) : 0) }
        let raw = live.reduce(UInt64(0)) { $0 + $1.rawBytes }, wire = live.reduce(UInt64(0)) { $0 + $1.wireBytes }
        let lz4Ratio: Double = wire == 0 ? 1.0 : Double(raw) / Double(wire)
        let running = status.jobs.filter { $0.state == .running || $0.state == .queued }
        var lines: [String] = []
        lines.append("sigma top  up \(formatDuration(status.uptime))  policy \(status.policy)  sort \(sort.rawValue)  (s: sort, q: quit)")
        lines.append("workers \(live.count) live  slots \(slots)  in flight \(busy)  queued \(status.queuedShards)  jobs \(running.count) running  cpu \(String(format: "%.0f", cpu))%/\(cores * 100)%")
        lines.append("throughput \(rate > 0 ? formatRate(rate) + " items/s" : "-")  in \(formatBytes(live.reduce(0) { $0 + $1.bytesIn }))  out \(formatBytes(live.reduce(0) { $0 + $1.bytesOut }))  lz4 \(String(format: "%.2f", lz4Ratio))x")
        // Jobs first (at most a third of the screen), newest running first, then the latest finished.
        let finished = status.jobs.filter { $0.state.isFinal }.suffix(3)
        let shown = (running.reversed() + finished.reversed()).prefix(max(2, (height - 8) / 3))
        lines.append(pad("JOB", 6) + pad("NAME", 16) + pad("STATE", 10) + "PROGRESS")
        for j in shown {
            let f = j.progressFraction
            var info = String(format: " %3.0f%%", f * 100)
            if j.steps > 0 { info += " step \(j.step)/\(j.steps)" + (j.loss.isFinite ? String(format: " loss %.3f", j.loss) : "") }
            else { info += " \(j.done)/\(j.total)" }
            info += j.eta.map { " ETA \(formatDuration(UInt64($0 * 1e9)))" } ?? " \(formatDuration(j.elapsed))"
            // (the bar takes what the line has left after the job's numbers, so the ETA is never cut off)
            let barWidth = max(10, width - 6 - 16 - 10 - 2 - info.count)
            let filled = Int((f * Double(barWidth)).rounded(.down))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: barWidth - filled)
            lines.append(pad("\(j.id)", 6) + pad(j.name, 16) + pad(j.state.description, 10) + "[" + bar + "]" + info)
        }
        if shown.isEmpty { lines.append("(no jobs yet)") }
        lines.append("")
        lines.append(pad("WORKER", 8) + pad("HOST", 13) + pad("STATE", 11) + pad("CPU%", 6) + pad("MEM", 8) + pad("SHARDS", 7)
                     + pad("ITEMS/S", 9) + pad("RTT", 9) + pad("IN", 8) + pad("OUT", 8) + pad("LZ4", 6) + "BLAS")
        let rows = max(1, height - lines.count - 1)
        let ordered = sorted(status.workers)
        for w in ordered.prefix(rows) {
            lines.append(pad(w.id, 8) + pad(w.host, 13) + pad(w.state, 11) + pad(String(format: "%.0f", w.cpu), 6)
                         + pad(formatBytes(w.rss), 8) + pad("\(w.inFlight)", 7) + pad(w.throughput == 0 ? "-" : formatRate(w.throughput), 9)
                         + pad(w.rtt == 0 ? "-" : formatDuration(w.rtt), 9) + pad(formatBytes(w.bytesIn), 8) + pad(formatBytes(w.bytesOut), 8)
                         + pad(String(format: "%.2f", w.compressionRatio), 6) + w.blasLabel())
        }
        if ordered.count > rows { lines.append("… \(ordered.count - rows) more workers (enlarge the terminal, or: sigma workers)") }
        if status.workers.isEmpty { lines.append("(no workers; join one with: sigma worker --coordinator tcp://COORDINATOR:7700)") }
        lines += blasWarnings(status.workers).prefix(3)
        return lines.map { $0.count > width ? String($0.prefix(width)) : $0 }
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

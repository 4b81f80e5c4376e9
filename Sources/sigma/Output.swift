import Foundation
import SigmaDashboard
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTerminal

/// Live progress on a terminal (one redrawn line) or plain lines when stderr is not a terminal.
final class ProgressLine: @unchecked Sendable {
    let isTTY = isatty(STDERR_FILENO) == 1
    let started = Date()
    var lastPlain = -1
    /// Items (rows, lines) in the whole job when the client knows them: throughput is then shown in items/s.
    let items: UInt64?
    let unit: String

    init(items: UInt64? = nil, unit: String = "rows") {
        self.items = items
        self.unit = unit
    }

    /// Whether the "no worker" line was written (once per wait).
    var saidWaiting = false

    /// `workers`: live workers taking shards (nil: not known); with none, the line says the job waits for one.
    func update(done: UInt32, total: UInt32, running: UInt32, reruns: UInt32, workers: UInt32? = nil) {
        if let w = workers, w == 0, done < total {
            if !saidWaiting {
                saidWaiting = true
                FileHandle.standardError.write(Data(((isTTY ? "\r\u{1B}[K" : "") + "waiting: no worker is connected to the coordinator; start one with: sigma worker --coordinator ENDPOINT\n").utf8))
            }
        } else if workers != nil {
            saidWaiting = false
        }
        let frac = total == 0 ? 0 : Double(done) / Double(total)
        let elapsed = Date().timeIntervalSince(started)
        let eta = Pace.secondsLeft(elapsed: elapsed, done: Double(done), total: Double(total)).map { String(format: " ETA %.1fs", $0) } ?? ""
        let extra = reruns > 0 ? " (\(reruns) re-run)" : ""
        let rate = elapsed > 0 ? "  " + ProgressText.throughput(done: done, total: total, items: items, unit: unit, seconds: elapsed) : ""
        if isTTY {
            let width = 30
            let filled = Int(frac * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            let line = String(format: "\r%@ %3.0f%%  %u/%u shards  %u running%@  %.1fs%@%@\u{1B}[K",
                              bar, frac * 100, done, total, running, rate, elapsed, eta, extra)
            FileHandle.standardError.write(Data(line.utf8))
        } else {
            let step = Int(frac * 10)
            if step != lastPlain {
                lastPlain = step
                FileHandle.standardError.write(Data(String(format: "progress: %u/%u shards (%.0f%%)%@ %.1fs%@\n",
                                                           done, total, frac * 100, rate, elapsed, extra).utf8))
            }
        }
    }

    func finish() {
        if isTTY { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

func jsonString(_ object: Any) -> String { jsonText(object, pretty: true) }

extension JobOutcome {
    /// The map-reduce result carried by this outcome, if it completed.
    var mapReduce: MapReduceResult? {
        guard state == .completed, !payload.isEmpty else { return nil }
        return try? payload.withUnsafeBytes { try MapReduceResult.decode($0) }
    }

    var jsonObject: [String: Any] {
        var o: [String: Any] = ["job": Int(job), "state": state.description, "shards": Int(shards),
                                "duplicates": Int(duplicates), "reruns": Int(reruns), "elapsed_s": Double(elapsed) / 1e9]
        if !error.isEmpty { o["error"] = error }
        return o
    }
}



/// Prints a line and flushes, so stdout and the progress on stderr interleave in order.
func say(_ s: String) {
    print(s)
    fflush(nil)
}

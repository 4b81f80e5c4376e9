import ArgumentParser
import Foundation
import SigmaClient
import SigmaModel
import SigmaProtocol

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the coordinator's workers (cores, shards in flight, RTT, last heartbeat) and jobs.",
        discussion: """
        Example:
          sigma status
          sigma status --json | jq '.workers[].rtt_us'
        """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Coordinator endpoint (default from cluster.yaml, else tcp://127.0.0.1:7700).") var coordinator: String?
    @Flag(help: "Print machine-readable JSON.") var json = false
    @Option(help: "Seconds to wait for an answer.") var timeout: Double = 5

    func run() async throws {
        do {
            let cfg = try common.load()
            let client = try SigmaClient(endpoint: coordinator ?? cfg.coordinator)
            defer { client.close() }
            let s = try await mapClientError { try await client.status(timeout: timeout) }
            if json {
                print(jsonString(s.jsonObject))
            } else {
                print(s.table)
            }
        } catch {
            exitWith(error)
        }
    }
}

extension ClusterStatus {
    var jsonObject: [String: Any] {
        [
            "build": build, "uptime_s": Double(uptime) / 1e9, "queued_shards": Int(queuedShards), "policy": policy,
            "workers": workers.map { w in
                ["id": w.id, "name": w.name, "host": w.host, "cores": Int(w.cores), "slots": Int(w.slots), "state": w.state,
                 "in_flight": Int(w.inFlight), "rtt_us": Double(w.rtt) / 1e3, "last_seen_ms": Double(w.lastSeen) / 1e6,
                 "shards_done": Int(w.shardsDone), "throughput_items_per_s": w.throughput, "bandwidth_bytes_per_s": w.bandwidth,
                 "bytes_in": Int(w.bytesIn), "bytes_out": Int(w.bytesOut)] as [String: Any]
            },
            "jobs": jobs.map { j in
                ["id": Int(j.id), "name": j.name, "kind": j.kind, "state": j.state.description, "done": Int(j.done),
                 "total": Int(j.total), "running": Int(j.running), "reruns": Int(j.reruns), "duplicates": Int(j.duplicates),
                 "elapsed_s": Double(j.elapsed) / 1e9, "error": j.error] as [String: Any]
            },
        ]
    }

    var table: String {
        var out = "coordinator \(build), up \(formatDuration(uptime)), policy \(policy), \(queuedShards) shards queued\n\n"
        out += "WORKERS (\(workers.filter { $0.state != "dead" }.count) live)\n"
        let ww = [5, 16, 16, 6, 6, 9, 10, 9, 12, 12, 8]
        out += pad(["ID", "NAME", "HOST", "CORES", "SLOTS", "STATE", "IN-FLIGHT", "RTT", "ITEMS/S", "LAST-SEEN", "DONE"], ww) + "\n"
        for w in workers {
            out += pad([w.id, w.name, w.host, "\(w.cores)", "\(w.slots)", w.state, "\(w.inFlight)",
                        w.rtt == 0 ? "-" : formatDuration(w.rtt), w.throughput == 0 ? "-" : formatRate(w.throughput),
                        formatDuration(w.lastSeen) + " ago", "\(w.shardsDone)"], ww) + "\n"
        }
        out += "\nJOBS (latest \(jobs.count))\n"
        let jw = [5, 16, 11, 10, 18, 8, 7, 9]
        out += pad(["ID", "NAME", "KIND", "STATE", "PROGRESS", "RUNNING", "RERUNS", "ELAPSED"], jw) + "\n"
        for j in jobs {
            let pct = j.total == 0 ? 0 : Int(Double(j.done) / Double(j.total) * 100)
            out += pad(["\(j.id)", j.name, j.kind, j.state.description, "\(j.done)/\(j.total) (\(pct)%)", "\(j.running)",
                        "\(j.reruns)", formatDuration(j.elapsed)], jw) + "\n"
            if !j.error.isEmpty { out += "    error: \(j.error)\n" }
        }
        return out
    }
}

private func pad(_ cols: [String], _ widths: [Int]) -> String {
    return cols.enumerated().map { i, c in
        let w = i < widths.count ? widths[i] : 8
        return c.count >= w ? c + " " : c + String(repeating: " ", count: w - c.count)
    }.joined()
}

/// 1234567 → "1.23M", 4321 → "4.3k".
func formatRate(_ r: Double) -> String {
    if r >= 1e6 { return String(format: "%.2fM", r / 1e6) }
    if r >= 1e3 { return String(format: "%.1fk", r / 1e3) }
    return String(format: "%.0f", r)
}

import ArgumentParser
import Foundation
import SigmaClient
import SigmaDashboard
import SigmaModel
import SigmaProtocol
import SigmaTerminal

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
    @OptionGroup var keys: KeyOptions
    @Option(help: "Coordinator endpoint, tcp://HOST:PORT (default: $SIGMA_COORDINATOR, else cluster.yaml, else tcp://127.0.0.1:7700).") var coordinator: String?
    @Flag(help: "Print machine-readable JSON.") var json = false
    @Option(help: "Seconds to wait for an answer.") var timeout: Double = 5

    func run() async throws {
        do {
            let cfg = try common.load()
            let client = try keys.client(given: coordinator, cfg)
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
    var table: String {
        var out = "coordinator \(build), up \(formatDuration(uptime)), policy \(policy), \(queuedShards) shards queued\n\n"
        out += "WORKERS (\(workers.filter { $0.state != "dead" }.count) live)\n"
        let ww = [5, 16, 16, 6, 6, 9, 10, 9, 12, 12, 8]
        out += columns(["ID", "NAME", "HOST", "CORES", "SLOTS", "STATE", "IN-FLIGHT", "RTT", "ITEMS/S", "LAST-SEEN", "DONE"], ww) + "\n"
        for w in workers {
            out += columns([w.id, w.name, w.host, "\(w.cores)", "\(w.slots)", w.state, "\(w.inFlight)",
                        w.rtt == 0 ? "-" : formatDuration(w.rtt), w.throughput == 0 ? "-" : formatRate(w.throughput),
                        formatDuration(w.lastSeen) + " ago", "\(w.shardsDone)"], ww) + "\n"
        }
        out += "\nJOBS (latest \(jobs.count))\n"
        let jw = [5, 16, 11, 10, 18, 8, 7, 9]
        out += columns(["ID", "NAME", "KIND", "STATE", "PROGRESS", "RUNNING", "RERUNS", "ELAPSED"], jw) + "\n"
        for j in jobs {
            let pct = j.total == 0 ? 0 : Int(Double(j.done) / Double(j.total) * 100)
            out += columns(["\(j.id)", j.name, j.kind, j.state.description, "\(j.done)/\(j.total) (\(pct)%)", "\(j.running)",
                        "\(j.reruns)", formatDuration(j.elapsed)], jw) + "\n"
            if !j.error.isEmpty { out += "    error: \(j.error)\n" }
        }
        return out
    }
}



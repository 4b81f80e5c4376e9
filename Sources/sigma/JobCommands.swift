import ArgumentParser
import Foundation
import SigmaClient
import SigmaDashboard
import SigmaModel
import SigmaProtocol
import SigmaTerminal

/// Flags of every command that talks to a coordinator.
struct ClientOptions: ParsableArguments {
    @Option(help: "Coordinator endpoint, tcp://HOST:PORT (default: $SIGMA_COORDINATOR, else cluster.yaml, else tcp://127.0.0.1:7700).") var coordinator: String?
    @Option(help: "Seconds to wait for an answer.") var timeout: Double = 5
    @Flag(help: "Print machine-readable JSON on stdout.") var json = false
    @OptionGroup var keys: KeyOptions

    /// `probe`: fail at once when nothing listens there (not when riding out a restart).
    func connect(_ common: CommonOptions, probe: Bool = true) throws -> SigmaClient {
        let cfg = try common.load()
        return try keys.client(try coordinatorEndpoint(coordinator, cfg), cfg, probe: probe)
    }

    /// One request: connect, ask, close; client errors become CLI errors with their exit codes.
    func ask<T>(_ common: CommonOptions, _ body: (SigmaClient, Double) async throws -> T) async throws -> T {
        let c = try connect(common)
        defer { c.close() }
        return try await mapClientError { try await body(c, timeout) }
    }
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs",
        abstract: "List the coordinator's jobs (latest 100): state, progress, re-runs, elapsed time.",
        discussion: """
        Example:
          sigma jobs
          sigma jobs --json | jq '.[] | select(.state == "failed")'
        Next: sigma job ID (one job in depth), sigma logs ID, sigma cancel ID.
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions

    func run() async throws {
        do {
            let s = try await client.ask(common) { try await $0.status(timeout: $1) }
            if client.json {
                print(jsonString(s.jobs.map(\.jsonObject)))
            } else {
                print(ClusterStatus.jobsTable(s.jobs), terminator: "")
            }
        } catch { exitWith(error) }
    }
}

struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers",
        abstract: "List the coordinator's workers: state, CPU, memory, shards in flight, throughput, RTT, bytes.",
        discussion: """
        Example:
          sigma workers
          sigma workers --json | jq '.[] | {id, cpu_percent, rtt_us}'
        Next: sigma worker --drain ID (let a worker finish and leave), sigma top (live view).
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions

    func run() async throws {
        do {
            let s = try await client.ask(common) { try await $0.status(timeout: $1) }
            if client.json {
                print(jsonString(s.workers.map(\.jsonObject)))
            } else {
                print(ClusterStatus.workersTable(s.workers), terminator: "")
            }
        } catch { exitWith(error) }
    }
}

struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "Show one job in depth: state, progress, policy, digests; with --shards every shard attempt's provenance.",
        discussion: """
        Example:
          sigma job 12
          sigma job 12 --shards            # each shard attempt: worker, host, times
          sigma job 12 --shards --json
        Times are seconds since the job was submitted. Next: sigma logs 12, sigma trace 12 -o trace.json.
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Job id (from sigma submit or sigma jobs).") var job: UInt64
    @Flag(help: "List every shard attempt.") var shards = false

    func run() async throws {
        do {
            // (and the live workers: a job that has not ended waits while there are none)
            let (d, workers) = try await client.ask(common) { c, timeout -> (JobDetail, Int) in
                (try await c.detail(job: job, attempts: shards, timeout: timeout),
                 try await c.status(timeout: timeout).workers.filter { $0.state != "dead" && $0.state != "draining" }.count)
            }
            if client.json {
                var o = d.jsonObject(attempts: shards)
                o["live_workers"] = workers
                print(jsonString(o))
            } else {
                print(d.text(shards: shards), terminator: "")
                if workers == 0, !d.job.state.isFinal {
                    print("waiting: no worker is connected to the coordinator; start one with: sigma worker --coordinator ENDPOINT")
                }
            }
        } catch { exitWith(error) }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a job's log (what the coordinator logged about it); -f follows it until the job ends.",
        discussion: """
        Example:
          sigma logs 12
          sigma logs -f 12                 # rides out coordinator restarts
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Job id.") var job: UInt64
    @Flag(name: [.short, .customLong("follow")], help: "Keep printing new lines until the job ends.") var follow = false

    func run() async throws {
        do {
            var next: UInt32 = 0
            var c = try client.connect(common)
            defer { c.close() }
            var lostSince: Date? = nil
            var reached = false   // (the coordinator has answered this command once)
            while true {
                let d: JobDetail
                do {
                    // (following: a lost coordinator is noticed within 3 s)
                    d = try await c.detail(job: job, logFrom: next, timeout: follow ? min(client.timeout, 3) : client.timeout)
                    lostSince = nil
                    reached = true
                } catch let e as ClientError {
                    // Following: ride out a coordinator restart (a fresh connection each retry), for up to 2 minutes —
                    // no answer, or (once it has answered before) a connection cut short while it restarts.
                    var retry = false
                    switch e {
                    case .noAnswer: retry = follow
                    case .connection: retry = follow && reached
                    default: break
                    }
                    guard retry else { _ = try await mapClientError { throw e } ; return }
                    let since = lostSince ?? Date()
                    if lostSince == nil {
                        FileHandle.standardError.write(Data("coordinator at \(c.endpoint) unreachable, retrying (job \(job); a restarted coordinator with its journal answers again)\n".utf8))
                    }
                    lostSince = since
                    if Date().timeIntervalSince(since) >= 120 {
                        _ = try await mapClientError { throw ClientError.lost(job: job, endpoint: c.endpoint, seconds: Date().timeIntervalSince(since)) }
                        return
                    }
                    c.close()
                    c = try client.connect(common, probe: false)
                    continue
                }
                if d.logFrom > next { print("… \(d.logFrom - next) older line(s) no longer kept") }
                for l in d.logs {
                    if client.json {
                        print(jsonString(["at_s": Double(l.at) / 1e9, "level": "\(l.level)", "text": l.text]).replacingOccurrences(of: "\n", with: ""))
                    } else {
                        print(String(format: "%9.3fs %@ %@", Double(l.at) / 1e9, "\(l.level)".padding(toLength: 7, withPad: " ", startingAt: 0), l.text))
                    }
                }
                fflush(nil)
                next = d.logTotal
                if !follow || d.job.state.isFinal { return }
                try await Task.sleep(nanoseconds: 500_000_000)
            }
        } catch { exitWith(error) }
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a job: its queued shards are dropped and running ones stopped on the workers.",
        discussion: """
        Example:
          sigma cancel 12
        Cancelling a job that already ended changes nothing and says how it ended (exit code 0).
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Job id.") var job: UInt64

    func run() async throws {
        do {
            let p = try await client.ask(common) { try await $0.cancel(job: job, timeout: $1) }
            if client.json {
                print(jsonString(["job": Int(p.job), "state": p.state.description, "done": Int(p.done), "total": Int(p.total)]))
            } else {
                print("job \(p.job) \(p.state) (\(p.done)/\(p.total) shards done)")
            }
        } catch { exitWith(error) }
    }
}

struct TraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Write a job's shard timeline as a Chrome trace (chrome://tracing, Perfetto): one track per worker slot.",
        discussion: """
        Example:
          sigma trace 12 -o trace.json
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Job id.") var job: UInt64
    @Option(name: [.short, .customLong("output")], help: "Trace file to write.") var output: String = "trace.json"

    func run() async throws {
        do {
            let d = try await client.ask(common) { try await $0.detail(job: job, attempts: true, timeout: $1) }
            let trace = d.chromeTrace
            do { try Data(jsonString(trace).utf8).write(to: URL(fileURLWithPath: output)) } catch {
                throw CLIError.usage("cannot write \(output): \(error.localizedDescription)")
            }
            let events = (trace["traceEvents"] as? [Any])?.count ?? 0
            if client.json {
                print(jsonString(["job": Int(job), "file": output, "events": events, "attempts": d.attempts.count]))
            } else {
                print("wrote \(output): \(d.attempts.count) shard attempts on \(Set(d.attempts.map(\.worker)).count) workers (open in chrome://tracing or ui.perfetto.dev)")
            }
        } catch { exitWith(error) }
    }
}

// MARK: rendering

extension ClusterStatus {
    static func jobsTable(_ jobs: [Job]) -> String {
        let jw = [5, 18, 11, 10, 18, 8, 7, 18, 9, 8]
        var out = columns(["ID", "NAME", "KIND", "STATE", "PROGRESS", "RUNNING", "RERUNS", "RATE", "ELAPSED", "ETA"], jw) + "\n"
        for j in jobs {
            let prog = j.position.map(\.description) ?? "\(j.done)/\(j.total) (\(Int(j.progressFraction * 100))%)"
            out += columns(["\(j.id)", j.name, j.kind, j.state.description, prog, "\(j.running)", "\(j.reruns)",
                            j.recentRate.map { formatRate($0) + " \(j.itemUnit)/s" } ?? "-", formatDuration(j.elapsed), j.eta.map { formatDuration(UInt64($0 * 1e9)) } ?? "-"], jw) + "\n"
            if !j.error.isEmpty { out += "    error: \(j.error)\n" }
        }
        if jobs.isEmpty { out += "(no jobs; submit one with: sigma submit SPEC)\n" }
        return out
    }

}


extension JobDetail {
    func text(shards: Bool) -> String {
        let j = job
        var out = "job \(j.id) '\(j.name)' (\(j.kind)): \(j.state)\n"
        if !j.key.isEmpty { out += "  client id    \(j.key)\n" }
        // (a train job in steps; its shards — one step's — only with --shards)
        out += "  progress     " + (j.position.map { $0.description + (shards ? " (this step: \(j.done)/\(j.total) shards)" : "") } ?? "\(j.done)/\(j.total) shards") + "\n"
        if j.steps > 0, j.loss.isFinite { out += String(format: "  loss         %.5f", j.loss) + (j.accuracy.isFinite ? String(format: "   held-out accuracy %.4f", j.accuracy)
                                                                                        : j.evalLoss.isFinite ? String(format: "   held-out loss %.4g", j.evalLoss) : "") + "\n" }
        out += "  elapsed      \(formatDuration(j.elapsed))" + (j.eta.map { "   ETA \(formatDuration(UInt64($0 * 1e9)))" } ?? "")
            + (j.recentRate.map { "   \(formatRate($0)) \(j.itemUnit)/s over the last 10 s" } ?? "") + "\n"
        out += "  re-runs      \(j.reruns)   hedges \(j.hedges) (won \(j.hedgesWon))   late results dropped \(j.duplicates)\n"
        out += "  policy       \(policy)\n"
        out += "  digests      spec \(specDigest)   input \(inputDigest.isEmpty ? "-" : inputDigest)   model \(modelDigest.isEmpty ? "-" : modelDigest)\n"
        if !j.error.isEmpty { out += "  error        \(j.error)\n" }
        guard shards else { return out + "shard attempts: sigma job \(j.id) --shards; log: sigma logs \(j.id)\n" }
        out += "\n"
        let w = [6, 7, 8, 16, 8, 14, 9, 9, 9, 9, 10]
        out += columns(["STEP", "SHARD", "ATTEMPT", "RANGE", "WORKER", "HOST", "QUEUED", "STARTED", "FINISHED", "COMPUTE", "OUTCOME"], w) + "\n"
        for a in attempts {
            let f = a.outcome == .running ? "-" : String(format: "%.3f", Double(a.finished) / 1e9)
            out += columns(["\(a.round + 1)", "\(a.shard)", "\(a.attempt)" + (a.hedge ? "h" : ""), "\(a.start)..<\(a.start + a.count)",
                            a.worker, a.host, String(format: "%.3f", Double(a.queued) / 1e9), String(format: "%.3f", Double(a.started) / 1e9),
                            f, String(format: "%.3f", Double(a.compute) / 1e9), a.outcome.description + (a.error.isEmpty ? "" : ": \(a.error)")], w) + "\n"
        }
        if attemptsDropped > 0 { out += "(\(attemptsDropped) later attempts not recorded: the per-job bound was reached)\n" }
        return out
    }

}


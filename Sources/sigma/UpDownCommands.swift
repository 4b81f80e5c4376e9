import ArgumentParser
import Foundation
import SigmaClient
import SigmaModel
import SigmaTransport

/// Runs one deploy step (ssh …) and returns its exit status and output.
func runStep(_ step: DeployPlan.Step, timeout: Double) -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = step.argv
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return (127, "cannot run \(step.argv.first ?? "ssh"): \(error)") }
    let reader = OutputCollector(out.fileHandleForReading)
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning {
        p.terminate()
        return (124, "no answer from \(step.host) within \(Int(timeout)) s")
    }
    p.waitUntilExit()
    return (p.terminationStatus, reader.text().trimmingCharacters(in: .whitespacesAndNewlines))
}

/// cluster.yaml with a usable `hosts:` list, or a usage error naming every problem.
func deployConfig(_ common: CommonOptions) throws -> ClusterConfig {
    let cfg = try common.load()
    let problems = DeployPlan.check(cfg)
    guard problems.isEmpty else { throw CLIError.usage(problems.joined(separator: "; ")) }
    return cfg
}

struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start the cluster cluster.yaml describes: the coordinator and every host's workers, over SSH.",
        discussion: """
        Example (cluster.yaml):
          hosts:
            - {host: admin@10.0.0.5, coordinator: true}
            - {host: 10.0.0.6, workers: 2, key: /etc/sigma/keys/b.key}
          ssh: {binary: /usr/local/bin/sigma}
        then: sigma up; sigma status; sigma down
        Each process runs under nohup with its pid and log in run_dir on its host
        (default ~/.local/state/sigma/cluster, made 0700; refused if another user
        owns it or others may write to it); sigma up refuses to start a second
        copy. It waits for the workers to join.
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Option(help: "Seconds to wait for all workers to join (0: do not wait).") var wait: Double = 60
    @Flag(help: "Print what would run on each host, run nothing.") var dryRun = false

    func run() async throws {
        do {
            let cfg = try deployConfig(common)
            let steps = DeployPlan.up(cfg)
            if dryRun {
                for s in steps { print(s) }
                return
            }
            var failed: [String] = []
            for (i, s) in steps.enumerated() {
                let (status, output) = runStep(s, timeout: 60)
                print("\(s.host): \(output.isEmpty ? s.what : output)")
                if status != 0 {
                    failed.append("\(s.what) on \(s.host) (exit \(status))")
                    if i == 0 { throw CLIError.jobFailed("the coordinator did not start on \(s.host): \(output) — nothing else started") }
                }
            }
            let expected = cfg.hosts.reduce(0) { $0 + $1.workers } - failed.count
            guard let endpoint = DeployPlan.endpoint(cfg), wait > 0 else {
                if !failed.isEmpty { throw CLIError.jobFailed("not started: \(failed.joined(separator: ", "))") }
                return
            }
            let client = try keys.client(endpoint, cfg)
            defer { client.close() }
            let deadline = Date().addingTimeInterval(wait)
            var live = 0
            while Date() < deadline {
                if let s = try? await client.status(timeout: 2) {
                    live = s.workers.filter { $0.state != "dead" }.count
                    if live >= expected { break }
                }
                try await Task.sleep(nanoseconds: 250_000_000)
            }
            print("cluster up: \(live) of \(expected) worker(s) joined the coordinator at \(endpoint)")
            if !failed.isEmpty { throw CLIError.jobFailed("not started: \(failed.joined(separator: ", "))") }
            if live < expected {
                throw CLIError.unreachable("only \(live) of \(expected) workers joined within \(Int(wait)) s; see the logs in \(cfg.ssh.runDirectory) on their hosts")
            }
        } catch { exitWith(error) }
    }
}

struct DownCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down",
        abstract: "Stop every process `sigma up` started: workers first (they drain), then the coordinator.",
        discussion: """
        Example:
          sigma down                   # uses ./cluster.yaml
          sigma down --config prod.yaml
        Only a process still the one its pid file in run_dir records (pid, start
        time, executable) is signalled: SIGTERM, again after 10 s, SIGKILL after 15 s.
        """)

    @OptionGroup var common: CommonOptions
    @Flag(help: "Print what would run on each host, run nothing.") var dryRun = false

    func run() async throws {
        do {
            let cfg = try deployConfig(common)
            var failed: [String] = []
            for s in DeployPlan.down(cfg) {
                if dryRun {
                    print(s)
                    continue
                }
                let (status, output) = runStep(s, timeout: 60)
                for line in output.split(separator: "\n") { print("\(s.host): \(line)") }
                if status != 0 { failed.append("\(s.host): \(output.isEmpty ? "exit \(status)" : output)") }
            }
            if !failed.isEmpty { throw CLIError.unreachable("could not stop everything: \(failed.joined(separator: "; "))") }
        } catch { exitWith(error) }
    }
}

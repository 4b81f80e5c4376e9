import ArgumentParser
import Foundation
import SigmaCoordinatorCore
import SigmaModel
import SigmaSimulator

/// `sigma simulate SCENARIO.yaml`: the real coordinator core on a simulated clock and network.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the real scheduler against simulated workers (speed, RTT, bandwidth, failures).",
        discussion: """
        Example:
          sigma simulate scenarios/heterogeneous.yaml
          sigma simulate scenarios/heterogeneous.yaml --policy round-robin
        Prints the makespan, the lower bound no schedule can beat, per-worker utilisation, hedges, re-runs and the
        coordinator core's cost per placement decision. Simulated time is deterministic.
        """)

    @Argument(help: "Scenario file (YAML; see docs/scheduling.md).") var scenario: String
    @Option(help: "Override the scenario's policy: round-robin, least-loaded, latency-aware.") var policy: String?
    @Flag(help: "Turn hedging off.") var noHedging = false

    func run() throws {
        do {
            guard let text = try? String(contentsOfFile: scenario, encoding: .utf8) else {
                throw CLIError.usage("cannot read scenario file '\(scenario)'")
            }
            var s = try Scenario.parse(text)
            if let p = policy { s.policy = try SchedulingPolicy.parse(p) }
            if noHedging { s.hedging = false }
            let r = Simulation(s).run()
            let job = s.train.map { "train MLP \($0.layers.map(String.init).joined(separator: "-")) (\($0.parameters) parameters), \($0.steps) steps of \($0.microBatches) micro-batches" }
                ?? "\(s.shards) shards × \(s.rowsPerShard) rows"
            print("scenario \(s.name): \(s.workers.count) workers, \(job), policy \(s.policy.rawValue)\(s.hedging ? ", hedging" : "")")
            print(String(format: "makespan %.3f s   lower bound %.3f s   ratio %.3f", r.makespan, r.lowerBound, r.makespan / r.lowerBound))
            print("job \(r.completed ? "completed" : "FAILED: \(r.error)"); hedges \(r.hedges) (won \(r.hedgesWon)), re-runs \(r.reruns), duplicates \(r.duplicates)")
            print(String(format: "tail (last dispatch → end) %.3f s", r.tail))
            print(String(format: "core: %d decisions, %.2f µs per decision (all core work / decisions); wall %.2f s", r.decisions,
                         r.decisions > 0 ? r.coreSeconds / Double(r.decisions) * 1e6 : 0, r.wallSeconds))
            if s.train != nil {
                print(String(format: "core per step: %.3f ms, %d messages (%.2f µs each, all core work / messages)", r.coreSeconds / Double(r.steps) * 1e3,
                             r.messages / r.steps, r.messages > 0 ? r.coreSeconds / Double(r.messages) * 1e6 : 0))
            }
            let shown = r.workers.prefix(20)
            for w in shown { print(String(format: "  %-12@ %6d shards  %5.1f %% busy", w.name as NSString, w.shards, w.utilisation * 100)) }
            if r.workers.count > shown.count { print("  … \(r.workers.count - shown.count) more workers") }
            if !r.completed { throw ExitCode(1) }
        } catch let e as ExitCode {
            throw e
        } catch {
            exitWith(error)
        }
    }
}

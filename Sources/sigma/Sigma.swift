import ArgumentParser
import Foundation
import Synchronization
import Logging
import SigmaEngine
import SigmaModel
import SigmaProtocol

@main
struct Sigma: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma",
        abstract: "Sigma: a distributed map-reduce compute cluster for machine-learning jobs.",
        discussion: """
        Start a coordinator, join workers to it, submit jobs:
          sigma coordinator                       # binds tcp://127.0.0.1:7700
          sigma worker --coordinator tcp://HOST:7700     # on each worker host
          sigma submit job.yaml --follow          # progress, then the result
          sigma status                            # workers and jobs
          sigma demo                              # all on this machine, one command

        Exit codes: 0 success; 1 the job failed; 2 bad input (spec, config, flags); 3 the coordinator cannot be reached.
        """,
        version: sigmaBuild + " (SGP/\(sigmaProtocolVersion))",
        subcommands: [CoordinatorCommand.self, WorkerCommand.self, SubmitCommand.self, StatusCommand.self, JobsCommand.self, JobCommand.self,
                      LogsCommand.self, CancelCommand.self, ResultsCommand.self, WorkersCommand.self, TraceCommand.self, TopCommand.self,
                      DemoCommand.self, UpCommand.self, DownCommand.self, KeygenCommand.self, DeployCommand.self, UndeployCommand.self, DeploymentsCommand.self, PredictCommand.self, TrainCommand.self, EmbedCommand.self, SimulateCommand.self, BenchCommand.self, EchoServerCommand.self]
    )

    /// Chooses OpenBLAS's kernel set before a command that computes runs (so before any BLAS call and any other
    /// thread), then runs the command. See docs/architecture.md, "How the BLAS kernel set is chosen". Commands that
    /// only talk to a coordinator (status, jobs, top, …) skip it: it reads /proc/cpuinfo and, when it switches,
    /// checks products — work a client never needs.
    static func main() async {
        if let command = CommandLine.arguments.dropFirst().first, computing.contains(command) { _ = BLASKernels.startup }
        // (ArgumentParser's own main, with its usage errors on the documented exit code 2 rather than 64)
        do {
            var command = try parseAsRoot(nil)
            if var run = command as? AsyncParsableCommand { try await run.run() } else { try command.run() }
        } catch {
            if exitCode(for: error) == .validationFailure {
                let names = configuration.subcommands.compactMap { $0.configuration.commandName }
                if let word = CommandLine.arguments.dropFirst().first, !word.hasPrefix("-"), !names.contains(word) {
                    FileHandle.standardError.write(Data(("sigma: unknown command '\(word)'" + (nearest(word, among: names).map { "; did you mean '\($0)'?" } ?? "")
                                                         + " (sigma --help lists the commands)\n").utf8))
                } else {
                    FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                }
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }

    /// The commands that run the engine (or report the kernel set).
    static let computing: Set<String> = ["worker", "coordinator", "submit", "train", "embed", "demo", "bench"]
}

/// Flags every command shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Cluster config file (default: ./cluster.yaml if present).")
    var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, warning, error (default: info; demo: warning).")
    var logLevel: String?

    func load() throws -> ClusterConfig {
        let path = config ?? (FileManager.default.fileExists(atPath: "cluster.yaml") ? "cluster.yaml" : nil)
        guard let p = path else { return ClusterConfig() }
        do { return try ClusterConfig.load(path: p) } catch let e as SpecError {
            throw CLIError.usage(e.field == "(file)" ? e.problem : "\(e.field): \(e.problem)")
        }
    }

    func bootstrapLogging(default fallback: Logger.Level = .info) {
        let level = logLevel.flatMap { Logger.Level(rawValue: $0) } ?? fallback
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// Errors the CLI reports, with their exit codes.
enum CLIError: Error, CustomStringConvertible {
    case usage(String)
    case unreachable(String)
    case jobFailed(String)

    var description: String {
        switch self {
        case .usage(let s), .unreachable(let s), .jobFailed(let s): s
        }
    }

    var exitCode: Int32 {
        switch self {
        case .usage: 2
        case .unreachable: 3
        case .jobFailed: 1
        }
    }
}

/// Prints the error and exits with its code (ArgumentParser's own errors keep theirs).
func exitWith(_ error: Error) -> Never {
    if let e = error as? CLIError {
        FileHandle.standardError.write(Data("sigma: \(withGivenEndpoint("\(e)"))\n".utf8))
        exit(e.exitCode)
    }
    Sigma.exit(withError: error)
}

/// The endpoint this command was given with `--coordinator` (nil: none, or the default's): hints in messages ("list
/// jobs with: sigma jobs") then repeat it, so the command they suggest reaches the same coordinator.
let givenEndpoint = Mutex<String?>(nil)

/// `text` with `--coordinator ENDPOINT` added to each `sigma …` command it suggests that talks to a coordinator.
func withGivenEndpoint(_ text: String) -> String {
    guard let ep = givenEndpoint.withLock({ $0 }),
          let re = try? NSRegularExpression(pattern: "\\bsigma (jobs|workers|status|top|job \\d+|results \\d+|logs (?:-f )?\\d+|cancel \\d+)(?! --coordinator)")
    else { return text }
    return re.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "sigma $1 --coordinator \(ep)")
}

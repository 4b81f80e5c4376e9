import ArgumentParser
import Foundation
import SigmaClient
import SigmaModel
import SigmaProtocol

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a job spec (YAML or JSON) to the coordinator.",
        discussion: """
        Example:
          sigma submit jobs/sum-squares.yaml --follow
          sigma submit jobs/sum-squares.yaml --follow --json > result.json
        Without --follow, prints the job id once the coordinator accepts the job.
        """)

    @OptionGroup var common: CommonOptions
    @Argument(help: "Job spec file (YAML or JSON).") var spec: String
    @Flag(help: "Show progress and wait for the result.") var follow = false
    @Flag(help: "Print machine-readable JSON on stdout.") var json = false
    @Option(help: "Coordinator endpoint (default from cluster.yaml, else tcp://127.0.0.1:7700).") var coordinator: String?
    @Option(help: "Seconds to wait for the coordinator to accept the job.") var timeout: Double = 10

    func run() async throws {
        do {
            let cfg = try common.load()
            let jobSpec: JobSpec
            do { jobSpec = try JobSpec.load(path: spec) } catch { throw CLIError.usage("\(spec): \(error)") }
            let endpoint = coordinator ?? cfg.coordinator
            let client = try SigmaClient(endpoint: endpoint)
            defer { client.close() }
            if !follow {
                let a = try await mapClientError { try await client.submit(jobSpec, timeout: timeout) }
                if json {
                    print(jsonString(["job": Int(a.job), "shards": Int(a.shards), "state": "accepted"]))
                } else {
                    print("job \(a.job) accepted (\(a.shards) shards); follow it with: sigma status")
                }
                return
            }
            let bar = json ? nil : ProgressLine()
            var outcome: JobOutcome? = nil
            try await mapClientError {
                for try await e in client.run(jobSpec, watch: true, acceptTimeout: timeout) {
                    switch e {
                    case .accepted(let a):
                        if !json { FileHandle.standardError.write(Data("job \(a.job) accepted: \(a.shards) shards\n".utf8)) }
                    case .progress(let p):
                        bar?.update(done: p.done, total: p.total, running: p.running, reruns: p.reruns)
                    case .finished(let o):
                        outcome = o
                    }
                }
            }
            bar?.finish()
            guard let o = outcome else { throw CLIError.unreachable("the coordinator closed the job stream without a result") }
            if json {
                print(jsonString(o.jsonObject))
            } else {
                print("job \(o.job) \(o.state) in \(formatDuration(o.elapsed)): \(o.shards) shards, \(o.reruns) re-run, \(o.duplicates) duplicate results dropped")
                if let r = o.mapReduce { for l in r.lines { print("  " + l) } }
                if !o.error.isEmpty { print("  error: \(o.error)") }
            }
            if o.state != .completed { throw CLIError.jobFailed("job \(o.job) \(o.state): \(o.error) (see: sigma status)") }
        } catch {
            exitWith(error)
        }
    }
}

/// Maps client errors to CLI errors with exit codes.
@discardableResult
func mapClientError<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let e as ClientError {
        switch e {
        case .refused(let r) where r.code == ErrorReply.Code.invalidSpec.rawValue || r.code == ErrorReply.Code.badRequest.rawValue:
            throw CLIError.usage("\(e)")
        case .refused(let r) where r.code == ErrorReply.Code.notFound.rawValue:
            throw CLIError.usage("\(e); list jobs with: sigma status")
        case .refused: throw CLIError.jobFailed("\(e)")
        default: throw CLIError.unreachable("\(e)")
        }
    }
}

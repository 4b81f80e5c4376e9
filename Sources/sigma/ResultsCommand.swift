import ArgumentParser
import Foundation
import SigmaClient
import SigmaJobs
import SigmaModel
import SigmaProtocol

struct ResultsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "results",
        abstract: "Fetch a finished job's results and write them into a directory.",
        discussion: """
        Example:
          sigma results 12 -o results/
          sigma results 12                  # into ./sigma-results/NAME-12
        train: model.safetensors, history.json, metrics.json; infer: predictions.npy; eval: predictions.npy and
        metrics.json; embed: embeddings.npy; map-reduce: result.json.
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Argument(help: "Job id (from sigma submit or sigma status).") var job: UInt64
    @Option(name: [.short, .customLong("output")], help: "Directory for the result files (default: ./sigma-results/NAME-ID; -o . for the current folder).") var output: String?
    @Flag(help: "Print machine-readable JSON on stdout.") var json = false
    @Option(help: "Coordinator endpoint, tcp://HOST:PORT (default: $SIGMA_COORDINATOR, else cluster.yaml, else tcp://127.0.0.1:7700).") var coordinator: String?
    @Option(help: "Seconds to wait for an answer.") var timeout: Double = 10

    func run() async throws {
        do {
            let cfg = try common.load()
            let client = try keys.client(given: coordinator, cfg)
            defer { client.close() }
            let o = try await mapClientError { try await client.fetch(job: job, timeout: timeout) }
            guard o.state == .completed else {
                throw CLIError.jobFailed("job \(job) \(o.state): \(o.error) (see: sigma status)")
            }
            // An ML job's payload is a result bundle; a map-reduce job's is its reduced values.
            var files: [(name: String, data: Data)]
            if let bundle = try? MLOutput.files(o) {
                files = bundle
            } else if let r = o.mapReduce {
                files = [("result.json", Data(jsonString(r.jsonObject).utf8))]
            } else {
                throw CLIError.jobFailed("job \(job): the result could not be read")
            }
            let folder: String
            if let output { folder = output } else {
                // (never scattered into the current folder unasked: a folder of the job's own)
                let name = (try? await client.detail(job: job, timeout: timeout).job.name) ?? "job"
                folder = "sigma-results/" + MLOutput.safeName(name) + "-\(job)"
            }
            let summary = try MLOutput.write(files, to: folder)
            if json { print(jsonString(summary)) } else {
                print("job \(job) results:")
                MLOutput.say(summary: summary)
            }
        } catch {
            exitWith(error)
        }
    }
}

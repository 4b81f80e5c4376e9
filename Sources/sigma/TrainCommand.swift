import ArgumentParser
import Foundation
import SigmaJobs
import SigmaModel

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model from a `kind: train` spec in this process (same as `sigma submit SPEC --local`).",
        discussion: """
        Example:
          sigma train examples/train-digits.yaml --local -o results/
        Shows step, loss, samples/s and ETA; writes model.safetensors (PyTorch state-dict names), history.json and
        metrics.json. On a cluster: sigma submit examples/train-digits.yaml --follow.
        """)

    @Argument(help: "Training spec (YAML or JSON).") var spec: String
    @Flag(help: "Train in this process (required; use `sigma submit` for the cluster).") var local = false
    @Flag(help: "Print the result summary as JSON.") var json = false
    @Option(name: [.short, .customLong("output")], help: "Directory for result files (default: the spec's output, else sigma-results/NAME).") var output: String?
    @Option(help: "Continue from this checkpoint.") var resume: String?
    @Option(help: "Cores to compute on: a step's micro-batches run in parallel; the result is the same bits for any count (default: every core).") var threads: Int?

    func run() throws {
        do {
            guard local else { throw CLIError.usage("train runs with --local here; submit to a cluster with: sigma submit \(spec) --follow") }
            var s: JobSpec
            do { s = try JobSpec.load(path: spec) } catch { throw CLIError.usage("\(spec): \(error)") }
            guard var t = TrainKind.spec(in: s) else { throw CLIError.usage("\(spec): kind is '\(s.kind)', expected 'train'") }
            if let r = resume { t.resume = URL(fileURLWithPath: r).standardizedFileURL.path }
            s = .train(t)
            let roots = try MLOutput.localRoots(specFile: spec, extra: resume.map { [URL(fileURLWithPath: $0).deletingLastPathComponent().path] } ?? [])
            try MLOutput.runLocal(s, roots: roots, output: output, json: json, threads: threads)
        } catch {
            exitWith(error)
        }
    }
}

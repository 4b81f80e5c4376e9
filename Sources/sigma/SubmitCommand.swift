import ArgumentParser
import Foundation
import Synchronization
import SigmaClient
import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import SigmaTerminal

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a job spec (YAML or JSON) to the coordinator.",
        discussion: """
        Example:
          sigma submit examples/sum-of-squares.yaml --follow
          sigma submit examples/train-digits.yaml --follow -o results/
          sigma submit examples/train-digits.yaml --local   # in this process
          sigma submit train.yaml --follow --resume ckpt/step-100.safetensors
          # a retry with the same --id answers with the same job:
          sigma submit examples/sum-of-squares.yaml --id nightly-2026-11-23
        Without --follow, prints the job id once the coordinator accepts the job (results: sigma results ID -o DIR).
        Job kinds: map-reduce, train, infer, eval, embed (docs/jobs.md).
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Argument(help: "Job spec file (YAML or JSON).") var spec: String
    @Flag(help: "Show progress and wait for the result.") var follow = false
    @Flag(help: "Print machine-readable JSON on stdout.") var json = false
    @Option(help: "Coordinator endpoint, tcp://HOST:PORT (default: $SIGMA_COORDINATOR, else cluster.yaml, else tcp://127.0.0.1:7700).") var coordinator: String?
    @Option(help: "Seconds to wait for the coordinator to accept the job.") var timeout: Double = 10
    @Option(name: [.short, .customLong("output")], help: "Directory for result files (default: the spec's output, else ./sigma-results/NAME-ID).") var output: String?
    @Flag(help: "Run the job in this process instead of on the cluster (the same shard code and reduction).") var local = false
    @Option(help: "Continue a train job from this checkpoint.") var resume: String?
    @Option(help: "With --local: cores to compute on (micro-batches or batches in parallel; the same bits for any count; default: every core).") var threads: Int?
    @Option(help: "Scheduling policy for this job: latency-aware, least-loaded, round-robin (default: the spec's policy:, else the cluster's).") var policy: String?
    @Option(name: .customLong("id"), help: "A client-chosen id: submitting again with the same id answers with the existing job instead of starting another (safe retries).") var key: String = ""

    func run() async throws {
        do {
            let cfg = try common.load()
            let file: JobFile
            do { file = try JobSpec.loadFile(path: spec, limits: cfg.limits) } catch { throw CLIError.usage("\(spec): \(error)") }
            var jobSpec = file.spec
            if let r = resume {
                guard var t = TrainKind.spec(in: jobSpec) else { throw CLIError.usage("--resume applies to train jobs only") }
                t.resume = URL(fileURLWithPath: r).standardizedFileURL.path
                jobSpec = .train(t)
            }
            if local {
                let roots = try MLOutput.localRoots(specFile: spec, extra: cfg.dataRoots + (resume.map { [URL(fileURLWithPath: $0).deletingLastPathComponent().path] } ?? []))
                try MLOutput.runLocal(jobSpec, roots: roots, limits: cfg.limits, output: output, json: json, threads: threads)
                return
            }
            var policyOption: SubmitOptions = []
            if let p = policy ?? file.policy {   // --policy overrides the spec file's policy:
                do { policyOption = try SchedulingPolicy.parse(p).submitOption } catch { throw CLIError.usage("--policy: \(error)") }
            }
            let endpoint = try coordinatorEndpoint(coordinator, cfg)
            let client = try keys.client(endpoint, cfg)
            defer { client.close() }
            if !follow {
                let a = try await mapClientError { try await client.submit(jobSpec, timeout: timeout, options: policyOption, key: key) }
                if json {
                    print(jsonString(["job": Int(a.job), "shards": Int(a.shards), "state": "accepted"]))
                } else {
                    print(withGivenEndpoint("job \(a.job) accepted (\(Self.size(of: jobSpec, shards: a.shards))); follow it with: sigma job \(a.job)"))
                }
                return
            }
            let known = JobKinds.standard.items(jobSpec)
            let bar = json ? nil : ProgressLine(items: known?.count, unit: known?.unit ?? "rows")
            var trainLine: TrainProgress? = nil
            var trainSteps: (done: Int, planned: Int)? = nil   // (a train job's, from its progress)
            if let t = TrainKind.spec(in: jobSpec), !json { trainLine = TrainProgress(batch: t.batchSize) }
            var outcome: JobOutcome? = nil
            try await mapClientError {
                // Accepted, then followed by id: across a coordinator restart the following goes on (its journal
                // knows the job), saying so while the coordinator is unreachable.
                let a = try await client.submit(jobSpec, timeout: timeout, options: policyOption, key: key)
                if !json { FileHandle.standardError.write(Data("job \(a.job) accepted: \(Self.size(of: jobSpec, shards: a.shards))\n".utf8)) }
                detachOnInterrupt(job: a.job)
                let endpoint = client.endpoint, isJSON = json
                for try await e in client.follow(job: a.job, lost: { s in
                    if !isJSON { FileHandle.standardError.write(Data("\ncoordinator at \(endpoint) unreachable for \(Int(s)) s, retrying (job \(a.job))\n".utf8)) }
                }) {
                    switch e {
                    case .accepted:
                        break
                    case .progress(let p):
                        if p.steps > 0 { trainSteps = (Int(p.step), Int(p.steps)) }
                        if let t = trainLine {
                            if let at = p.position { t.update(at, loss: p.loss, accuracy: p.accuracy, evalLoss: p.evalLoss) }
                        } else {
                            bar?.update(done: p.done, total: p.total, running: p.running, reruns: p.reruns, workers: p.workers)
                        }
                    case .finished(let o):
                        outcome = o
                    }
                }
            }
            if let t = trainLine { t.finish() } else { bar?.finish() }
            guard let o = outcome else { throw CLIError.unreachable("the coordinator closed the job stream without a result") }
            let shown = try MLOutput.report(o, jobSpec).map { try MLOutput.deliver($0, output: output, spec: jobSpec, job: o.job) }
            if json {
                var obj = o.jsonObject
                if let s = shown { obj[s.key] = s.json }
                print(jsonString(obj))
            } else {
                let planned = trainSteps?.planned ?? TrainKind.spec(in: jobSpec)?.steps
                var size = planned.map { o.state == .completed ? "\($0) steps" : "\(trainSteps?.done ?? 0) of \($0) steps" } ?? "\(o.shards) shards"
                // (the whole job's mean, start-up included: a job over within a second or two shows no live rate)
                if let steps = planned, o.state == .completed, o.elapsed > 0, let batch = TrainKind.spec(in: jobSpec)?.batchSize {
                    size += String(format: " (about %.0f samples/s)", Double(steps * batch) / (Double(o.elapsed) / 1e9))
                } else if planned == nil, o.state == .completed, o.elapsed > 0 {
                    size += String(format: " (%.0f shards/s)", Double(o.shards) / (Double(o.elapsed) / 1e9))
                }
                print("job \(o.job) \(o.state) in \(formatDuration(o.elapsed)): \(size), \(o.reruns) re-run, \(o.duplicates) duplicate results dropped")
                for l in shown?.lines ?? [] { print("  " + l) }
                if !o.error.isEmpty { print("  error: \(o.error)") }
            }
            if o.state != .completed { throw CLIError.jobFailed("job \(o.job) \(o.state): \(o.error) (see: sigma status)") }
        } catch {
            exitWith(error)
        }
    }
}

extension SubmitCommand {
    /// What a job is made of, for people: a train job's steps (its first step's shards are not its size), else shards.
    static func size(of spec: JobSpec, shards: UInt32) -> String {
        guard let t = TrainKind.spec(in: spec) else { return "\(shards) shards" }
        return t.steps.map { "\($0) steps of \(t.batchSize) rows" } ?? "\(t.epochs ?? 0) epochs, \(t.batchSize) rows per step"
    }
}

/// Ctrl-C while following: the job goes on on the coordinator, and the user is told so (exit 130, as for SIGINT).
func detachOnInterrupt(job: JobID) {
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
    source.setEventHandler {
        FileHandle.standardError.write(Data(withGivenEndpoint("\ndetached; job \(job) keeps running (sigma cancel \(job) to stop it; sigma logs -f \(job) to follow it again)\n").utf8))
        exit(130)
    }
    source.resume()
    interruptSource = source   // (kept alive for the process's life)
}

/// Set once, on the task that follows a job (`detachOnInterrupt`); only kept, never read.
nonisolated(unsafe) var interruptSource: (any DispatchSourceSignal)? = nil

/// Maps client errors to CLI errors with exit codes.
@discardableResult
func mapClientError<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let e as ClientError {
        switch e {
        case .refused(let r) where r.code == ErrorReply.Code.invalidSpec.rawValue || r.code == ErrorReply.Code.badRequest.rawValue:
            throw CLIError.usage("\(e)")
        case .refused(let r) where r.code == ErrorReply.Code.notReady.rawValue:
            throw CLIError.usage("\(e)")   // (a job that has not ended: not a failure of the job)
        case .refused(let r) where r.code == ErrorReply.Code.notFound.rawValue:
            throw CLIError.usage(e.description.contains("sigma ") ? "\(e)" : "\(e); list jobs with: sigma jobs")
        case .refused: throw CLIError.jobFailed("\(e)")
        case .noAnswer(let endpoint, _, _, _):
            // (no answer: say what listens there, if it is not a coordinator)
            guard let ep = try? Endpoint.parse(endpoint) else { throw CLIError.unreachable("\(e)") }
            switch EndpointProbe.probe(host: ep.host, port: ep.port, identify: true) {
            case .http:
                throw CLIError.unreachable("\(endpoint) is a web server, not the coordinator (the dashboard listens on the coordinator's port + 1): give the coordinator's port")
            case .other:
                throw CLIError.unreachable("\(endpoint) does not speak Sigma's protocol (ZeroMQ): another service listens there; give the coordinator's port (7700 unless --port says otherwise)")
            case .refused:
                throw CLIError.unreachable("nothing listens at \(endpoint) any more (connection refused): the coordinator stopped")
            default:
                throw CLIError.unreachable("\(e)")
            }
        default: throw CLIError.unreachable("\(e)")
        }
    }
}

import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTerminal

/// A live line for training (step, loss, samples/s, ETA) and the writing and printing of job results.
final class TrainProgress: @unchecked Sendable {
    let isTTY = isatty(STDERR_FILENO) == 1
    let batch: Int
    /// Where the rate is measured from: (when, step) of the first step seen, so the job's start-up (reading its data,
    /// building its model, workers joining) is not in it — there is no rate, and no ETA, until a second update.
    /// (Progress comes about once per tick, so the first update may be many steps in.)
    var origin: (at: Date, step: Int)?
    var lastPlain = Date.distantPast

    init(batch: Int) {
        self.batch = batch
    }

    /// `evalLoss`: the last held-out loss, shown when there is no accuracy (a regressor's mean squared error).
    func update(_ at: TrainingPosition, loss: Double, accuracy: Double, evalLoss: Double = .nan) {
        let step = at.step, steps = at.steps
        guard step > 0 else { return }
        if origin == nil { origin = (Date(), step) }
        let r = ProgressText.trainingRate(elapsed: Date().timeIntervalSince(origin!.at), fromStep: origin!.step, step: step, steps: steps, batch: batch)
        var line = at.description + String(format: "  loss %.4f", loss)
        if let r { line += String(format: "  %.0f samples/s", r.rate) }
        if !accuracy.isNaN { line += String(format: "  held-out acc %.4f", accuracy) } else if !evalLoss.isNaN { line += String(format: "  held-out loss %.4g", evalLoss) }
        if let r, step < steps { line += String(format: "  ETA %.1fs", r.eta) }
        if isTTY {
            FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
        } else if Date().timeIntervalSince(lastPlain) >= 1 || step == steps {
            lastPlain = Date()
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    func finish() { if isTTY { FileHandle.standardError.write(Data("\n".utf8)) } }
}

enum MLOutput {
    /// Writes the result files into `dir` and returns a summary (files, and metrics.json's content when present).
    static func write(_ files: [(name: String, data: Data)], to dir: String) throws -> [String: Any] {
        let paths: [String]
        do { paths = try OutputFiles.writeResults(files, directory: dir) } catch { throw CLIError.usage("\(error)") }
        var o: [String: Any] = ["files": paths]
        if let m = files.first(where: { $0.name == "metrics.json" }), let obj = try? JSONSerialization.jsonObject(with: m.data) {
            o["metrics"] = obj
        }
        return o
    }

    static func say(summary: [String: Any]) {
        for p in summary["files"] as? [String] ?? [] { print("  wrote \(p)") }
        if let m = summary["metrics"] as? [String: Any] {
            for k in m.keys.sorted() where !(m[k] is [Any]) && !(m[k] is [String: Any]) { print("  \(k): \(m[k]!)") }
        }
    }

    /// The result files carried by a completed ML job's outcome.
    static func files(_ o: JobOutcome) throws -> [(name: String, data: Data)] {
        guard o.state == .completed, !o.payload.isEmpty else { return [] }
        do { return try o.payload.withUnsafeBytes { try ResultBundle.decode($0) } } catch {
            throw CLIError.jobFailed("job \(o.job): malformed result bundle: \(error)")
        }
    }

    /// Where results go: `-o DIR`, else the spec's `output`, else ./sigma-results/NAME-ID (NAME for a `--local` run,
    /// which has no id) — never the current folder unasked.
    static func directory(_ option: String?, _ spec: JobSpec, job: JobID? = nil) -> String {
        option ?? spec.output ?? "sigma-results/" + safeName(spec.name) + (job.map { "-\($0)" } ?? "")
    }

    /// A job name as a folder name: letters, digits, `-`, `_` and `.` kept, anything else `_`.
    static func safeName(_ name: String) -> String {
        let kept = String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" }.prefix(64))
        return kept.isEmpty || kept.allSatisfy({ $0 == "." }) ? "job" : kept
    }

    /// What a completed job's result says, read by its kind (nil: not completed, or no result).
    static func report(_ o: JobOutcome, _ spec: JobSpec) throws -> JobReport? {
        guard o.state == .completed, !o.payload.isEmpty else { return nil }
        do { return try JobKinds.standard.report(Array(o.payload.withUnsafeBytes { Array($0) }), spec: spec) } catch {
            throw CLIError.jobFailed("job \(o.job): malformed result: \(error)")
        }
    }

    /// Writes a report's files, if its kind makes any (into `directory(output, spec)`), and returns what to show:
    /// JSON under "results" ({files, metrics}) for a kind that makes files, else under "result"; and the lines to print.
    /// A kind that makes no files (map-reduce) writes its result as `result.json` when `-o DIR` was given (as
    /// `sigma results` does).
    static func deliver(_ r: JobReport, output: String?, spec: JobSpec, job: JobID? = nil) throws -> (key: String, json: [String: Any], lines: [String]) {
        guard !r.files.isEmpty else {
            guard let output, !r.json.isEmpty else { return ("result", r.json, r.lines) }
            let written = try write([("result.json", Data(jsonString(r.json).utf8))], to: output)
            return ("result", r.json, r.lines + (written["files"] as? [String] ?? []).map { "wrote \($0)" })
        }
        var summary = try write(r.files, to: directory(output, spec, job: job))
        if !r.json.isEmpty { summary["metrics"] = r.json }
        return ("results", summary, (summary["files"] as? [String] ?? []).map { "wrote \($0)" } + r.lines)
    }

    /// Threads a `--local` run computes on: `--threads`, else every core.
    static func localThreads(_ option: Int?) throws -> Int {
        let n = option ?? ProcessInfo.processInfo.activeProcessorCount
        guard n >= 1, n <= 1024 else { throw CLIError.usage("--threads must be 1…1024, got \(n)") }
        return n
    }

    /// The data roots of a `--local` run: the current folder, the spec file's folder, and any given (`--resume`'s
    /// folder, cluster.yaml `data_roots`) — the user's own process, held to the same rules as a cluster.
    static func localRoots(specFile: String, extra: [String] = []) throws -> DataRoots {
        let folders = [FileManager.default.currentDirectoryPath, URL(fileURLWithPath: specFile).deletingLastPathComponent().path] + extra
        do { return try DataRoots(folders) } catch { throw CLIError.usage("\(error)") }
    }

    /// Runs a job in this process (`--local`) with the same shard code and reduction as the cluster.
    static func runLocal(_ spec: JobSpec, roots: DataRoots, limits: SpecLimits = .standard, output: String?, json: Bool, threads: Int?) throws {
        let live = json ? nil : TrainKind.spec(in: spec).map { TrainProgress(batch: $0.batchSize) }
        let t0 = Date()
        TensorStorage.tuneHeap()   // (gradient buffers are reused, not re-faulted, as in a worker)
        let result: [UInt8]
        do {
            result = try JobKinds.standard.runLocal(spec, roots: roots, limits: limits, slots: 1, threads: try localThreads(threads)) { driver, end in
                let p = driver.progress
                if p.steps > 0 {
                    live?.update(TrainingPosition(step: p.step, steps: p.steps, stepsPerEpoch: p.stepsPerEpoch), loss: p.loss, accuracy: p.accuracy, evalLoss: p.evalLoss)
                }
                for l in end.log where live == nil && !json { FileHandle.standardError.write(Data((l + "\n").utf8)) }
            }
        } catch let e as JobError {
            throw CLIError.usage("\(spec.kind) job '\(spec.name)': \(e)")
        }
        live?.finish()
        let shown = try deliver(try JobKinds.standard.report(result, spec: spec), output: output, spec: spec)
        let seconds = Date().timeIntervalSince(t0)
        if json {
            var o = shown.key == "results" ? shown.json : ["result": shown.json]
            o["elapsed_s"] = seconds
            o["kind"] = spec.kind
            print(jsonString(o))
        } else {
            print("\(spec.kind) job '\(spec.name)' completed locally in \(String(format: "%.2f", seconds)) s")
            for l in shown.lines { print("  " + l) }
        }
    }
}

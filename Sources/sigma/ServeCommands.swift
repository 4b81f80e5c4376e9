import ArgumentParser
import Foundation
import SigmaClient
import SigmaDashboard
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTerminal

struct DeployCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Deploy a model (a kind: serve spec): workers load it once and answer requests in batches.",
        discussion: """
        Example:
          sigma deploy examples/serve-digits.yaml
          curl -s localhost:7701/v2/models/digits/ready
        Requests: sigma predict NAME, or HTTP on the dashboard's port (docs/serving.md).
        Deploying the same spec again changes nothing; a changed one needs sigma undeploy NAME first.
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Serve spec file (YAML or JSON, kind: serve).") var spec: String

    func run() async throws {
        do {
            let cfg = try common.load()
            let file: JobFile
            do { file = try JobSpec.loadFile(path: spec, limits: cfg.limits) } catch { throw CLIError.usage("\(spec): \(error)") }
            guard file.spec.kind == ServeKind.name else {
                throw CLIError.usage("\(spec): kind: \(file.spec.kind) is a job; run it with sigma submit \(spec) (sigma deploy takes kind: serve)")
            }
            let list = try await client.ask(common) { try await $0.deploy(file.spec, timeout: max($1, 10)) }
            printDeployments(list, json: client.json)
        } catch { exitWith(error) }
    }
}

struct UndeployCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "undeploy",
        abstract: "Stop a deployment: new requests are refused, batches in flight finish, workers unload it.",
        discussion: """
        Example:
          sigma undeploy digits
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Deployment name.") var name: String

    func run() async throws {
        do {
            let list = try await client.ask(common) { try await $0.undeploy(name, timeout: $1) }
            printDeployments(list, json: client.json)
        } catch { exitWith(error) }
    }
}

struct DeploymentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deployments",
        abstract: "List deployments: replicas and their state, queue, latency (p50/p99, queue and compute), batches, rate.",
        discussion: """
        Example:
          sigma deployments
          sigma deployments --json | jq '.[0].replicas'
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions

    func run() async throws {
        do {
            let list = try await client.ask(common) { try await $0.deployments(timeout: $1) }
            printDeployments(list, json: client.json)
        } catch { exitWith(error) }
    }
}

struct PredictCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Ask a deployment for outputs: embeddings of texts, or an MLP's logits for rows of features.",
        discussion: """
        Example:
          sigma predict minilm --text "a sentence" --text "another"
          sigma predict digits --input rows.npy -o logits.npy
        --input reads a .npy matrix, a .csv of numbers (rows of features) or text lines.
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Argument(help: "Deployment name.") var name: String
    @Option(help: "A text to embed (repeat for more).") var text: [String] = []
    @Option(help: "A file of inputs: .npy or .csv rows of features, else one text per line.") var input: String?
    @Option(name: [.short, .customLong("output")], help: "Write the outputs as a float32 .npy file instead of printing them.") var output: String?

    func readInput() throws -> ServeInput {
        if !text.isEmpty {
            guard input == nil else { throw CLIError.usage("give --text or --input, not both") }
            return .texts(text)
        }
        guard let path = input else { throw CLIError.usage("nothing to predict: give --text TEXT or --input FILE") }
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError.usage("--input: cannot read '\(path)'") }
        if path.hasSuffix(".npy") {
            let f: NpyFile
            do { f = try NpyFile(path: path) } catch { throw CLIError.usage("--input: \(error)") }
            var values = [Double](repeating: 0, count: f.header.rows * f.header.columns)
            try values.withUnsafeMutableBufferPointer { try f.readRows(start: 0, count: f.header.rows, into: $0) }
            return .rows(width: f.header.columns, values: values.map(Float.init))
        }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        guard path.hasSuffix(".csv") else { return .texts(lines) }
        var width = 0, values: [Float] = []
        for (i, line) in lines.enumerated() where !line.isEmpty {
            let row = line.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard row.allSatisfy({ $0 != nil }) else { throw CLIError.usage("--input: '\(path)' line \(i + 1): expected numbers separated by commas") }
            if width == 0 { width = row.count }
            guard row.count == width else { throw CLIError.usage("--input: '\(path)' line \(i + 1): \(row.count) numbers, the first line has \(width)") }
            values += row.map { $0! }
        }
        return .rows(width: width, values: values)
    }

    func run() async throws {
        do {
            let x = try readInput()
            let p = try await client.ask(common) { try await $0.predict(name, x, timeout: max($1, 30)) }
            if let output {
                do { try NpyFile.write(path: output, float32: p.values, shape: [Int(p.rows), Int(p.width)]) } catch { throw CLIError.jobFailed("\(output): \(error)") }
                FileHandle.standardError.write(Data("\(p.rows) × \(p.width) outputs written to \(output)\n".utf8))
                return
            }
            let w = Int(p.width)
            // (JSON has no NaN or infinity: such an output is null, as over HTTP)
            let rows = (0..<Int(p.rows)).map { r in p.values[(r * w)..<((r + 1) * w)].map { $0.isFinite ? Double($0) as Any : NSNull() } }
            var answer: [String: Any] = ["model": name, "rows": Int(p.rows), "width": w, "outputs": rows, "worker": p.worker, "batch_rows": Int(p.batchRows),
                                         "queue_ms": Double(p.queueNanos) / 1e6, "compute_ms": Double(p.computeNanos) / 1e6]
            if !p.labels.isEmpty { answer["labels"] = p.labels }
            print(jsonString(answer))
        } catch { exitWith(error) }
    }
}

func printDeployments(_ list: [DeploymentStatus], json: Bool) {
    if json {
        print(jsonString(list.map(\.jsonObject)))
        return
    }
    guard !list.isEmpty else { return print("no deployments (deploy one with: sigma deploy SPEC)") }
    print(DeploymentStatus.table(list), terminator: "")
}

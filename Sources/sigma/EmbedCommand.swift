import ArgumentParser
import Foundation
import SigmaEngine
import SigmaJobs

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Embed a text file (one sentence per line) with a BERT-family model folder, locally.",
        discussion: """
        Example:
          make model    # fetches all-MiniLM-L6-v2 into models/all-MiniLM-L6-v2
          sigma embed --model models/all-MiniLM-L6-v2 --input s.txt -o e.npy
        Writes a float32 .npy of shape (lines, hidden), in input order, L2-normalised.
        """)

    @Option(help: "Model folder with config.json, model.safetensors and vocab.txt.") var model: String
    @Option(help: "Text file, one sentence per line.") var input: String
    @Option(name: .shortAndLong, help: "Output .npy file.") var output: String
    @Option(help: "Sentences per batch.") var batchSize: Int = 32
    @Option(help: "BLAS threads (default: one per core).") var threads: Int?

    func run() throws {
        do {
            guard let data = FileManager.default.contents(atPath: input) else { throw CLIError.usage("cannot read --input \(input)") }
            let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
            let texts = lines.last == "" ? Array(lines.dropLast()) : lines
            guard batchSize >= 1 else { throw CLIError.usage("--batch-size must be ≥ 1") }
            if let t = threads { BLASInfo.setThreads(t) }
            let encoder: BertEncoder
            do { encoder = try BertEncoder(modelDirectory: model) } catch { throw CLIError.usage("--model: \(error)") }
            let t0 = Date()
            let e = encoder.embed(texts, batchSize: batchSize)
            let dt = Date().timeIntervalSince(t0)
            do {
                try NpyFile.write(path: output, float32: e.scalars, shape: e.shape)
            } catch { throw CLIError.usage("\(error)") }
            FileHandle.standardError.write(Data(String(format: "embedded %d lines in %.2f s (%.0f sentences/s) → %@ %@\n",
                                                       texts.count, dt, Double(texts.count) / dt, output, "\(e.shape)").utf8))
        } catch {
            exitWith(error)
        }
    }
}

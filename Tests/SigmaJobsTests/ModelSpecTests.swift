import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

let modelFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path + "/Fixtures"

/// The tutorial CNN of docs/jobs.md: two 3×3 convolutions of 32 and 64 channels, 2×2 max-pooling, dropout, a
/// 128-unit dense layer and 10 classes, on 28×28 images (Fixtures/tutorial-cnn.yaml, which ModelJobsTests trains).
let tutorialCNN = (try? String(contentsOfFile: modelFixtures + "/tutorial-cnn.yaml", encoding: .utf8))?
    .split(separator: "\n").filter { !$0.hasPrefix("#") }.joined(separator: "\n") ?? ""

/// The model of a train spec whose `model:` mapping is `model` (YAML, indented under `model:`).
func parsedModel(_ model: String, weights: String? = nil) throws -> ModelSpec {
    let body = model.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n")
    let job = try JobSpec.parse("""
        kind: train
        model:
        \(body)
        \(weights.map { "  weights: " + $0 } ?? "")
        data: {generate: blobs, rows: 10, features: 4, classes: 2}
        optimizer: {sgd: {lr: 0.1}}
        steps: 1
        """)
    return try job.decode(as: TrainJob.self).model
}

/// Forward and backward of `model` against a PyTorch fixture: logits, loss and every parameter's gradient within
/// `tolerance`; the fixture's state-dict names are exactly the model's.
func expectMatchesPyTorch(_ model: Layer, fixture: [String: Tensor], inputShape: [Int], tolerance: Float = 1e-4) throws {
    let parameterNames = Set(fixture.keys.filter { !$0.hasPrefix("grad.") && !["input", "labels", "logits", "loss"].contains($0) })
    #expect(Set(model.stateDict.keys) == parameterNames, "state-dict names: Sigma \(model.stateDict.keys.sorted()), PyTorch \(parameterNames.sorted())")
    let input = try #require(fixture["input"]), labels = try #require(fixture["labels"]).scalars.map { Int32($0) }
    let g = Graph()
    let logits = model(g.constant(input.reshaped(inputShape)))
    let loss = logits.crossEntropy(labels)
    for p in model.parameters { p.zeroGrad() }
    g.backward(from: loss)
    #expect(maxDifference(logits.value, fixture["logits"]!) <= tolerance, "logits differ by \(maxDifference(logits.value, fixture["logits"]!))")
    #expect(abs(loss.value.item - fixture["loss"]!.item) <= tolerance, "loss \(loss.value.item) vs PyTorch's \(fixture["loss"]!.item)")
    // (gradients in PyTorch's names: what a model's state dict holds, taken from the gradients instead)
    let saved = model.parameters.map(\.value)
    for p in model.parameters { p.value = p.grad ?? Tensor(zeros: p.value.shape) }
    let gradients = model.stateDict
    for (p, v) in zip(model.parameters, saved) { p.value = v }
    for (name, grad) in gradients {
        let expected = try #require(fixture["grad." + name], "no gradient of \(name) in the fixture")
        #expect(grad.shape == expected.shape && maxDifference(grad, expected) <= tolerance,
                "gradient of \(name) differs from PyTorch's by \(maxDifference(grad, expected))")
    }
}

func maxDifference(_ a: Tensor, _ b: Tensor) -> Float {
    guard a.count == b.count else { return .infinity }
    return zip(a.scalars, b.scalars).map { abs($0 - $1) }.max() ?? 0
}

@Suite struct ModelSpecTests {
    /// PyTorch-trained weights of the tutorial CNN, loaded through a model spec: PyTorch's logits, loss and gradients
    /// (≤ 1e-4) for 8 held-out digits, and Sigma's state dict has PyTorch's names.
    @Test func theTutorialCNNEqualsPyTorch() throws {
        let path = modelFixtures + "/cnn_digits.safetensors"
        let spec = try parsedModel(tutorialCNN, weights: path)
        #expect(spec.kind == "cnn" && spec.inputs == 784 && spec.outputs == 10 && spec.parameterCount == 1_199_882)
        let model = try MLModels.build(spec, seed: 0)
        try expectMatchesPyTorch(model, fixture: try SafeTensors.read(path: path), inputShape: [8, 784])
        // Dropout is off outside training: the same logits twice.
        let x = try SafeTensors.read(path: path)["input"]!.reshaped([8, 784])
        let a = model(Graph(recording: false).constant(x)).value, b = model(Graph(recording: false).constant(x)).value
        #expect(a.scalars == b.scalars)
    }

    /// The transformer classifier, post-norm with GELU and mean pooling, and pre-norm with ReLU and first-position
    /// pooling: PyTorch's `nn.TransformerEncoder` logits, loss and gradients, its state-dict names (query, key and
    /// value stacked in `in_proj_weight`) read and written.
    @Test(arguments: [("post", "gelu", "mean"), ("pre", "relu", "first")])
    func theTransformerEqualsPyTorch(_ norm: String, _ activation: String, _ pooling: String) throws {
        let path = modelFixtures + "/transformer_\(norm).safetensors"
        let spec = try parsedModel("""
            transformer: {vocab: 20, length: 12, width: 16, heads: 4, layers: 2, hidden: 32, outputs: 3, norm: \(norm), activation: \(activation), pooling: \(pooling)}
            """, weights: path)
        let model = try MLModels.build(spec, seed: 0)
        #expect(UInt64(MLModels.parameterCount(model)) == spec.parameterCount)
        let fixture = try SafeTensors.read(path: path)
        try expectMatchesPyTorch(model, fixture: fixture, inputShape: [5, 12])
        // Written back, the state dict is PyTorch's tensors, bit for bit.
        for (name, t) in model.stateDict { #expect(t.scalars == fixture[name]?.scalars, "\(name) written back differs") }
    }

    /// Dropout masks depend on (seed, step, row, layer) only; without row seeds a dropout layer passes its input.
    @Test func dropoutIsSeededPerRow() throws {
        let d = Dropout(0.5)
        let x = Tensor(shape: [3, 1000], repeating: 1)
        #expect(d(Graph().constant(x)).value.scalars == x.scalars)
        d.rowSeeds = (0..<3).map { TrainPlan.dropoutSeed(7, step: 2, row: $0, layer: 0) }
        let all = d(Graph().constant(x)).value.scalars
        d.rowSeeds = [TrainPlan.dropoutSeed(7, step: 2, row: 1, layer: 0)]
        let one = d(Graph().constant(Tensor(shape: [1, 1000], repeating: 1))).value.scalars
        #expect(Array(all[1000..<2000]) == one, "row 1's mask depends on its batch")
        let kept = all.filter { $0 != 0 }
        #expect(kept.allSatisfy { $0 == 2 } && abs(Double(kept.count) / 3000 - 0.5) < 0.05, "\(kept.count) of 3000 kept")
        #expect(Array(all[0..<1000]) != Array(all[1000..<2000]))
    }

    /// Every mistake in a layer list is named by its place, with what fits.
    @Test func cnnSpecMistakesAreNamed() throws {
        func problem(_ layers: String, input: String = "[1, 28, 28]") -> String {
            do { _ = try parsedModel("cnn: {input: \(input), layers: \(layers)}"); return "accepted" } catch { return "\(error)" }
        }
        #expect(problem("[{conv: {out: 4, kernel: 3}}, {linear: 10}]").contains("'model.cnn.layers[1]': linear needs flat rows"))
        #expect(problem("[{conv: {out: 4, kernel: 30}}, flatten, {linear: 10}]").contains("'model.cnn.layers[0]': a 30×30 kernel does not fit 28×28"))
        #expect(problem("[{conv: {out: 4}}, flatten, {linear: 10}]").contains("'model.cnn.layers[0].conv.kernel': missing"))
        #expect(problem("[{conv: {out: 4, kernel: 3, strid: 2}}, flatten, {linear: 10}]").contains("did you mean 'stride'"))
        #expect(problem("[swish, flatten, {linear: 10}]").contains("'model.cnn.layers[0]': unknown layer 'swish'"))
        #expect(problem("[{maxpool: 2}, {dropout: 1.5}, flatten, {linear: 10}]").contains("'model.cnn.layers[1]': dropout probability"))
        #expect(problem("[{conv: {out: 4, kernel: 3}}]").contains("must end in flat rows"))
        #expect(problem("[flatten, {linear: 10}]", input: "[28, 28]").contains("'model.cnn.input': expected [channels, height, width]"))
        #expect(problem("[{maxpool: 2}, {maxpool: 2}, {maxpool: 2}, {maxpool: 2}, {maxpool: 2}, flatten, {linear: 2}]").contains("'model.cnn.layers[4]': a 2×2 window does not fit 1×1"))
        #expect { _ = try parsedModel("transformer: {vocab: 10, length: 8, width: 30, heads: 4, layers: 1, hidden: 8, outputs: 2}") }
            throws: { "\($0)".contains("'model.transformer.heads': width 30 is not divisible by 4 heads") }
        #expect { _ = try parsedModel("transformer: {vocab: 10, length: 8, width: 16, heads: 4, layers: 1, outputs: 2}") }
            throws: { "\($0)".contains("'model.transformer.hidden': missing") }
        #expect { _ = try parsedModel("mlp: [4, 2]\ncnn: {input: [1, 2, 2], layers: [flatten, {linear: 2}]}") }
            throws: { "\($0)".contains("give one of mlp, cnn, transformer or encoder") }
    }

    /// A transformer's data are token ids: a row with a value outside the vocabulary (or not an integer) is refused,
    /// naming the row and position.
    @Test func tokenIdsAreChecked() throws {
        let spec = try parsedModel("transformer: {vocab: 10, length: 3, width: 8, heads: 2, layers: 1, hidden: 8, outputs: 2}")
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-tokens-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "1,2,3,0\n4,5,12,1\n".write(toFile: dir + "/ids.csv", atomically: true, encoding: .utf8)
        #expect { _ = try LabeledData.load(LabeledDataSpec(csv: dir + "/ids.csv"), for: spec, needLabels: true) }
            throws: { "\($0)".contains("row 2, position 2 holds 12.0; token ids must be integers in 0..<10") }
        try "1,2,3,0\n4,5,6,1\n".write(toFile: dir + "/ids.csv", atomically: true, encoding: .utf8)
        #expect(try LabeledData.load(LabeledDataSpec(csv: dir + "/ids.csv"), for: spec, needLabels: true).rows == 2)
    }
}

/// A trained CNN or transformer deploys as an mlp does (`kind: serve`): each row's logits are the same bits whatever
/// else shares its batch, and equal the batch forward pass `infer` runs.
@Suite struct ServedModelKindsTests {
    @Test(arguments: ["cnn", "transformer"])
    func aServedModelAnswersEachRowAsInferDoes(_ kind: String) throws {
        var model = tutorialCNN, fixture = "cnn_digits.safetensors", width = 784
        if kind == "transformer" {
            model = "transformer: {vocab: 20, length: 12, width: 16, heads: 4, layers: 2, hidden: 32, outputs: 3, norm: post, activation: gelu, pooling: mean}"
            (fixture, width) = ("transformer_post.safetensors", 12)
        }
        let path = modelFixtures + "/" + fixture
        let spec = try parsedModel(model, weights: path)
        let served = try ServedModel(ServeSpec(name: "m", model: .mlp(spec)))
        #expect(served.width == spec.outputs)
        let tensors = try SafeTensors.read(path: path)
        let rows: [Float] = tensors["input"]?.scalars ?? []
        let n = rows.count / width
        let all = try served.run(.rows(width: width, values: rows))
        let built = try MLModels.build(spec, seed: 0)
        let batch = built(Graph(recording: false).constant(Tensor(shape: [n, width], rows))).value.scalars
        #expect(all == batch, "served logits differ from the batch forward pass")
        for r in 0..<n {
            let one = try served.run(.rows(width: width, values: Array(rows[(r * width)..<((r + 1) * width)])))
            #expect(one == Array(all[(r * spec.outputs)..<((r + 1) * spec.outputs)]), "row \(r) alone differs from in its batch")
        }
        if kind == "transformer" {
            var refused = ""
            do { _ = try served.run(.rows(width: 12, values: [Float](repeating: 25, count: 12))) } catch { refused = "\(error)" }
            #expect(refused.contains("token ids must be integers in 0..<20"), "\(refused)")
        }
    }
}

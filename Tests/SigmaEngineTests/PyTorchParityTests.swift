import Foundation
import SigmaEngine
import Testing

let engineFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
    #expect(a.shape == b.shape, "shapes \(a.shape) vs \(b.shape)")
    return zip(a.scalars, b.scalars).map { abs($0 - $1) }.max() ?? 0
}

/// Forward outputs equal PyTorch's for the same weights and inputs (fixtures made once by make_fixtures.py with
/// PyTorch 2.15): max abs diff ≤ 1e-4.
@Suite struct PyTorchParityTests {
    @Test func mlpMatchesPyTorch() throws {
        let f = try SafeTensors.read(path: engineFixtures + "/mlp.safetensors")
        var rng = SeededRandom(seed: 0)
        let model = Sequential([Linear(64, 32, name: "0", rng: &rng), Activation(.relu), Linear(32, 16, name: "2", rng: &rng),
                                Activation(.gelu), Linear(16, 10, name: "4", rng: &rng)])
        try model.load(f, file: "mlp.safetensors")
        let y = model(Graph().constant(f["input"]!)).value
        #expect(maxAbsDiff(y, f["output"]!) <= 1e-4)
    }

    @Test func cnnMatchesPyTorch() throws {
        let f = try SafeTensors.read(path: engineFixtures + "/cnn.safetensors")
        var rng = SeededRandom(seed: 0)
        let model = Sequential([
            Conv2d(1, 4, kernel: 3, padding: 1, name: "0", rng: &rng), Activation(.relu), Pool2d(.max, kernel: 2),
            Conv2d(4, 8, kernel: 3, padding: 1, name: "3", rng: &rng), Activation(.relu), Pool2d(.average, kernel: 2),
            Flatten(), Linear(32, 10, name: "7", rng: &rng),
        ])
        try model.load(f, file: "cnn.safetensors")
        let y = model(Graph().constant(f["input"]!)).value
        #expect(maxAbsDiff(y, f["output"]!) <= 1e-4)
    }

    @Test func logSoftmaxAndCrossEntropyMatchPyTorch() throws {
        let f = try SafeTensors.read(path: engineFixtures + "/loss.safetensors")
        let g = Graph()
        let logits = g.constant(f["logits"]!)
        #expect(maxAbsDiff(logits.logSoftmax().value, f["log_softmax"]!) <= 1e-5)
        let labels = f["labels"]!.scalars.map { Int32($0) }
        #expect(abs(logits.crossEntropy(labels).value.item - f["cross_entropy"]!.item) <= 1e-5)
    }

    @Test func loadingNamesMissingAndMismatchedTensors() throws {
        var f = try SafeTensors.read(path: engineFixtures + "/mlp.safetensors")
        let model = Sequential.mlp([64, 32, 10], seed: 1)
        #expect { try model.load(f, file: "(weights)") } throws: { "\($0)".contains("'2.weight' has shape [16, 32]") }
        f["0.bias"] = nil
        #expect { try Sequential.mlp([64, 32, 16, 10], seed: 1).load(f, file: "(weights)") } throws: { "\($0)".contains("'0.bias' missing") }
    }
}

@Suite struct SafeTensorsTests {
    @Test func roundTripsAndReadsHalfPrecision() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = random([3, 4], seed: 1), b = random([5], seed: 2)
        try SafeTensors.write(["a": a, "b": b], path: dir + "/x.safetensors")
        let back = try SafeTensors.read(path: dir + "/x.safetensors")
        #expect(back["a"] == a && back["b"] == b)
        // F16 and BF16, hand-built: 1.0, -2.0, 0.5.
        func file(_ dtype: String, _ words: [UInt16]) -> Data {
            var header = Array("{\"t\":{\"dtype\":\"\(dtype)\",\"shape\":[3],\"data_offsets\":[0,6]}}".utf8)
            while header.count % 8 != 0 { header.append(0x20) }
            var d = Data()
            var n = UInt64(header.count).littleEndian
            withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
            d.append(contentsOf: header)
            for w in words { d.append(UInt8(w & 0xFF)); d.append(UInt8(w >> 8)) }
            return d
        }
        #expect(try SafeTensors.read(file("F16", [0x3C00, 0xC000, 0x3800]))["t"]!.scalars == [1, -2, 0.5])
        #expect(try SafeTensors.read(file("BF16", [0x3F80, 0xC000, 0x3F00]))["t"]!.scalars == [1, -2, 0.5])
    }

    /// Corrupt, truncated or inconsistent files: an error naming the file (and tensor), never a crash.
    @Test func rejectsCorruptFiles() throws {
        let good = try Data(contentsOf: URL(fileURLWithPath: engineFixtures + "/mlp.safetensors"))
        for cut in stride(from: 0, to: good.count - 1, by: 97) {
            #expect(throws: FormatError.self) { _ = try SafeTensors.read(good.prefix(cut), file: "cut.safetensors") }
        }
        var rng = SeededRandom(seed: 3)
        for _ in 0..<300 {
            var d = good
            for _ in 0..<3 { d[Int(rng.next() % 700)] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? SafeTensors.read(d)
        }
        let bad = Data("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}".utf8)
        var d = Data()
        var n = UInt64(bad.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(bad)
        d.append(Data(count: 12))
        #expect { _ = try SafeTensors.read(d, file: "m.safetensors") } throws: {
            "\($0)".contains("m.safetensors") && "\($0)".contains("'w'") && "\($0)".contains("needs 16 bytes")
        }
    }
}

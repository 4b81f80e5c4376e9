import Foundation
import SigmaJobs
import SigmaModel
import Testing

/// Optional lossy gradient transport: bf16 / fp16 halve the bytes and stay within their rounding error; fp16
/// refuses values beyond its range instead of sending infinities; the spec names a wrong value.
@Suite struct GradientTransportTests {
    func parts(_ values: [Float]) -> [(TreeNode, GradientSum)] {
        [(TreeNode(level: 1, index: 0), GradientSum(values: values, loss: 12.5, correct: 3, rows: 8))]
    }

    @Test func halfPrecisionHalvesTheBytesWithinItsRoundingError() throws {
        var rng = SplitMix(seed: 9)
        let values = (0..<4096).map { _ in Float(rng.unit() - 0.5) * Float(pow(10.0, Double(Int(rng.unit() * 8) - 4))) }
        let exact = try GradientTree.encode(parts(values))
        for (t, rel) in [(GradientTransport.bf16, Float(1.0 / 256)), (.fp16, Float(1.0 / 2048))] {
            let f = try GradientTree.encode(parts(values), transport: t)
            #expect(f.count - 40 == (exact.count - 40) / 2, "\(t): \(f.count) bytes against \(exact.count)")
            let back = try f.withUnsafeBytes { try GradientTree.decode($0, range: 0..<2, total: 2, parameters: values.count, transport: t) }
            let got = back[0].1
            #expect(got.loss == 12.5 && got.correct == 3 && got.rows == 8)
            for (a, b) in zip(values, got.values) where abs(a) > 1e-4 {   // (fp16 subnormals lose relative precision)
                #expect(abs(a - b) <= rel * abs(a), "\(t): \(a) came back as \(b)")
            }
            // Decoding with the wrong width is a length error, never a misread.
            #expect(throws: ByteReadError.self) {
                try f.withUnsafeBytes { try GradientTree.decode($0, range: 0..<2, total: 2, parameters: values.count, transport: .f32) }
            }
        }
        // bf16 rounds to nearest even: 1 + 2^-8 (a tie) goes down to 1, 1 + 3·2^-8 up to 1 + 2^-6.
        let ties = try GradientTree.encode(parts([1 + 1.0 / 256, 1 + 3.0 / 256, -2, 0]), transport: .bf16)
        let tb = try ties.withUnsafeBytes { try GradientTree.decode($0, range: 0..<2, total: 2, parameters: 4, transport: .bf16) }[0].1.values
        #expect(tb == [1, 1 + 1.0 / 64, -2, 0])
    }

    @Test func fp16RefusesValuesBeyondItsRange() {
        #expect(throws: JobError.self) { try GradientTree.encode(parts([1, 70_000, 2]), transport: .fp16) }
        #expect((try? GradientTree.encode(parts([1, 70_000, 2]), transport: .bf16)) != nil)
    }

    @Test func specNamesAWrongTransport() throws {
        let base = "kind: train\nname: t\nmodel: {mlp: [4, 2]}\ndata: {x: x.npy, y: y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 2\n"
        guard let t = TrainKind.spec(in: try JobSpec.parse(base + "gradient_transport: bf16\n")) else { Issue.record("not train"); return }
        #expect(t.gradientTransport == .bf16)
        guard let d = TrainKind.spec(in: try JobSpec.parse(base)) else { Issue.record("not train"); return }
        #expect(d.gradientTransport == .f32)
        do {
            _ = try JobSpec.parse(base + "gradient_transport: int8\n")
            Issue.record("int8 accepted")
        } catch {
            #expect("\(error)".contains("gradient_transport") && "\(error)".contains("int8"), "\(error)")
        }
    }
}

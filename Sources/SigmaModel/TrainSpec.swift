import Foundation
import Yams

/// A training job spec (`kind: train`). Runs locally today (`sigma train SPEC --local`); the distributed form is
/// the next step.
public struct TrainSpec: Sendable, Equatable {
    public enum Model: Sendable, Equatable {
        /// Layer widths, input first; hidden layers use `activation`.
        case mlp(sizes: [Int], activation: String)
    }
    public enum Optimizer: Sendable, Equatable {
        case sgd(lr: Double, momentum: Double, weightDecay: Double)
        case adam(lr: Double, weightDecay: Double)
        case adamw(lr: Double, weightDecay: Double)
    }

    public var name: String
    public var model: Model
    /// CSV whose last column is the integer class label; features are multiplied by `scale`.
    public var csv: String
    public var scale: Double
    public var optimizer: Optimizer
    public var epochs: Int
    public var batchSize: Int
    /// Fraction of rows held out for evaluation (after a seeded shuffle).
    public var holdout: Double
    public var seed: UInt64
    /// Where the trained weights go (safetensors, PyTorch state-dict names), or nil.
    public var output: String?

    public static func load(path: String) throws -> TrainSpec {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SpecError(field: "(file)", problem: "cannot read job spec file '\(path)'")
        }
        return try parse(String(decoding: data, as: UTF8.self),
                         baseDirectory: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    public static func parse(_ text: String, baseDirectory: String? = nil) throws -> TrainSpec {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw SpecError(field: "(document)", problem: "not valid YAML/JSON: \(error)")
        }
        guard let map = node?.mapping else { throw SpecError(field: "(document)", problem: "expected a mapping with 'kind: train'") }
        var f = Fields(map, path: "")
        let kind = try f.string("kind")
        guard kind == "train" else { throw SpecError(field: "kind", problem: "expected 'train', got '\(kind)'") }
        let name = try f.optionalString("name") ?? "train"
        func resolve(_ p: String) -> String { p.hasPrefix("/") || baseDirectory == nil ? p : baseDirectory! + "/" + p }

        guard let m = f.take("model")?.mapping else { throw SpecError(field: "model", problem: "missing; expected {mlp: [64, 128, 10]}") }
        var mf = Fields(m, path: "model.")
        guard let sizesNode = mf.take("mlp"), let seq = sizesNode.sequence else {
            throw SpecError(field: "model.mlp", problem: "missing; expected a list of layer widths such as [64, 128, 10]")
        }
        let sizes = try seq.enumerated().map { i, n -> Int in
            guard let s = n.string, let v = Int(s), v >= 1, v <= 1 << 20 else {
                throw SpecError(field: "model.mlp[\(i)]", problem: "expected a width between 1 and 1048576, got '\(n.string ?? "?")'")
            }
            return v
        }
        guard sizes.count >= 2 else { throw SpecError(field: "model.mlp", problem: "needs at least input and output widths") }
        let activation = try mf.optionalString("activation") ?? "relu"
        guard ["relu", "gelu", "tanh"].contains(activation) else {
            throw SpecError(field: "model.activation", problem: "'\(activation)' is not one of relu, gelu, tanh")
        }
        try mf.rejectUnknown()

        guard let d = f.take("data")?.mapping else { throw SpecError(field: "data", problem: "missing; expected {csv: PATH}") }
        var df = Fields(d, path: "data.")
        let csv = resolve(try df.string("csv"))
        let scale = try df.optionalDouble("scale") ?? 1
        try df.rejectUnknown()

        guard let o = f.take("optimizer")?.mapping, o.count == 1, let okind = o.first?.key.string, let params = o.first?.value.mapping else {
            throw SpecError(field: "optimizer", problem: "expected one of {sgd: {lr, momentum, weight_decay}}, {adam: {lr, weight_decay}}, {adamw: {lr, weight_decay}}")
        }
        var of = Fields(params, path: "optimizer.\(okind).")
        let lr = try of.optionalDouble("lr") ?? 0.01
        guard lr > 0 else { throw SpecError(field: "optimizer.\(okind).lr", problem: "must be > 0, got \(lr)") }
        let wd = try of.optionalDouble("weight_decay") ?? 0
        let optimizer: Optimizer
        switch okind {
        case "sgd": optimizer = .sgd(lr: lr, momentum: try of.optionalDouble("momentum") ?? 0, weightDecay: wd)
        case "adam": optimizer = .adam(lr: lr, weightDecay: wd)
        case "adamw": optimizer = .adamw(lr: lr, weightDecay: wd)
        default: throw SpecError(field: "optimizer", problem: "unknown optimizer '\(okind)'; expected sgd, adam or adamw")
        }
        try of.rejectUnknown()

        let epochs = Int(try f.optionalUInt("epochs") ?? 10)
        let batch = Int(try f.optionalUInt("batch_size") ?? 32)
        guard epochs >= 1 else { throw SpecError(field: "epochs", problem: "must be ≥ 1") }
        guard batch >= 1 else { throw SpecError(field: "batch_size", problem: "must be ≥ 1") }
        let holdout = try f.optionalDouble("holdout") ?? 0.2
        guard holdout >= 0, holdout < 1 else { throw SpecError(field: "holdout", problem: "must be in [0, 1), got \(holdout)") }
        let seed = try f.optionalUInt("seed") ?? 0
        let output = try f.optionalString("output").map(resolve)
        try f.rejectUnknown()
        return TrainSpec(name: name, model: .mlp(sizes: sizes, activation: activation), csv: csv, scale: scale, optimizer: optimizer,
                         epochs: epochs, batchSize: batch, holdout: holdout, seed: seed, output: output)
    }
}

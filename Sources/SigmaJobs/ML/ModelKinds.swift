import SigmaEngine
import SigmaModel
import Yams

/// `model: {cnn: {input: [C, H, W], layers: [...]}}` — a convolutional network as PyTorch's `nn.Sequential` of the
/// same layers: layer i's parameters are `i.weight`, `i.bias`, as that module's state dict names them.
public struct CNNSpec: Codable, Sendable, Equatable {
    /// Each row's shape: channels, height, width (rows hold C·H·W values, channel after channel, row after row).
    public var input: [Int]
    public var layers: [CNNLayer]

    public init(input: [Int], layers: [CNNLayer]) {
        self.input = input
        self.layers = layers
    }
}

public enum CNNLayer: Codable, Sendable, Equatable {
    case conv(out: Int, kernel: Int, stride: Int, padding: Int)
    case activation(String)
    case pool(max: Bool, kernel: Int, stride: Int)
    case flatten
    case linear(out: Int)
    case dropout(Double)
}

/// `model: {transformer: {...}}` — an encoder classifier over rows of `length` token ids (`TransformerClassifier`).
public struct TransformerSpec: Codable, Sendable, Equatable {
    public var vocab: Int, length: Int, width: Int, heads: Int, layers: Int, hidden: Int, outputs: Int
    /// post (BERT, PyTorch's default) or pre (`norm_first=True`).
    public var norm: String
    /// mean (over positions) or first (the first position's state).
    public var pooling: String
    /// The feed-forward activation: gelu or relu.
    public var activation: String

    public init(vocab: Int, length: Int, width: Int, heads: Int, layers: Int, hidden: Int, outputs: Int, norm: String = "post",
                pooling: String = "mean", activation: String = "gelu") {
        (self.vocab, self.length, self.width, self.heads, self.layers, self.hidden, self.outputs) = (vocab, length, width, heads, layers, hidden, outputs)
        (self.norm, self.pooling, self.activation) = (norm, pooling, activation)
    }

    var parameterCount: UInt64 {
        let w = UInt64(max(0, width)), h = UInt64(max(0, hidden))
        let layer = saturatingSum([saturatingProduct([4, w, w]), 4 * w, saturatingProduct([2, w, h]), h, w, 4 * w])
        return saturatingSum([saturatingProduct([UInt64(max(0, vocab)) + UInt64(max(0, length)), w]), saturatingProduct([UInt64(max(0, layers)), layer]),
                              norm == "pre" ? 2 * w : 0, saturatingProduct([w, UInt64(max(0, outputs))]), UInt64(max(0, outputs))])
    }

    func validate(_ path: String, limits: SpecLimits) throws {
        for (k, v, hi) in [("vocab", vocab, 1 << 20), ("length", length, 4096), ("width", width, limits.width), ("heads", heads, 256),
                           ("layers", layers, limits.layers), ("hidden", hidden, limits.width), ("outputs", outputs, limits.width)] {
            guard v >= 1, v <= hi else { throw SpecError(field: path + k, problem: "must be between 1 and \(hi), got \(v)") }
        }
        guard width % heads == 0 else { throw SpecError(field: path + "heads", problem: "width \(width) is not divisible by \(heads) heads") }
        guard ["post", "pre"].contains(norm) else { throw SpecError(field: path + "norm", problem: "'\(norm.prefix(40))' is not one of post, pre") }
        guard ["mean", "first"].contains(pooling) else { throw SpecError(field: path + "pooling", problem: "'\(pooling.prefix(40))' is not one of mean, first") }
        guard ["gelu", "relu"].contains(activation) else { throw SpecError(field: path + "activation", problem: "'\(activation.prefix(40))' is not one of gelu, relu") }
    }
}

extension CNNSpec {
    /// The shape after each layer (the input's first), or an error naming the layer that does not fit.
    func shapes(_ path: String) throws -> [[Int]] {
        guard input.count == 3, input.allSatisfy({ $0 >= 1 && $0 <= 65_536 }) else {
            throw SpecError(field: path + "input", problem: "expected [channels, height, width], each 1…65536, got \(input)")
        }
        var shape = input, out = [input]
        for (i, layer) in layers.enumerated() {
            let at = path + "layers[\(i)]"
            switch layer {
            case .conv(let o, let k, let s, let p):
                guard shape.count == 3 else { throw SpecError(field: at, problem: "conv needs [channels, height, width], got \(shape) (after flatten)") }
                guard o >= 1, k >= 1, s >= 1, p >= 0, o <= 65_536, k <= 64, s <= 64, p <= 64 else {
                    throw SpecError(field: at, problem: "conv out 1…65536, kernel 1…64, stride 1…64, padding 0…64; got out \(o), kernel \(k), stride \(s), padding \(p)")
                }
                let h = (shape[1] + 2 * p - k) / s + 1, w = (shape[2] + 2 * p - k) / s + 1
                guard shape[1] + 2 * p >= k, shape[2] + 2 * p >= k else {
                    throw SpecError(field: at, problem: "a \(k)×\(k) kernel does not fit \(shape[1])×\(shape[2]) with padding \(p)")
                }
                shape = [o, h, w]
            case .pool(_, let k, let s):
                guard shape.count == 3 else { throw SpecError(field: at, problem: "pooling needs [channels, height, width], got \(shape)") }
                guard k >= 1, s >= 1, k <= 64, s <= 64 else { throw SpecError(field: at, problem: "kernel and stride 1…64, got \(k), \(s)") }
                guard shape[1] >= k, shape[2] >= k else { throw SpecError(field: at, problem: "a \(k)×\(k) window does not fit \(shape[1])×\(shape[2])") }
                shape = [shape[0], (shape[1] - k) / s + 1, (shape[2] - k) / s + 1]
            case .flatten:
                shape = [shape.reduce(1, *)]
            case .linear(let o):
                guard shape.count == 1 else { throw SpecError(field: at, problem: "linear needs flat rows, got \(shape); add flatten before it") }
                guard o >= 1, o <= 1 << 20 else { throw SpecError(field: at, problem: "linear out must be 1…1048576, got \(o)") }
                shape = [o]
            case .activation(let a):
                guard MLModels.activations.contains(a) else {
                    throw SpecError(field: at, problem: "unknown layer '\(a.prefix(40))'; expected conv, maxpool, avgpool, flatten, linear, dropout or \(MLModels.activations.joined(separator: ", "))")
                }
            case .dropout(let p):
                guard p >= 0, p < 1 else { throw SpecError(field: at, problem: "dropout probability must be in [0, 1), got \(p)") }
            }
            out.append(shape)
        }
        return out
    }

    /// Weights and biases of every conv and linear layer.
    func parameterCount(_ shapes: [[Int]]) -> UInt64 {
        var n: UInt64 = 0
        for (i, layer) in layers.enumerated() {
            let inShape = shapes[i].map { UInt64($0) }
            switch layer {
            case .conv(let o, let k, _, _): n = saturatingSum([n, saturatingProduct([UInt64(o), inShape[0], UInt64(k), UInt64(k)]), UInt64(o)])
            case .linear(let o): n = saturatingSum([n, saturatingProduct([UInt64(o), inShape[0]]), UInt64(o)])
            default: break
            }
        }
        return n
    }

    /// The network, each layer named by its index (PyTorch's `nn.Sequential` names), behind a reshape of the rows.
    func build(seed: UInt64) -> Sequential {
        let shapes = (try? self.shapes("")) ?? []
        var rng = SeededRandom(seed: seed)
        var built: [Layer] = [Reshape(input)]
        for (i, layer) in layers.enumerated() {
            let inShape = shapes[i]
            switch layer {
            case .conv(let o, let k, let s, let p): built.append(Conv2d(inShape[0], o, kernel: k, stride: s, padding: p, name: "\(i)", rng: &rng))
            case .activation(let a): built.append(Activation(MLModels.activation(a)))
            case .pool(let isMax, let k, let s): built.append(Pool2d(isMax ? .max : .average, kernel: k, stride: s))
            case .flatten: built.append(Flatten())
            case .linear(let o): built.append(Linear(inShape[0], o, name: "\(i)", rng: &rng))
            case .dropout(let p): built.append(Dropout(Float(p)))
            }
        }
        return Sequential(built)
    }

    static func parse(_ node: Node, path: String) throws -> CNNSpec {
        guard let m = node.mapping else { throw SpecError(field: path.dropLast().description, problem: "expected {input: [C, H, W], layers: [...]}") }
        var f = Fields(m, path: path)
        guard let inputNode = f.take("input"), let dims = inputNode.sequence else {
            throw SpecError(field: path + "input", problem: "missing; expected [channels, height, width], e.g. [1, 28, 28]")
        }
        let input = try dims.enumerated().map { i, n -> Int in
            guard let v = n.string.flatMap({ Int($0) }) else { throw SpecError(field: path + "input[\(i)]", problem: "expected an integer") }
            return v
        }
        guard let layerNodes = f.take("layers")?.sequence, !layerNodes.isEmpty else {
            throw SpecError(field: path + "layers", problem: "missing; expected a list such as [{conv: {out: 32, kernel: 3}}, relu, {maxpool: 2}, flatten, {linear: 10}]")
        }
        let layers = try layerNodes.enumerated().map { try CNNLayer.parse($1, path: path + "layers[\($0)]") }
        try f.rejectUnknown()
        return CNNSpec(input: input, layers: layers)
    }
}

extension CNNLayer {
    static func parse(_ node: Node, path: String) throws -> CNNLayer {
        if let word = node.scalar?.string {
            switch word {
            case "flatten": return .flatten
            case "maxpool", "avgpool": return .pool(max: word == "maxpool", kernel: 2, stride: 2)
            default: return .activation(word)
            }
        }
        guard let m = node.mapping, m.count == 1, let key = m.first?.key.string, let value = m.first?.value else {
            throw SpecError(field: path, problem: "expected a layer: {conv: {out, kernel, stride, padding}}, {maxpool: K}, {avgpool: K}, flatten, {linear: N}, {dropout: P} or an activation")
        }
        func int(_ n: Node, _ field: String) throws -> Int {
            guard let v = n.string.flatMap({ Int($0) }) else { throw SpecError(field: field, problem: "expected an integer, got '\((n.string ?? "?").prefix(40))'") }
            return v
        }
        switch key {
        case "conv":
            guard let cm = value.mapping else { throw SpecError(field: path + ".conv", problem: "expected {out: N, kernel: K, stride: S, padding: P}") }
            var c = Fields(cm, path: path + ".conv.")
            guard let out = try c.optionalInt("out") else { throw SpecError(field: path + ".conv.out", problem: "missing; the number of output channels") }
            guard let kernel = try c.optionalInt("kernel") else { throw SpecError(field: path + ".conv.kernel", problem: "missing; the kernel size, e.g. 3") }
            let layer = CNNLayer.conv(out: out, kernel: kernel, stride: try c.optionalInt("stride") ?? 1, padding: try c.optionalInt("padding") ?? 0)
            try c.rejectUnknown()
            return layer
        case "maxpool", "avgpool":
            if value.scalar != nil { let k = try int(value, path + "." + key); return .pool(max: key == "maxpool", kernel: k, stride: k) }
            guard let pm = value.mapping else { throw SpecError(field: path + "." + key, problem: "expected a window size or {kernel: K, stride: S}") }
            var p = Fields(pm, path: path + "." + key + ".")
            let k = try p.optionalInt("kernel") ?? 2
            let layer = CNNLayer.pool(max: key == "maxpool", kernel: k, stride: try p.optionalInt("stride") ?? k)
            try p.rejectUnknown()
            return layer
        case "linear":
            if value.scalar != nil { return .linear(out: try int(value, path + ".linear")) }
            guard let lm = value.mapping else { throw SpecError(field: path + ".linear", problem: "expected a width or {out: N}") }
            var l = Fields(lm, path: path + ".linear.")
            guard let out = try l.optionalInt("out") else { throw SpecError(field: path + ".linear.out", problem: "missing") }
            try l.rejectUnknown()
            return .linear(out: out)
        case "dropout":
            guard let p = value.string.flatMap({ Double($0) }) else { throw SpecError(field: path + ".dropout", problem: "expected a probability such as 0.25") }
            return .dropout(p)
        default:
            throw SpecError(field: path, problem: "unknown layer '\(key.prefix(40))'; expected conv, maxpool, avgpool, flatten, linear or dropout")
        }
    }
}

extension TransformerSpec {
    static func parse(_ node: Node, path: String) throws -> TransformerSpec {
        guard let m = node.mapping else { throw SpecError(field: path.dropLast().description, problem: "expected {vocab, length, width, heads, layers, hidden, outputs}") }
        var f = Fields(m, path: path)
        func required(_ k: String) throws -> Int {
            guard let v = try f.optionalInt(k) else { throw SpecError(field: path + k, problem: "missing") }
            return v
        }
        let s = TransformerSpec(vocab: try required("vocab"), length: try required("length"), width: try required("width"),
                                heads: try required("heads"), layers: try required("layers"), hidden: try required("hidden"),
                                outputs: try required("outputs"), norm: try f.optionalString("norm") ?? "post",
                                pooling: try f.optionalString("pooling") ?? "mean", activation: try f.optionalString("activation") ?? "gelu")
        try f.rejectUnknown()
        return s
    }

    func build(seed: UInt64) -> TransformerClassifier {
        TransformerClassifier(vocab: vocab, length: length, width: width, heads: heads, layers: layers, hidden: hidden, outputs: outputs,
                              normFirst: norm == "pre", activation: MLModels.activation(activation), meanPooling: pooling == "mean", seed: seed)
    }
}

/// Something with parameters that maps a batch to a batch.
public protocol Layer: AnyObject {
    /// x (N, in) → (N, out), recorded on x's graph.
    func callAsFunction(_ x: Var) -> Var
    var parameters: [Parameter] { get }
    /// Parameters by PyTorch state-dict name (default: each parameter under its own name).
    var stateDict: [String: Tensor] { get }
    /// Loads parameters from PyTorch state-dict tensors; every missing name or shape mismatch is an error naming the
    /// tensor (default: each parameter by its own name).
    func load(_ tensors: [String: Tensor], file: String) throws
}

/// y = x · Wᵀ + b, W (out, in), b (out) — PyTorch's layout and default initialisation
/// (U(−1/√in, 1/√in) for both), seeded.
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, name: String = "linear", rng: inout SeededRandom) {
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(name + ".weight", .uniform([outFeatures, inFeatures], low: -bound, high: bound, rng: &rng))
        self.bias = bias ? Parameter(name + ".bias", .uniform([outFeatures], low: -bound, high: bound, rng: &rng)) : nil
    }

    public func callAsFunction(_ x: Var) -> Var {
        let (w, b) = fed(x)
        return x.linear(w, b)
    }

    /// The weight and bias fed into x's graph.
    func fed(_ x: Var) -> (weight: Var, bias: Var?) { (x.graph.param(weight), bias.map { x.graph.param($0) }) }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
}

/// An elementwise activation as a layer.
public final class Activation: Layer {
    public let op: Kernels.Unary
    public init(_ op: Kernels.Unary) { self.op = op }
    public func callAsFunction(_ x: Var) -> Var { x.unary(op) }
    public var parameters: [Parameter] { [] }
}

/// Layers applied in order.
public final class Sequential: Layer {
    public let layers: [Layer]
    public init(_ layers: [Layer]) { self.layers = layers }
    /// Each run of two or more `Linear` layers with an `Activation` between each two is one feature-major op on a
    /// graph that records (`Var.linearChain`); every other layer is applied as it is.
    public func callAsFunction(_ x: Var) -> Var {
        guard x.graph.recording else { return layers.reduce(x) { $1($0) } }
        var y = x, i = 0
        while i < layers.count {
            var chain: [Linear] = [], activations: [Kernels.Unary] = []
            if let first = layers[i] as? Linear {
                chain = [first]
                while i + 2 * chain.count < layers.count, let a = layers[i + 2 * chain.count - 1] as? Activation,
                      let next = layers[i + 2 * chain.count] as? Linear {
                    chain.append(next)
                    activations.append(a.op)
                }
            }
            if chain.count >= 2 {
                y = y.linearChain(chain.map { $0.fed(y) }, activations: activations)
                i += 2 * chain.count - 1
            } else {
                y = layers[i](y)
                i += 1
            }
        }
        return y
    }
    public var parameters: [Parameter] { layers.flatMap(\.parameters) }

    /// A multi-layer perceptron: Linear → activation → … → Linear. Parameter names follow PyTorch's
    /// `nn.Sequential` state dict (`0.weight`, `0.bias`, `2.weight`, …).
    public static func mlp(_ sizes: [Int], activation: Kernels.Unary = .relu, seed: UInt64) -> Sequential {
        precondition(sizes.count >= 2, "an MLP needs at least input and output sizes")
        var rng = SeededRandom(seed: seed)
        var layers: [Layer] = []
        for i in 0..<(sizes.count - 1) {
            layers.append(Linear(sizes[i], sizes[i + 1], name: "\(layers.count)", rng: &rng))
            if i < sizes.count - 2 { layers.append(Activation(activation)) }
        }
        return Sequential(layers)
    }
}

/// 2-D convolution layer, NCHW; PyTorch's layout (`weight` (O, C, kh, kw), `bias` (O)) and default init.
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true,
                name: String = "conv", rng: inout SeededRandom) {
        let bound = 1 / Float(inChannels * kernel * kernel).squareRoot()
        weight = Parameter(name + ".weight", .uniform([outChannels, inChannels, kernel, kernel], low: -bound, high: bound, rng: &rng))
        self.bias = bias ? Parameter(name + ".bias", .uniform([outChannels], low: -bound, high: bound, rng: &rng)) : nil
        self.stride = stride
        self.padding = padding
    }

    public func callAsFunction(_ x: Var) -> Var {
        x.conv2d(x.graph.param(weight), bias.map { x.graph.param($0) }, stride: stride, padding: padding)
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
}

/// Max or average pooling as a layer.
public final class Pool2d: Layer {
    public let kind: ConvKernels.Pool, kernel: Int, stride: Int
    public init(_ kind: ConvKernels.Pool, kernel: Int, stride: Int? = nil) {
        self.kind = kind
        self.kernel = kernel
        self.stride = stride ?? kernel
    }
    public func callAsFunction(_ x: Var) -> Var { x.pool2d(kind, kernel: kernel, stride: stride) }
    public var parameters: [Parameter] { [] }
}

/// Reshapes (N, …) to (N, rest) or any fixed shape with a leading batch dimension.
public final class Flatten: Layer {
    public init() {}
    public func callAsFunction(_ x: Var) -> Var {
        let n = x.shape[0]
        return x.reshaped([n, x.value.count / max(1, n)])
    }
    public var parameters: [Parameter] { [] }
}

/// Classification metrics.
public enum Metrics {
    /// Fraction of rows of `logits` (N, C) whose arg-max equals the label.
    public static func accuracy(logits: Tensor, labels: [Int32]) -> Double {
        labels.isEmpty ? .nan : Double(correct(logits: logits, labels: labels)) / Double(labels.count)
    }

    /// Rows of `logits` (N, C) whose arg-max (the first, on ties) equals the label.
    public static func correct(logits: Tensor, labels: [Int32]) -> Int {
        precondition(logits.rank == 2 && logits.shape[0] == labels.count, "accuracy: logits \(logits.shape) for \(labels.count) labels")
        let c = logits.shape[1]
        var correct = 0
        logits.withData { p in
            for i in 0..<labels.count where argmax(p, row: i, classes: c) == Int(labels[i]) { correct += 1 }
        }
        return correct
    }

    /// Index of the largest of `classes` values in row `row` (the first, on ties).
    public static func argmax(_ p: UnsafeBufferPointer<Float>, row: Int, classes c: Int) -> Int {
        var best = 0
        for k in 1..<max(1, c) where p[row * c + k] > p[row * c + best] { best = k }
        return best
    }
}

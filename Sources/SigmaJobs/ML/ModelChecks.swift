import SigmaModel

extension ModelSpec {
    /// Weights and biases of the model (saturating; 0 for an invalid spec).
    public var parameterCount: UInt64 {
        if let c = cnn { return (try? c.shapes("")).map { c.parameterCount($0) } ?? 0 }
        if let t = transformer { return t.parameterCount }
        guard mlp.count >= 2, mlp.allSatisfy({ $0 >= 1 }) else { return 0 }
        return saturatingSum(zip(mlp, mlp.dropFirst()).map { saturatingSum([saturatingProduct([UInt64($0), UInt64($1)]), UInt64($1)]) })
    }

    /// Values one row produces through every layer (what a batch holds in activations, forward and backward).
    var activationsPerRow: UInt64 {
        if let c = cnn {
            // (each layer's output, and a conv's unfolded patches)
            let shapes = (try? c.shapes("")) ?? []
            var n: UInt64 = 0
            for (i, s) in shapes.enumerated() {
                n = saturatingSum([n, UInt64(s.reduce(1, *))])
                if i > 0, case .conv(_, let k, _, _) = c.layers[i - 1] {
                    n = saturatingSum([n, saturatingProduct([UInt64(shapes[i - 1][0]), UInt64(k * k), UInt64(s[1] * s[2])])])
                }
            }
            return n
        }
        if let t = transformer {
            // (per position and layer: the projections, the feed-forward hidden state, norms; attention's T × T per head)
            let perLayer = saturatingSum([saturatingProduct([UInt64(t.length), UInt64(8 * t.width + 2 * t.hidden)]),
                                          saturatingProduct([UInt64(t.heads), UInt64(t.length), UInt64(t.length), 3])])
            return saturatingProduct([UInt64(max(1, t.layers)), perLayer])
        }
        return saturatingSum(mlp.map { UInt64(max(0, $0)) })
    }

    /// bytes: the model on one process (weights, a gradient, `states` optimizer state vectors, the reduce's partial
    /// sums) and `batch` rows of activations (forward and backward) through every layer.
    func memoryEstimate(batch: Int, states: UInt64) -> UInt64 {
        let floats = saturatingProduct([parameterCount, 3 + states])
        let activations = saturatingProduct([UInt64(max(0, batch)), activationsPerRow, 4])
        return saturatingProduct([saturatingSum([floats, activations]), 4])
    }

    func validate(_ path: String, limits: SpecLimits) throws {
        if let w = weights, w.isEmpty { throw SpecError(field: path + "weights", problem: "empty path") }
        if let c = cnn {
            let shapes = try c.shapes(path + "cnn.")
            let weighted = c.layers.filter { if case .conv = $0 { true } else if case .linear = $0 { true } else { false } }.count
            guard weighted <= limits.layers else {
                throw limits.exceeded(path + "cnn.layers", weighted, limits.layers, key: "layers", unit: " conv and linear layers")
            }
            guard shapes.last?.count == 1 else {
                throw SpecError(field: path + "cnn.layers", problem: "must end in flat rows (flatten, then linear to the classes), got \(shapes.last ?? [])")
            }
            try checkParameters(path + "cnn", limits)
            return
        }
        if let t = transformer {
            try t.validate(path + "transformer.", limits: limits)
            try checkParameters(path + "transformer", limits)
            return
        }
        if let e = encoder {
            guard !e.folder.isEmpty else { throw SpecError(field: path + "encoder", problem: "empty path") }
            guard e.classes >= 2, e.classes <= limits.width else { throw SpecError(field: path + "classes", problem: "must be between 2 and \(limits.width), got \(e.classes)") }
            return
        }
        guard mlp.count >= 2 else { throw SpecError(field: path + "mlp", problem: "needs at least input and output widths, got \(mlp)") }
        guard mlp.count - 1 <= limits.layers else { throw limits.exceeded(path + "mlp", mlp.count - 1, limits.layers, key: "layers", unit: " layers") }
        for (i, v) in mlp.enumerated() where v < 1 || v > limits.width {
            throw SpecError(field: path + "mlp[\(i)]", problem: "expected a width between 1 and \(limits.width) (cluster.yaml limits.width), got \(v)")
        }
        try checkParameters(path + "mlp", limits)
        guard MLModels.activations.contains(activation) else {
            throw SpecError(field: path + "activation", problem: "'\(activation)' is not one of \(MLModels.activations.joined(separator: ", "))")
        }
    }

    func checkParameters(_ field: String, _ limits: SpecLimits) throws {
        guard parameterCount <= UInt64(limits.parameters) else {
            throw limits.exceeded(field, parameterCount, limits.parameters, key: "parameters", unit: " parameters")
        }
    }
}

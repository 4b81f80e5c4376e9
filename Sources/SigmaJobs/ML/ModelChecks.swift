import SigmaModel

extension ModelSpec {
    /// Weights and biases of the MLP (saturating; 0 for an invalid spec).
    public var parameterCount: UInt64 {
        guard mlp.count >= 2, mlp.allSatisfy({ $0 >= 1 }) else { return 0 }
        return saturatingSum(zip(mlp, mlp.dropFirst()).map { saturatingSum([saturatingProduct([UInt64($0), UInt64($1)]), UInt64($1)]) })
    }

    /// bytes: the model on one process (weights, a gradient, `states` optimizer state vectors, the reduce's partial
    /// sums) and `batch` rows of activations (forward and backward) through every layer.
    func memoryEstimate(batch: Int, states: UInt64) -> UInt64 {
        let floats = saturatingProduct([parameterCount, 3 + states])
        let widths = saturatingSum(mlp.map { UInt64(max(0, $0)) })
        let activations = saturatingProduct([UInt64(max(0, batch)), widths, 4])
        return saturatingProduct([saturatingSum([floats, activations]), 4])
    }

    func validate(_ path: String, limits: SpecLimits) throws {
        guard mlp.count >= 2 else { throw SpecError(field: path + "mlp", problem: "needs at least input and output widths, got \(mlp)") }
        guard mlp.count - 1 <= limits.layers else { throw limits.exceeded(path + "mlp", mlp.count - 1, limits.layers, key: "layers", unit: " layers") }
        for (i, v) in mlp.enumerated() where v < 1 || v > limits.width {
            throw SpecError(field: path + "mlp[\(i)]", problem: "expected a width between 1 and \(limits.width) (cluster.yaml limits.width), got \(v)")
        }
        guard parameterCount <= UInt64(limits.parameters) else {
            throw limits.exceeded(path + "mlp", parameterCount, limits.parameters, key: "parameters", unit: " parameters")
        }
        guard ["relu", "gelu", "tanh"].contains(activation) else {
            throw SpecError(field: path + "activation", problem: "'\(activation)' is not one of relu, gelu, tanh")
        }
        if let w = weights, w.isEmpty { throw SpecError(field: path + "weights", problem: "empty path") }
    }
}

import SigmaModel

extension Hello {
    /// The value of a `key=value` feature, e.g. `feature("blas")` → "Haswell"; nil when absent.
    public func feature(_ key: String) -> String? {
        for f in features.split(separator: ",") where f.hasPrefix(key + "=") { return String(f.dropFirst(key.count + 1)) }
        return nil
    }
    /// Every `key=value` feature (the first of a key wins, as `feature`).
    public var featureValues: [String: String] {
        var out: [String: String] = [:]
        for f in features.split(separator: ",") {
            guard let eq = f.firstIndex(of: "=") else { continue }
            let k = String(f[..<eq])
            if out[k] == nil { out[k] = String(f[f.index(after: eq)...]) }
        }
        return out
    }
}

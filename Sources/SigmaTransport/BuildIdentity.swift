import CSysShims

/// Which binary this process runs: the linker's GNU build id of the executable (the same bytes for the same build,
/// different for any other), so a coordinator can tell workers of another build apart — bitwise-equal results need
/// one build everywhere (docs/operations.md, "Mixed builds").
public enum BuildIdentity {
    /// The build id in hex, its first 12 digits (48 bits: enough to tell builds apart); "" when the executable
    /// carries none.
    public static let id: String = {
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = Int(csys_build_id(&bytes, Int32(bytes.count)))
        let digits = Array("0123456789abcdef")
        return String(bytes.prefix(n).flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }.prefix(12))
    }()

    /// `version` with the build id: what HELLO and READY carry ("sigma 0.1.0 (build 1a2b3c4d5e6f)").
    public static func described(_ version: String) -> String { id.isEmpty ? version : version + " (build \(id))" }
}

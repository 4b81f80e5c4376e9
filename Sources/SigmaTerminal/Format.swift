import Foundation
import SigmaModel
import SigmaProtocol

// Numbers as the terminal shows them: durations, bytes, rates, aligned columns.

/// 1234567 → "1.23M", 4321 → "4.3k".
public func formatRate(_ r: Double) -> String {
    if r >= 1e6 { return String(format: "%.2fM", r / 1e6) }
    if r >= 1e3 { return String(format: "%.1fk", r / 1e3) }
    return String(format: "%.0f", r)
}

public func formatDuration(_ ns: UInt64) -> String {
    let s = Double(ns) / 1e9
    if s < 1e-3 { return String(format: "%.0fµs", s * 1e6) }
    if s < 1 { return String(format: "%.1fms", s * 1e3) }
    if s < 120 { return String(format: "%.1fs", s) }
    return String(format: "%.0fm", s / 60)
}

public func formatBytes(_ b: UInt64) -> String {
    let g = Double(b) / 1_073_741_824
    if g >= 1 { return String(format: "%.1fGiB", g) }
    if b >= 1_048_576 { return String(format: "%.0fMiB", Double(b) / 1_048_576) }
    return String(format: "%.0fKiB", Double(b) / 1024)
}

/// Left-aligned columns, each at least its width (a longer value keeps one space after it).
public func columns(_ cols: [String], _ widths: [Int]) -> String {
    cols.enumerated().map { i, c in
        let w = i < widths.count ? widths[i] : 8
        return c.count >= w ? c + " " : c + String(repeating: " ", count: w - c.count)
    }.joined()
}

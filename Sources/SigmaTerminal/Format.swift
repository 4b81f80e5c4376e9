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

/// The numbers of the live progress lines (`sigma submit --follow`, `sigma train`).
public enum ProgressText {
    /// "12.3 shards/s", or with the job's item count known "4.1M rows/s" (shards are near-equal ranges).
    public static func throughput(done: UInt32, total: UInt32, items: UInt64?, unit: String, seconds: Double) -> String {
        if let n = items, total > 0 {
            let perSecond = Double(n) * Double(done) / Double(total) / seconds
            return scaled(perSecond) + " \(unit)/s"
        }
        return String(format: "%.1f shards/s", Double(done) / seconds)
    }

    /// 950 → "950", 12,345 → "12.3k", 4.1e6 → "4.1M", 2e9 → "2.0G".
    public static func scaled(_ x: Double) -> String {
        switch x {
        case 1e9...: String(format: "%.1fG", x / 1e9)
        case 1e6...: String(format: "%.1fM", x / 1e6)
        case 1e4...: String(format: "%.1fk", x / 1e3)
        default: String(format: "%.0f", x)
        }
    }

    /// (samples/s, seconds left) of a training run measured from step `fromStep`, `elapsed` seconds ago, to `step`
    /// now; nil before there is an interval to measure.
    public static func trainingRate(elapsed: Double, fromStep: Int, step: Int, steps: Int, batch: Int) -> (rate: Double, eta: Double)? {
        let done = step - fromStep
        guard elapsed > 0, done > 0 else { return nil }
        let left = Pace.secondsLeft(elapsed: elapsed, done: Double(done), total: Double(max(done, steps - fromStep))) ?? 0
        return (Double(done * batch) / elapsed, left)
    }
}

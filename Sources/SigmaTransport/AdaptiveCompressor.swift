import SigmaModel
import Synchronization

/// LZ4 only when it pays on this link: a large payload is compressed when the time its smaller size saves on the
/// wire (bytes saved ÷ link bandwidth) exceeds the time compressing costs (size ÷ measured LZ4 speed). The ratio and
/// the speed are measured on the payloads themselves (moving averages); when compression stops paying it is
/// re-tried on one large payload in `probeEvery`, so a change in the data (e.g. ReLU-sparse gradients) is noticed.
/// Small payloads (< 64 KiB) are always tried: it costs microseconds.
public final class AdaptiveCompressor: PayloadCompressor {
    public let lz4: LZ4Compressor
    /// Link bandwidth, bytes/s (loopback ≈ 2 GB/s; a 1 Gb/s network 125 MB/s).
    public let bandwidth: Double
    public let probeEvery: Int
    static let small = 64 * 1024

    struct State {
        var ratio = 1.0
        var speed = 1e9
        var sinceProbe = Int.max / 2
        var attempts = 0
        var used = 0
        var skipped = 0
        var raw: UInt64 = 0
        var wire: UInt64 = 0
    }
    private let state = Mutex(State())

    public init(bandwidth: Double, minRatio: Double = 1.1, probeEvery: Int = 16) {
        lz4 = LZ4Compressor(minRatio: minRatio)
        self.bandwidth = bandwidth
        self.probeEvery = probeEvery
    }

    /// A bandwidth guess from an endpoint: loopback and ipc are fast, anything else is taken as 1 Gb/s.
    public static func bandwidth(for endpoint: String) -> Double {
        let loopback = endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") || endpoint.contains("://127.")
            || endpoint.contains("://localhost") || endpoint.contains("://[::1]")
        return loopback ? 2e9 : 125e6
    }

    /// (large payloads tried, compressed, sent raw without trying)
    public var counts: (attempts: Int, used: Int, skipped: Int) { state.withLock { ($0.attempts, $0.used, $0.skipped) } }

    /// Payload bytes offered for compression, and what went on the wire for them.
    public var totals: (raw: UInt64, wire: UInt64) { state.withLock { ($0.raw, $0.wire) } }

    public func compress(_ frame: Frame) -> Frame? {
        let z = decide(frame)
        state.withLock { s in
            s.raw &+= UInt64(frame.count)
            s.wire &+= UInt64(z?.count ?? frame.count)
        }
        return z
    }

    func decide(_ frame: Frame) -> Frame? {
        let n = Double(frame.count)
        if frame.count < AdaptiveCompressor.small { return lz4.compress(frame) }
        let tryIt = state.withLock { s -> Bool in
            let gain = n * (1 - 1 / s.ratio) / bandwidth
            let cost = n / s.speed
            s.sinceProbe += 1
            if gain > cost || s.sinceProbe >= probeEvery {
                s.sinceProbe = 0
                s.attempts += 1
                return true
            }
            s.skipped += 1
            return false
        }
        guard tryIt else { return nil }
        let t0 = monotonicNanos()
        let z = lz4.compressAlways(frame)
        let dt = max(1, Double(monotonicNanos() - t0)) / 1e9
        let ratio = z.map { n / Double($0.count) } ?? 1
        let pays = state.withLock { s -> Bool in
            s.ratio = 0.5 * s.ratio + 0.5 * ratio
            s.speed = 0.5 * s.speed + 0.5 * (n / dt)
            let ok = ratio >= lz4.minRatio && n * (1 - 1 / ratio) / bandwidth > n / s.speed
            if ok { s.used += 1 }
            return ok
        }
        return pays ? z : nil
    }

    public func decompress(_ frame: Frame, limit: Int) throws -> Frame { try lz4.decompress(frame, limit: limit) }
}

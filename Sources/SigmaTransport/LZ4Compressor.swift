import CLZ4
import SigmaModel

/// LZ4 block compression for payload frames: `u32 little-endian original size | LZ4 block`.
/// Sends raw when the ratio is below `minRatio` (dense floats barely compress; see docs/performance.md).
public struct LZ4Compressor: PayloadCompressor {
    public var minRatio: Double
    public init(minRatio: Double = 1.1) { self.minRatio = minRatio }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public func compress(_ frame: Frame) -> Frame? {
        guard let z = compressAlways(frame), Double(frame.count) / Double(z.count) >= minRatio else { return nil }
        return z
    }

    /// The compressed frame whatever the ratio (nil only if LZ4 cannot take it).
    public func compressAlways(_ frame: Frame) -> Frame? {
        guard frame.count > 0, frame.count < Int(LZ4_MAX_INPUT_SIZE) else { return nil }
        let bound = Int(LZ4_compressBound(Int32(frame.count)))
        var out = [UInt8](repeating: 0, count: 4 + bound)
        let n = frame.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst -> Int32 in
                dst.storeBytes(of: UInt32(frame.count).littleEndian, as: UInt32.self)
                return LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                            (dst.baseAddress! + 4).assumingMemoryBound(to: CChar.self),
                                            Int32(frame.count), Int32(bound))
            }
        }
        guard n > 0 else { return nil }
        return Frame(Array(out.prefix(4 + Int(n))))
    }

    public func decompress(_ frame: Frame, limit: Int) throws -> Frame {
        guard frame.count >= 4 else { throw Failure(description: "compressed frame of \(frame.count) bytes has no size prefix") }
        let size = frame.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        guard size <= limit else { throw Failure(description: "declared size \(size) exceeds the limit of \(limit)") }
        guard size > 0 else { throw Failure(description: "declared size is 0") }
        return try Frame(count: size) { dst in
            let n = frame.withUnsafeBytes { src in
                LZ4_decompress_safe((src.baseAddress! + 4).assumingMemoryBound(to: CChar.self),
                                    dst.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(src.count - 4), Int32(size))
            }
            guard n == size else {
                throw Failure(description: n < 0 ? "corrupt LZ4 block" : "decompressed \(n) bytes, header said \(size)")
            }
        }
    }
}

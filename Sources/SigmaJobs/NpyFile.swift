import Foundation
import SigmaEngine
#if canImport(Glibc)
import Glibc
#endif

/// A data file could not be used: which file and what was wrong (the engine's `FormatError`, one error type for
/// every file format).
public typealias DataError = FormatError

extension FormatError {
    public init(path: String, problem: String) { self.init(file: path, problem: problem) }
    public var path: String { file }
}

/// The header of a `.npy` file (format versions 1.0, 2.0, 3.0), validated against the file size.
public struct NpyHeader: Sendable, Equatable {
    public enum DType: String, Sendable { case float32 = "f4", float64 = "f8" }
    public let dtype: DType
    public let bigEndian: Bool
    public let shape: [Int]
    /// Byte offset of the first value.
    public let dataOffset: Int

    public var rows: Int { shape.first ?? 1 }
    /// Values per row (1 for 1-D arrays).
    public var columns: Int { shape.count == 2 ? shape[1] : 1 }
    public var itemSize: Int { dtype == .float32 ? 4 : 8 }
    public var dataBytes: Int { rows * columns * itemSize }

    /// Parses the header from the first bytes of a file of `fileSize` bytes.
    public static func parse(_ bytes: [UInt8], fileSize: Int, path: String) throws -> NpyHeader {
        func fail(_ p: String) -> DataError { DataError(path: path, problem: p) }
        let h: NumPyFormat.Header
        do {
            h = try bytes.withUnsafeBytes { try NumPyFormat.parseHeader($0, file: path) }
        } catch let e as FormatError {
            throw fail(e.problem)
        }
        let d = h.descr
        let big: Bool
        let code: Substring
        switch d.first {
        case "<", "|", "=": big = false; code = d.dropFirst()
        case ">": big = true; code = d.dropFirst()
        default: big = false; code = Substring(d)
        }
        guard let dtype = DType(rawValue: String(code)) else {
            throw fail("dtype '\(FormatError.shown(d, code: true))' is not supported; map-reduce reads float32 ('<f4') or float64 ('<f8')")
        }
        let fortran = h.fortranOrder, shape = h.shape
        guard shape.count == 1 || shape.count == 2 else {
            throw fail("shape \(shape) has \(shape.count) dimensions; map-reduce reads 1-D or 2-D arrays")
        }
        if fortran && shape.count == 2 && shape[0] > 1 && shape[1] > 1 {
            throw fail("Fortran-ordered 2-D arrays are not supported; save with C order (np.ascontiguousarray)")
        }
        if shape.count == 2 && shape[1] == 0 && shape[0] > 0 {
            throw fail("shape \(shape) has rows of no values; map-reduce reads rows of at least one value")
        }
        let header = NpyHeader(dtype: dtype, bigEndian: big, shape: shape, dataOffset: h.dataOffset)
        let (prod, o1) = header.rows.multipliedReportingOverflow(by: header.columns)
        let (need, o2) = prod.multipliedReportingOverflow(by: header.itemSize)
        guard !o1, !o2 else { throw fail("shape \(shape) is too large") }
        guard header.dataOffset <= fileSize, need <= fileSize - header.dataOffset else {
            throw fail("truncated: shape \(shape) of \(dtype.rawValue) needs \(need) data bytes, file has \(max(0, fileSize - header.dataOffset))")
        }
        return header
    }
}

/// Reads row ranges of a `.npy` file with `pread`, so workers touch only their shard.
public final class NpyFile {
    public let path: String
    public let header: NpyHeader
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        // (a path checked by `DataRoots` is a real path: a symlink found there now was put there since, and is refused)
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        self.fd = fd
        guard fd >= 0 else { throw DataError(path: path, problem: "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw DataError(path: path, problem: "cannot stat")
        }
        func read(_ n: Int) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: min(Int(st.st_size), n))
            let got = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            return got < b.count ? Array(b.prefix(max(0, got))) : b
        }
        var head = read(4096)
        // (a header longer than that — as its prefix declares — is read whole, up to the format's 1 MiB; a prefix that
        // is no .npy one is left to the parser's error)
        if let span = try? head.withUnsafeBytes({ try NumPyFormat.headerSpan($0, file: path) }) {
            let declared = span.start + span.count
            if declared > head.count, span.count <= 1 << 20 { head = read(declared) }
        }
        do {
            header = try NpyHeader.parse(head, fileSize: Int(st.st_size), path: path)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Reads rows `[start, start+count)` and converts them to Float64 into `out` (rows × columns values).
    public func readRows(start: Int, count: Int, into out: UnsafeMutableBufferPointer<Double>) throws {
        guard start >= 0, count >= 0, start + count <= header.rows else {
            throw DataError(path: path, problem: "rows \(start)..<\(start + count) are outside 0..<\(header.rows)")
        }
        let n = count * header.columns
        precondition(out.count >= n)
        let bytes = n * header.itemSize
        let offset = header.dataOffset + start * header.columns * header.itemSize
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 16)
        defer { raw.deallocate() }
        var done = 0
        while done < bytes {
            let r = pread(fd, raw + done, bytes - done, off_t(offset + done))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { throw DataError(path: path, problem: "short read at byte \(offset + done) (file changed?)") }
            done += r
        }
        switch header.dtype {
        case .float32:
            let p = raw.assumingMemoryBound(to: UInt32.self)
            if header.bigEndian {
                for i in 0..<n { out[i] = Double(Float(bitPattern: UInt32(bigEndian: p[i]))) }
            } else {
                for i in 0..<n { out[i] = Double(Float(bitPattern: p[i])) }
            }
        case .float64:
            let p = raw.assumingMemoryBound(to: UInt64.self)
            if header.bigEndian {
                for i in 0..<n { out[i] = Double(bitPattern: UInt64(bigEndian: p[i])) }
            } else {
                for i in 0..<n { out[i] = Double(bitPattern: p[i]) }
            }
        }
    }

    /// Writes a little-endian `.npy` (format 1.0) file; used by tests, benchmarks and the demo.
    public static func write(path: String, float64 values: [Double], shape: [Int]? = nil) throws {
        try write(path: path, descr: "<f8", count: values.count, shape: shape ?? [values.count]) { values.withUnsafeBytes { Data($0) } }
    }

    public static func write(path: String, float32 values: [Float], shape: [Int]? = nil) throws {
        try write(path: path, descr: "<f4", count: values.count, shape: shape ?? [values.count]) { values.withUnsafeBytes { Data($0) } }
    }

    private static func write(path: String, descr: String, count: Int, shape: [Int], body: () -> Data) throws {
        var data = NumPyFormat.npyHeader(descr: descr, shape: shape)
        data.append(body())
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw DataError(path: path, problem: "cannot write")
        }
    }
}

import CZlib
import Foundation

/// `.npy` (format 1.0–3.0) and `.npz` (an uncompressed zip of `.npy` files), read into Float32 tensors and written
/// as little-endian float32 — NumPy's own formats, so NumPy and PyTorch users can hand data and labels to Sigma.
public enum NumPyFormat {
    /// A parsed `.npy` header.
    public struct Header: Sendable, Equatable {
        public let descr: String
        public let fortranOrder: Bool
        public let shape: [Int]
        public let dataOffset: Int
    }

    /// Where the header text starts and how many bytes it has, as the first 10 or 12 bytes of a .npy file declare
    /// them (format 1: a 16-bit length after 10 bytes; 2 and 3: 32-bit after 12); nil when `bytes` is too short for
    /// its version's prefix. Throws for a bad magic or an unknown version.
    public static func headerSpan(_ bytes: UnsafeRawBufferPointer, file: String) throws -> (start: Int, count: Int)? {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw FormatError(file: file, problem: "not a .npy file (bad magic)") }
        switch bytes[6] {
        case 1: return (10, Int(bytes[8]) | Int(bytes[9]) << 8)
        case 2, 3:
            guard bytes.count >= 12 else { return nil }
            return (12, Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24)
        default: throw FormatError(file: file, problem: "unsupported .npy format version \(bytes[6]).\(bytes[7])")
        }
    }

    /// Parses the header at the start of `bytes` (errors name `file`).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, file: String) throws -> Header {
        func fail(_ p: String) -> FormatError { FormatError(file: file, problem: p) }
        guard let (start, len) = try headerSpan(bytes, file: file) else { throw fail("truncated header") }
        guard len <= 1 << 20, bytes.count >= start + len else { throw fail("truncated header: \(len) bytes declared") }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + len)]), as: UTF8.self)
        func value(_ key: String) -> String? {
            guard let r = text.range(of: "'\(key)'") else { return nil }
            let rest = text[r.upperBound...].drop { $0 == ":" || $0 == " " }
            if rest.first == "(" { return rest.firstIndex(of: ")").map { String(rest[rest.index(after: rest.startIndex)..<$0]) } }
            let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) ?? rest.endIndex
            return String(rest[..<end]).trimmingCharacters(in: CharacterSet(charactersIn: "' \""))
        }
        guard let descr = value("descr") else { throw fail("header has no 'descr'") }
        guard let shapeText = value("shape") else { throw fail("header has no 'shape'") }
        var shape: [Int] = []
        for part in shapeText.split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let v = Int(t), v >= 0 else { throw fail("bad shape entry (not a non-negative integer)") }
            shape.append(v)
        }
        return Header(descr: descr, fortranOrder: value("fortran_order") == "True", shape: shape, dataOffset: start + len)
    }

    /// Reads a `.npy` file: float (f2, f4, f8), signed and unsigned integers (1–8 bytes) and bool, either byte order,
    /// C order; converted to Float32 (integers exact below 2²⁴ — labels, token ids).
    public static func readNpy(path: String) throws -> Tensor {
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(file: path, problem: "cannot read") }
        return try readNpy(data, file: path)
    }

    public static func readNpy(_ data: Data, file: String) throws -> Tensor {
        try data.withUnsafeBytes { raw in
            let h = try parseHeader(raw, file: file)
            func fail(_ p: String) -> FormatError { FormatError(file: file, problem: p) }
            var d = h.descr
            var big = false
            if let f = d.first, "<>|=".contains(f) { big = f == ">"; d.removeFirst() }
            guard let kind = d.first, let size = Int(d.dropFirst()), [1, 2, 4, 8].contains(size), "fiub".contains(kind) else {
                throw fail("dtype '\(FormatError.shown(h.descr, code: true))' is not supported (float, int, uint or bool)")
            }
            if kind == "f" && size == 1 { throw fail("dtype '\(FormatError.shown(h.descr, code: true))' is not supported") }
            guard let count = checkedProduct(h.shape + [size]).map({ $0 / size }) else { throw fail("shape \(h.shape) is too large") }
            if h.fortranOrder && h.shape.filter({ $0 > 1 }).count > 1 { throw fail("Fortran-ordered arrays are not supported; save in C order") }
            guard raw.count - h.dataOffset >= count * size else {
                throw fail("truncated: shape \(h.shape) of '\(FormatError.shown(h.descr, code: true))' needs \(count * size) data bytes, file has \(raw.count - h.dataOffset)")
            }
            let base = h.dataOffset
            func word(_ i: Int) -> UInt64 {
                var v: UInt64 = 0
                for b in 0..<size { v |= UInt64(raw[base + i * size + (big ? size - 1 - b : b)]) << (8 * UInt64(b)) }
                return v
            }
            return Tensor(shape: h.shape) { out in
                for i in 0..<count {
                    let w = word(i)
                    switch (kind, size) {
                    case ("f", 2): out[i] = Float(Float16(bitPattern: UInt16(w)))
                    case ("f", 4): out[i] = Float(bitPattern: UInt32(w))
                    case ("f", 8): out[i] = Float(Double(bitPattern: w))
                    case ("i", _):
                        let shift = UInt64(64 - 8 * size)
                        out[i] = Float(Int64(bitPattern: w << shift) >> Int64(shift))
                    default: out[i] = Float(w)
                    }
                }
            }
        }
    }

    /// The header of a little-endian, C-order `.npy` (format 1.0) of `descr` (`<f4`, `<f8`, …) and `shape`: magic,
    /// version, length, and the dictionary padded so the data starts at a multiple of 64 bytes. Sigma's one `.npy`
    /// writer: the data follows it.
    public static func npyHeader(descr: String, shape: [Int]) -> Data {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + dict.utf8.count + 1) % 64 != 0 { dict += " " }
        dict += "\n"
        var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(dict.utf8.count & 0xFF), UInt8(dict.utf8.count >> 8)])
        d.append(contentsOf: Array(dict.utf8))
        return d
    }

    /// The bytes of a little-endian float32 `.npy` (format 1.0).
    public static func npyData(_ t: Tensor) -> Data {
        var d = npyHeader(descr: "<f4", shape: t.shape)
        t.withData { d.append(UnsafeBufferPointer(start: $0.baseAddress, count: $0.count)) }   // little-endian host
        return d
    }

    public static func writeNpy(_ t: Tensor, path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: npyData(t)) else { throw FormatError(file: path, problem: "cannot write") }
    }

    /// Reads every array of an `.npz` written by `np.savez` (stored entries) or `np.savez_compressed` (deflated
    /// entries, inflated with zlib; their CRC-32 checked). `maxBytes`: the most the entries may hold together, as
    /// declared before any is read or inflated (a deflated entry can inflate a thousandfold; at most 4 GiB each).
    public static func readNpz(path: String, maxBytes: Int = Int.max) throws -> [String: Tensor] {
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(file: path, problem: "cannot read") }
        func fail(_ p: String) -> FormatError { FormatError(file: path, problem: p) }
        var out: [String: Tensor] = [:]
        var offset = 0
        let bytes = [UInt8](data)
        func u16(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        var total = 0
        while offset + 4 <= bytes.count, u32(offset) == 0x04034b50 {
            guard offset + 30 <= bytes.count else { throw fail("truncated zip entry header") }
            let method = u16(offset + 8), flags = u16(offset + 6), crc = UInt32(u32(offset + 14))
            var size = u32(offset + 18), inflated = u32(offset + 22)
            let nameLen = u16(offset + 26), extraLen = u16(offset + 28)
            guard offset + 30 + nameLen + extraLen <= bytes.count else { throw fail("truncated zip entry") }
            let fullName = String(decoding: bytes[(offset + 30)..<(offset + 30 + nameLen)], as: UTF8.self)
            let name = FormatError.shown(fullName)
            // ZIP64 (numpy writes it for every entry): the real size is in the extra field.
            var e = offset + 30 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = u16(e), len = u16(e + 2)
                guard e + 4 + len <= extraEnd else { throw fail("entry '\(name)': its extra field runs past its end (damaged)") }
                if id == 0x0001 && len >= 16 {
                    inflated = u32(e + 4) | u32(e + 4 + 4) << 32
                    size = u32(e + 4 + 8) | u32(e + 4 + 12) << 32
                }
                e += 4 + len
            }
            guard method == 0 || method == 8 else { throw fail("entry '\(name)' uses zip method \(method); expected stored or deflated") }
            guard flags & 0x08 == 0 else { throw fail("entry '\(name)' uses a data descriptor; not supported") }
            let start = extraEnd
            guard size >= 0, size <= bytes.count - start else { throw fail("entry '\(name)' is truncated (\(size) bytes declared)") }
            let held = method == 0 ? size : inflated
            guard held >= 0, held <= Int(UInt32.max), held <= maxBytes - total else {
                throw fail("entry '\(name)' declares \(held) bytes\(method == 0 ? "" : " inflated"); at most \(min(maxBytes, Int(UInt32.max))) fit (limits.memory_bytes)")
            }
            total += held
            let key = fullName.hasSuffix(".npy") ? String(fullName.dropLast(4)) : fullName
            let entry = method == 0 ? Data(bytes[start..<(start + size)]) : try inflate(bytes[start..<(start + size)], to: inflated, entry: name, file: path)
            guard crc32(entry) == crc else { throw fail("entry '\(name)' fails its CRC-32 check (damaged)") }
            out[key] = try readNpy(entry, file: path + ":" + name)
            offset = start + size
        }
        guard !out.isEmpty else { throw fail("no arrays found (not an .npz written by np.savez?)") }
        return out
    }

    /// A zip entry's raw deflate stream, inflated to exactly `count` bytes.
    static func inflate(_ compressed: ArraySlice<UInt8>, to count: Int, entry: String, file: String) throws -> Data {
        guard count >= 0, count <= Int(UInt32.max) else { throw FormatError(file: file, problem: "entry '\(entry)' declares \(count) bytes inflated") }
        var out = Data(count: count)
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw FormatError(file: file, problem: "zlib could not start inflating entry '\(entry)'")
        }
        defer { inflateEnd(&stream) }
        let status: Int32 = compressed.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                stream.next_in = UnsafeMutablePointer(mutating: src.bindMemory(to: Bytef.self).baseAddress)
                stream.avail_in = uInt(src.count)
                stream.next_out = dst.bindMemory(to: Bytef.self).baseAddress
                stream.avail_out = uInt(dst.count)
                return CZlib.inflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END, Int(stream.total_out) == count else {
            throw FormatError(file: file, problem: "entry '\(entry)' does not inflate to its \(count) bytes (damaged)")
        }
        return out
    }

    /// Writes an uncompressed `.npz` that `np.load` reads.
    public static func writeNpz(_ arrays: [String: Tensor], path: String) throws {
        var out = Data(), central = Data()
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func le32(_ v: Int) -> [UInt8] { le16(v & 0xFFFF) + le16((v >> 16) & 0xFFFF) }
        for name in arrays.keys.sorted() {
            let body = npyData(arrays[name]!)
            let fname = Array((name + ".npy").utf8)
            let crc = crc32(body)
            let local = out.count
            let common = le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21) + le32(Int(crc)) + le32(body.count) + le32(body.count)
                + le16(fname.count) + le16(0)
            out.append(contentsOf: le32(0x04034b50) + common + fname)
            out.append(body)
            central.append(contentsOf: le32(0x02014b50) + le16(20) + common + le16(0) + le16(0) + le16(0) + le32(0) + le32(local) + fname)
        }
        let cdOffset = out.count
        out.append(central)
        out.append(contentsOf: le32(0x06054b50) + le16(0) + le16(0) + le16(arrays.count) + le16(arrays.count) + le32(central.count) + le32(cdOffset) + le16(0))
        guard FileManager.default.createFile(atPath: path, contents: out) else { throw FormatError(file: path, problem: "cannot write") }
    }

    /// CRC-32 as zip files use it (zlib's).
    static func crc32(_ d: Data) -> UInt32 {
        d.withUnsafeBytes { b in UInt32(CZlib.crc32(0, b.bindMemory(to: Bytef.self).baseAddress, uInt(b.count))) }
    }
}

/// The IDX format of the MNIST files: `0 0 type ndim`, big-endian u32 dimensions, big-endian values.
public enum IDXFormat {
    public static func read(path: String) throws -> Tensor {
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(file: path, problem: "cannot read") }
        let b = [UInt8](data)
        func fail(_ p: String) -> FormatError { FormatError(file: path, problem: p) }
        guard b.count >= 4, b[0] == 0, b[1] == 0 else { throw fail("not an IDX file (bad magic)") }
        let size: Int
        switch b[2] {
        case 0x08, 0x09: size = 1
        case 0x0B: size = 2
        case 0x0C, 0x0D: size = 4
        case 0x0E: size = 8
        default: throw fail("unknown IDX type 0x\(String(b[2], radix: 16))")
        }
        let ndim = Int(b[3])
        guard ndim >= 1, b.count >= 4 + 4 * ndim else { throw fail("truncated header (\(ndim) dimensions)") }
        let shape = (0..<ndim).map { d in (0..<4).reduce(0) { $0 << 8 | Int(b[4 + 4 * d + $1]) } }
        guard let count = checkedProduct(shape + [size]).map({ $0 / size }) else { throw fail("shape \(shape) is too large") }
        let base = 4 + 4 * ndim
        guard b.count - base >= count * size else {
            throw fail("truncated: shape \(shape) needs \(count * size) data bytes, file has \(b.count - base)")
        }
        return Tensor(shape: shape) { out in
            for i in 0..<count {
                var w: UInt64 = 0
                for k in 0..<size { w = w << 8 | UInt64(b[base + i * size + k]) }
                switch b[2] {
                case 0x08: out[i] = Float(w)
                case 0x09: out[i] = Float(Int8(bitPattern: UInt8(w)))
                case 0x0B: out[i] = Float(Int16(bitPattern: UInt16(w)))
                case 0x0C: out[i] = Float(Int32(bitPattern: UInt32(w)))
                case 0x0D: out[i] = Float(bitPattern: UInt32(w))
                default: out[i] = Float(Double(bitPattern: w))
                }
            }
        }
    }
}

/// The product of `xs`, or nil if it overflows (shapes read from files are untrusted).
public func checkedProduct(_ xs: [Int]) -> Int? {
    var p = 1
    for x in xs {
        let (r, o) = p.multipliedReportingOverflow(by: x)
        if o { return nil }
        p = r
    }
    return p
}

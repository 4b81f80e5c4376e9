import Foundation

/// The safetensors format: `u64 little-endian header length | JSON header | tensor bytes`. The header maps names to
/// `{dtype, shape, data_offsets: [begin, end]}` relative to the byte buffer after the header.
public enum SafeTensors {
    /// Reads every tensor as Float32 (F32 as is; F16 and BF16 widened; I64 and I32 converted, exact below 2²⁴). Every inconsistency between the header and
    /// the file is an error naming the file and the tensor.
    public static func read(path: String) throws -> [String: Tensor] {
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(file: path, problem: "cannot read") }
        return try read(data, file: path)
    }

    public static func read(_ data: Data, file: String = "(memory)") throws -> [String: Tensor] {
        try readWithMetadata(data, file: file).tensors
    }

    /// The header's `__metadata__` string map alone, reading only the header from the file (a model's weights may be
    /// hundreds of megabytes).
    public static func metadata(path: String) throws -> [String: String] {
        func fail(_ p: String) -> FormatError { FormatError(file: path, problem: p) }
        guard let f = FileHandle(forReadingAtPath: path) else { throw fail("cannot read") }
        defer { try? f.close() }
        let size = try f.seekToEnd()
        try f.seek(toOffset: 0)
        let n = try headerLength(try f.read(upToCount: 8) ?? Data(), fileSize: size, file: path)
        guard let bytes = try f.read(upToCount: n), bytes.count == n else { throw fail("the header is cut short") }
        return try parseHeader(bytes, file: path).metadata
    }

    /// The header's length from the file's first 8 bytes (little-endian), checked against the file's size.
    private static func headerLength(_ prefix: Data, fileSize: UInt64, file: String) throws -> Int {
        guard fileSize >= 8, prefix.count == 8 else {
            throw FormatError(file: file, problem: "too short for a safetensors header (\(fileSize) bytes)")
        }
        let n = prefix.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n <= fileSize - 8, n <= 100_000_000 else {
            throw FormatError(file: file, problem: "header length exceeds the file (\(fileSize) bytes); not a safetensors file?")
        }
        return Int(n)
    }

    /// The JSON header: its entries, and its `__metadata__` string map.
    private static func parseHeader(_ bytes: Data, file: String) throws -> (header: [String: Any], metadata: [String: String]) {
        func fail(_ p: String) -> FormatError { FormatError(file: file, problem: p) }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: bytes) } catch {
            throw fail("header is not valid JSON: \(error.localizedDescription)")
        }
        guard let header = json as? [String: Any] else { throw fail("header is not a JSON object") }
        var metadata: [String: String] = [:]
        if let m = header["__metadata__"] {
            guard let mm = m as? [String: String] else { throw fail("__metadata__ must map strings to strings") }
            metadata = mm
        }
        return (header, metadata)
    }

    /// The tensors and the header's `__metadata__` string map.
    public static func readWithMetadata(_ data: Data, file: String = "(memory)") throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        func fail(_ p: String) -> FormatError { FormatError(file: file, problem: p) }
        let headerEnd = 8 + (try headerLength(Data(data.prefix(8)), fileSize: UInt64(data.count), file: file))
        let (header, metadata) = try parseHeader(data.subdata(in: 8..<headerEnd), file: file)
        let bufferSize = data.count - headerEnd
        var out: [String: Tensor] = [:]
        var spans: [(Int, Int, String)] = []
        for (name, entry) in header where name != "__metadata__" {
            let shownName = FormatError.shown(name)
            guard let e = entry as? [String: Any], let dtype = e["dtype"] as? String, let shapeAny = e["shape"] as? [Any],
                  let offsAny = e["data_offsets"] as? [Any], offsAny.count == 2 else {
                throw fail("tensor '\(shownName)': entry needs dtype, shape and data_offsets [begin, end]")
            }
            // (whole non-negative numbers only: 2.9 is not a size, nor 1e300)
            func whole(_ v: Any) -> Int? {
                guard let n = v as? NSNumber, String(cString: n.objCType) != "c", let i = Int(exactly: n.doubleValue), i >= 0 else { return nil }
                return i
            }
            let shape = try shapeAny.map { v -> Int in
                guard let i = whole(v) else { throw fail("tensor '\(shownName)': shape entries must be whole non-negative numbers") }
                return i
            }
            let offs = try offsAny.map { v -> Int in
                guard let i = whole(v) else { throw fail("tensor '\(shownName)': data_offsets must be whole non-negative numbers") }
                return i
            }
            let itemSize: Int
            switch dtype {
            case "F32": itemSize = 4
            case "F16", "BF16": itemSize = 2
            case "I64": itemSize = 8
            case "I32": itemSize = 4
            default: throw fail("tensor '\(shownName)': dtype \(FormatError.shown(dtype, code: true)) is not supported (F32, F16, BF16, I64, I32)")
            }
            guard let bytes = checkedProduct(shape + [itemSize]) else { throw fail("tensor '\(shownName)': shape \(shape) is too large") }
            let count = bytes / itemSize
            guard offs[0] <= offs[1], offs[1] <= bufferSize else {
                throw fail("tensor '\(shownName)': data_offsets \(offs) outside the \(bufferSize)-byte data section (file truncated?)")
            }
            guard offs[1] - offs[0] == bytes else {
                throw fail("tensor '\(shownName)': shape \(shape) of \(dtype) needs \(bytes) bytes, data_offsets give \(offs[1] - offs[0])")
            }
            spans.append((offs[0], offs[1], name))
            let base = headerEnd + offs[0]
            out[name] = data.withUnsafeBytes { raw in
                Tensor(shape: shape) { dst in
                    for i in 0..<count {
                        switch dtype {
                        case "F32":
                            dst[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
                        case "I64":
                            dst[i] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: base + 8 * i, as: Int64.self)))
                        case "I32":
                            dst[i] = Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * i, as: Int32.self)))
                        case "F16":
                            dst[i] = Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self))))
                        default:
                            let b = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self))
                            dst[i] = Float(bitPattern: UInt32(b) << 16)
                        }
                    }
                }
            }
        }
        spans.sort { $0.0 < $1.0 }
        for k in 1..<max(1, spans.count) where spans[k].0 < spans[k - 1].1 {
            throw fail("tensors '\(FormatError.shown(spans[k - 1].2))' and '\(FormatError.shown(spans[k].2))' overlap")
        }
        return (out, metadata)
    }

    /// Writes F32 tensors (names sorted, data contiguous, header padded to 8 bytes).
    public static func write(_ tensors: [String: Tensor], path: String, metadata: [String: String] = [:]) throws {
        guard FileManager.default.createFile(atPath: path, contents: try encode(tensors, metadata: metadata)) else {
            throw FormatError(file: path, problem: "cannot write")
        }
    }

    /// The bytes of a safetensors file holding `tensors` as F32.
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:]) throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.count]] as [String: Any]
            offset += 4 * t.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names { tensors[name]!.withData { out.append(UnsafeBufferPointer(start: $0.baseAddress, count: $0.count)) } }
        return out
    }
}

extension Layer {
    /// Parameters by name (PyTorch state-dict names for `Sequential.mlp` and the layers' `name`s).
    public var stateDict: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.value) })
    }

    /// Loads parameters by name; every missing name or shape mismatch is an error naming the tensor.
    public func load(_ tensors: [String: Tensor], file: String) throws {
        for p in parameters {
            guard let t = tensors[p.name] else {
                throw FormatError(file: file, problem: "tensor '\(p.name)' missing (file has: \(tensors.keys.sorted().joined(separator: ", ")))")
            }
            guard t.shape == p.value.shape else {
                throw FormatError(file: file, problem: "tensor '\(p.name)' has shape \(t.shape), the model expects \(p.value.shape)")
            }
            p.value = t
        }
    }
}

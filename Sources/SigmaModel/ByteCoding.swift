import Foundation
/// Little-endian binary writer for headers and compact payloads.
public struct ByteWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { append(v) }
    public mutating func u32(_ v: UInt32) { append(v) }
    public mutating func u64(_ v: UInt64) { append(v) }
    public mutating func i64(_ v: Int64) { append(UInt64(bitPattern: v)) }
    public mutating func f64(_ v: Double) { append(v.bitPattern) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }

    /// u16 length + UTF-8 bytes (truncated at 65,535 bytes).
    public mutating func string(_ s: String) {
        var utf8 = Array(s.utf8)
        if utf8.count > Int(UInt16.max) { utf8 = Array(utf8.prefix(Int(UInt16.max))) }
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// u32 length + raw bytes.
    public mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }

    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }

    /// Float32 values, little-endian, no length.
    public mutating func floats(_ v: UnsafeBufferPointer<Float>) {
        bytes.append(contentsOf: UnsafeRawBufferPointer(v))
    }

    private mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// A field could not be read: what was being read and why.
public struct ByteReadError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let problem: String
    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }
    public var description: String { "\(field): \(problem)" }
}

/// Bounds-checked little-endian reader; every read names the field it reads so errors say what was truncated.
public struct ByteReader {
    public let buffer: UnsafeRawBufferPointer
    public private(set) var offset: Int = 0

    public init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    public var remaining: Int { buffer.count - offset }

    private mutating func take<T: FixedWidthInteger>(_: T.Type, _ field: String) throws -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else {
            throw ByteReadError(field: field, problem: "truncated: needs \(n) bytes, \(remaining) left")
        }
        let v = buffer.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += n
        return T(littleEndian: v)
    }

    public mutating func u8(_ field: String) throws -> UInt8 { try take(UInt8.self, field) }
    public mutating func u16(_ field: String) throws -> UInt16 { try take(UInt16.self, field) }
    public mutating func u32(_ field: String) throws -> UInt32 { try take(UInt32.self, field) }
    public mutating func u64(_ field: String) throws -> UInt64 { try take(UInt64.self, field) }
    public mutating func i64(_ field: String) throws -> Int64 { Int64(bitPattern: try take(UInt64.self, field)) }
    public mutating func f64(_ field: String) throws -> Double { Double(bitPattern: try take(UInt64.self, field)) }
    public mutating func bool(_ field: String) throws -> Bool {
        let b = try u8(field)
        guard b <= 1 else { throw ByteReadError(field: field, problem: "expected 0 or 1, got \(b)") }
        return b == 1
    }

    public mutating func string(_ field: String) throws -> String {
        let n = Int(try u16(field + ".length"))
        guard remaining >= n else {
            throw ByteReadError(field: field, problem: "truncated: string of \(n) bytes, \(remaining) left")
        }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + n]), as: UTF8.self)
        offset += n
        return s
    }

    public mutating func blob(_ field: String, limit: Int) throws -> [UInt8] {
        let n = Int(try u32(field + ".length"))
        guard n <= limit else { throw ByteReadError(field: field, problem: "\(n) bytes exceeds the limit of \(limit)") }
        guard remaining >= n else {
            throw ByteReadError(field: field, problem: "truncated: \(n) bytes declared, \(remaining) left")
        }
        let b = Array(UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + n]))
        offset += n
        return b
    }

    /// The next `n` bytes, in place (valid while the buffer being read is).
    public mutating func bytes(_ n: Int, _ field: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, remaining >= n else { throw ByteReadError(field: field, problem: "truncated: needs \(n) bytes, \(remaining) left") }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + n])
    }

    /// `count` little-endian float32 values.
    public mutating func floats(_ count: Int, _ field: String) throws -> [Float] {
        guard count >= 0, count <= remaining / 4 else {
            throw ByteReadError(field: field, problem: "truncated: \(count) float32 values need \(count * 4) bytes, \(remaining) left")
        }
        let src = try bytes(count * 4, field)
        return [Float](unsafeUninitializedCapacity: count) { dst, initialized in
            UnsafeMutableRawBufferPointer(dst).copyMemory(from: src)
            initialized = count
        }
    }

    /// Throws if bytes are left over: a message must be exactly as long as its fields.
    public func finish(_ what: String) throws {
        guard remaining == 0 else { throw ByteReadError(field: what, problem: "\(remaining) unexpected trailing bytes") }
    }
}

extension Frame {
    /// Reads the frame with a `ByteReader`.
    public func read<R>(_ body: (inout ByteReader) throws -> R) throws -> R {
        try withUnsafeBytes { buf in
            var r = ByteReader(buf)
            return try body(&r)
        }
    }
}

/// Short content digests for provenance (not for security).
public enum Digest {
    /// FNV-1a, 64 bits, as 16 hex digits.
    public static func fnv1a64(_ bytes: [UInt8]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return hex16(h)
    }

    static func hex16(_ h: UInt64) -> String {
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The content digest's running state: 64-bit words folded FNV-style with a rotation, then the length. Fed the
    /// file's 4 MiB pieces in order (the fold of a piece's tail bytes depends on where pieces end).
    public struct Accumulator {
        var acc: UInt64 = 0xcbf2_9ce4_8422_2325
        var length: UInt64 = 0
        public init() {}
        public mutating func update(_ raw: UnsafeRawBufferPointer) {
            length += UInt64(raw.count)
            let words = raw.count / 8
            for i in 0..<words {
                let w = raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
                acc = ((acc ^ w) &* 0x0000_0100_0000_01b3)
                acc = (acc << 29) | (acc >> 35)
            }
            for i in (words * 8)..<raw.count { acc = (acc ^ UInt64(raw[i])) &* 0x0000_0100_0000_01b3 }
        }
        public func finish() -> String {
            let a = (acc ^ length) &* 0x9E37_79B9_7F4A_7C15
            return hex16(a ^ (a >> 31))
        }
    }

    /// Reads a file in 4 MiB pieces, handing each to `body`. Throws naming the file.
    static func pieces(_ path: String, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        guard let h = FileHandle(forReadingAtPath: path) else { throw SpecError(field: "(file)", problem: "cannot read '\(path)'") }
        defer { try? h.close() }
        while let chunk = try h.read(upToCount: 4 << 20), !chunk.isEmpty { chunk.withUnsafeBytes(body) }
    }

    /// A file's content digest (16 hex digits; fast enough for a 90 MB model: the coordinator computes it off its
    /// poller thread at submission).
    public static func file(_ path: String) throws -> String {
        var a = Accumulator()
        try pieces(path) { a.update($0) }
        return a.finish()
    }

    /// The content digest, SHA-256 and size of a file in one read (files the coordinator ships to workers).
    public static func fileAndSHA256(_ path: String) throws -> (digest: String, sha256: String, size: UInt64) {
        var a = Accumulator(), s = SHA256()
        try pieces(path) { a.update($0); s.update($0) }
        return (a.finish(), SHA256.hex(s.finish()), a.length)
    }

    /// One digest for several files (in order), or "" for none. `known`: digests already computed, by path.
    public static func files(_ paths: [String], known: [String: String] = [:]) throws -> String {
        func one(_ p: String) throws -> String { try known[p] ?? file(p) }
        switch paths.count {
        case 0: return ""
        case 1: return try one(paths[0])
        default: return fnv1a64(Array(try paths.map(one).joined(separator: ",").utf8))
        }
    }
}

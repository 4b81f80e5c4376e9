import Foundation

/// What a user submits, as every layer but the job's own kind sees it: the kind's name, the job's name, and the
/// kind's spec in its one wire form (canonical JSON of the kind's `Codable` spec). The coordinator core, the
/// protocol and the worker core carry it without knowing any kind; the kind (SigmaJobs, `JobKind`) decodes and
/// checks it (`decode(as:)`), from YAML, JSON or the wire alike.
public struct JobSpec: Sendable, Hashable {
    /// The job kind ("map-reduce", "train", …): which `JobKind` reads `body`.
    public let kind: String
    /// The job's name (shown by `sigma status`, in logs).
    public let name: String
    /// The kind's spec as JSON (keys sorted, snake case).
    public let body: [UInt8]

    /// The body hashed as one block of bytes (the derived hash fed a hasher byte by byte: ~10 µs for a small spec, on
    /// every lookup of a worker's opened specs).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(kind)
        hasher.combine(name)
        hasher.combine(body.count)
        body.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    public init(kind: String, name: String, body: [UInt8]) {
        self.kind = kind
        self.name = name
        self.body = body
    }

    /// The wire form of a kind's spec.
    public init<S: JobKindSpec>(kind: String, _ spec: S) {
        self.init(kind: kind, name: spec.name, body: SpecJSON.encode(spec))
    }

    /// The kind's spec; an error names the field that is missing or malformed.
    public func decode<S: JobKindSpec>(as type: S.Type) throws -> S {
        try SpecJSON.decode(type, body)
    }

    /// Longest kind name, job name and spec body a peer may send (checked on arrival, before anything is decoded).
    public static let maxKind = 64, maxName = 4096, maxBody = 1 << 20

    /// `string kind, string name, blob body` (docs/protocol.md §Job spec).
    public func encode(into w: inout ByteWriter) {
        w.string(kind)
        w.string(name)
        w.blob(body)
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 8 + kind.utf8.count + name.utf8.count + body.count)
        encode(into: &w)
        return w.bytes
    }

    /// Checks the envelope only (sizes, a kind name of lowercase letters, digits and '-'); the kind checks the body.
    public static func decode(from r: inout ByteReader) throws -> JobSpec {
        let kind = try r.string("spec.kind")
        guard !kind.isEmpty, kind.utf8.count <= maxKind,
              kind.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) else {
            throw SpecError(field: "spec.kind", problem: "not a job kind name (lowercase letters, digits and '-', at most \(maxKind))")
        }
        let name = try r.string("spec.name")
        guard name.utf8.count <= maxName else { throw SpecError(field: "spec.name", problem: "longer than \(maxName) bytes") }
        let body = try r.blob("spec.body", limit: maxBody)
        return JobSpec(kind: kind, name: name, body: body)
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> JobSpec {
        var r = ByteReader(bytes)
        let s = try decode(from: &r)
        try r.finish("spec")
        return s
    }
}

/// The spec of one job kind: `Codable` (its wire form), named, and checked the same way whatever its source.
public protocol JobKindSpec: Codable, Sendable, Equatable {
    /// The job's name.
    var name: String { get }
    /// Where the user asked for result files to go, if anywhere.
    var output: String? { get }
    /// How workers get the job's input files (nil: from the shared file system).
    var inputTransport: InputTransport? { get }
}

extension JobKindSpec {
    public var output: String? { nil }
    public var inputTransport: InputTransport? { nil }
}

/// Where workers get a job's input files (`input_transport`): `shared` (the default) — each worker reads the
/// spec's paths itself, which must name the same files on every host (a shared filesystem); `coordinator` — the
/// workers fetch the files from the coordinator (docs/protocol.md FILE-GET) and keep them in a cache keyed by
/// SHA-256, checked after every transfer, so a file travels to a host once however many jobs use it.
public enum InputTransport: String, Codable, Sendable, CaseIterable {
    case shared, coordinator
}

/// The one JSON form of every kind's spec: keys sorted (the same spec gives the same bytes and digest), snake case.
public enum SpecJSON {
    public static func encode<T: Encodable>(_ v: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        e.keyEncodingStrategy = .convertToSnakeCase
        return Array((try? e.encode(v)) ?? Data())
    }

    /// Decodes `bytes`; a malformed body is a `SpecError` naming the field.
    public static func decode<T: Decodable>(_ t: T.Type, _ bytes: [UInt8]) throws -> T {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        do { return try d.decode(t, from: Data(bytes)) } catch let e as DecodingError {
            let (path, problem): ([CodingKey], String) = switch e {
            case .keyNotFound(let k, let c): (c.codingPath + [k], "missing")
            case .typeMismatch(let t, let c): (c.codingPath, "expected \(t)")
            case .valueNotFound(let t, let c): (c.codingPath, "expected \(t), got null")
            case .dataCorrupted(let c): (c.codingPath, "malformed")
            @unknown default: ([], "malformed")
            }
            let field = path.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined().drop { $0 == "." }
            throw SpecError(field: field.isEmpty ? "(spec)" : String(field), problem: problem)
        } catch {
            throw SpecError(field: "(spec)", problem: "malformed")
        }
    }
}

/// A job spec could not be accepted: which field, and what was wrong with it.
public struct SpecError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let problem: String
    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }
    public var description: String { "job spec field '\(field)': \(problem)" }
}

/// A job spec file: the job, and how the submitter wants it scheduled (`policy:`, optional).
public struct JobFile: Sendable {
    public var spec: JobSpec
    /// A `SchedulingPolicy` name, or nil for the cluster's policy.
    public var policy: String?
    public init(spec: JobSpec, policy: String?) {
        self.spec = spec
        self.policy = policy
    }
}

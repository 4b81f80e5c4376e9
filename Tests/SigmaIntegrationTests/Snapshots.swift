import Foundation
import Testing

/// Snapshot files under Tests/SigmaIntegrationTests/Snapshots: the committed expectation of a command's output.
/// `SIGMA_RECORD_SNAPSHOTS=1 swift test --filter OperationsTests` rewrites them (review the diff before committing).
enum Snapshot {
    static let directory = repoRoot + "/Tests/SigmaIntegrationTests/Snapshots"
    static var recording: Bool { ProcessInfo.processInfo.environment["SIGMA_RECORD_SNAPSHOTS"] == "1" }

    /// Records an issue unless `actual` equals the snapshot `name` (line by line; the first difference is shown).
    static func check(_ name: String, _ actual: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let path = directory + "/" + name
        if recording {
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try? actual.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        guard let expected = try? String(contentsOfFile: path, encoding: .utf8) else {
            Issue.record("no snapshot \(name); record it with SIGMA_RECORD_SNAPSHOTS=1", sourceLocation: sourceLocation)
            return
        }
        guard expected != actual else { return }
        let e = expected.split(separator: "\n", omittingEmptySubsequences: false)
        let a = actual.split(separator: "\n", omittingEmptySubsequences: false)
        let i = (0..<min(e.count, a.count)).first { e[$0] != a[$0] } ?? min(e.count, a.count)
        let want = i < e.count ? String(e[i]) : "(end)", got = i < a.count ? String(a[i]) : "(end)"
        let message = "\(name) differs from its snapshot at line \(i + 1):\n  snapshot: \(want)\n  now:      \(got)\n"
            + "(if the change is intended, re-record with SIGMA_RECORD_SNAPSHOTS=1 and review the diff)"
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }

    /// The shape of a JSON document: every value replaced by its type (string, number, bool, null), arrays by the
    /// merged shape of their elements, objects with sorted keys; a key present in only some elements of an array
    /// is marked `?`. Values change run to run; the shape is the contract scripts rely on.
    static func jsonShape(_ text: String) throws -> String {
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        return render(shape(value), indent: "") + "\n"
    }

    indirect enum Shape: Equatable {
        case leaf(Set<String>)
        case array(Shape?)
        case object([String: (shape: Shape, optional: Bool)])

        static func == (l: Shape, r: Shape) -> Bool {
            switch (l, r) {
            case (.leaf(let a), .leaf(let b)): return a == b
            case (.array(let a), .array(let b)): return a == b
            case (.object(let a), .object(let b)):
                return a.keys == b.keys && a.allSatisfy { k, v in b[k].map { $0.shape == v.shape && $0.optional == v.optional } ?? false }
            default: return false
            }
        }
    }

    static func shape(_ v: JSONValue) -> Shape {
        switch v {
        case .null: return .leaf(["null"])
        case .bool: return .leaf(["bool"])
        case .number: return .leaf(["number"])
        case .string: return .leaf(["string"])
        case .array(let xs): return .array(xs.map(shape).reduce(nil) { acc, s in acc.map { merge($0, s) } ?? s })
        case .object(let o): return .object(o.mapValues { (shape($0), false) })
        }
    }

    static func merge(_ a: Shape, _ b: Shape) -> Shape {
        switch (a, b) {
        case (.leaf(let x), .leaf(let y)): return .leaf(x.union(y))
        case (.array(let x), .array(let y)):
            if let x, let y { return .array(merge(x, y)) }
            return .array(x ?? y)
        case (.object(let x), .object(let y)):
            var out: [String: (shape: Shape, optional: Bool)] = [:]
            for k in Set(x.keys).union(y.keys) {
                switch (x[k], y[k]) {
                case let (l?, r?): out[k] = (merge(l.shape, r.shape), l.optional || r.optional)
                case let (l?, nil): out[k] = (l.shape, true)
                case let (nil, r?): out[k] = (r.shape, true)
                default: break
                }
            }
            return .object(out)
        default: return .leaf(["mixed"])
        }
    }

    static func render(_ s: Shape, indent: String) -> String {
        switch s {
        case .leaf(let types): return "\"" + types.sorted().joined(separator: "|") + "\""
        case .array(nil): return "[]"
        case .array(let e?): return "[" + render(e, indent: indent) + "]"
        case .object(let o):
            if o.isEmpty { return "{}" }
            let inner = indent + "  "
            let lines = o.keys.sorted().map { k in
                "\(inner)\"\(k)\(o[k]!.optional ? "?" : "")\": " + render(o[k]!.shape, indent: inner)
            }
            return "{\n" + lines.joined(separator: ",\n") + "\n\(indent)}"
        }
    }
}

/// A JSON value decoded strictly (a number is never a bool).
enum JSONValue: Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }
}

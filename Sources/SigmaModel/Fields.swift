import Foundation

import Yams

/// A YAML mapping read field by field; whatever is left at the end is an unknown (misspelled) key.
/// A kind's `parse` reads what it knows; `rejectUnknown` refuses the rest, naming the key by its path and the
/// known key it is closest to (`optimizer.sgd.lrr: unknown field; did you mean 'lr'?`).
public struct Fields {
    private var entries: [(String, Node)]
    /// Keys asked for (present or not): what a misspelled key is compared with.
    private var asked: [String] = []
    public let path: String

    public init(_ map: Node.Mapping, path: String) {
        entries = map.map { ($0.key.string ?? "\($0.key)", $0.value) }
        self.path = path
    }

    /// The top-level mapping of a YAML or JSON document.
    public static func document(_ text: String) throws -> Fields {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw SpecError(field: "(document)", problem: "not valid YAML/JSON: \(error)")
        }
        guard let root = node, let map = root.mapping else {
            throw SpecError(field: "(document)", problem: "expected a mapping with at least 'kind'")
        }
        return Fields(map, path: "")
    }

    public mutating func take(_ key: String) -> Node? {
        asked.append(key)
        guard let i = entries.firstIndex(where: { $0.0 == key }) else { return nil }
        return entries.remove(at: i).1
    }

    /// Whether the mapping has `key` (not read yet).
    public func has(_ key: String) -> Bool { entries.contains { $0.0 == key } }

    public func rejectUnknown() throws {
        guard let (k, _) = entries.first else { return }
        throw SpecError(field: path + k, problem: "unknown field" + (nearest(k, among: asked).map { "; did you mean '\($0)'?" } ?? ""))
    }

    public mutating func string(_ key: String) throws -> String {
        guard let v = try optionalString(key) else { throw SpecError(field: path + key, problem: "missing") }
        return v
    }

    public mutating func optionalString(_ key: String) throws -> String? {
        guard let n = take(key) else { return nil }
        guard n.scalar != nil, let s = n.string else { throw SpecError(field: path + key, problem: "expected a string") }
        return s
    }

    public mutating func optionalBool(_ key: String) throws -> Bool? {
        guard let n = take(key) else { return nil }
        switch n.scalar != nil ? n.string : nil {
        case "true": return true
        case "false": return false
        default: throw SpecError(field: path + key, problem: "expected true or false")
        }
    }

    public mutating func optionalDouble(_ key: String) throws -> Double? {
        guard let n = take(key) else { return nil }
        guard n.scalar != nil, let s = n.string, let d = Double(s), d.isFinite else {
            throw SpecError(field: path + key, problem: "expected a finite number, got '\(n.string ?? "\(n)")'")
        }
        return d
    }

    public mutating func optionalUInt(_ key: String) throws -> UInt64? {
        guard let n = take(key) else { return nil }
        guard n.scalar != nil, let s = n.string, let v = parseCount(s) else {
            throw SpecError(field: path + key, problem: "expected a non-negative integer (e.g. 1000, 10k, 100M), got '\(n.string ?? "\(n)")'")
        }
        return v
    }

    /// A positive integer, required.
    public mutating func count(_ key: String) throws -> UInt64 {
        guard let v = try optionalUInt(key) else { throw SpecError(field: path + key, problem: "missing") }
        guard v > 0 else { throw SpecError(field: path + key, problem: "must be ≥ 1, got 0") }
        return v
    }
}

/// "1000", "1_000", "10k", "100M", "2G" → value.
public func parseCount(_ s: String) -> UInt64? {
    var t = s.replacingOccurrences(of: "_", with: "").trimmingCharacters(in: .whitespaces)
    var mult: UInt64 = 1
    if let last = t.last, "kKmMgG".contains(last) {
        mult = (last == "k" || last == "K") ? 1_000 : (last == "m" || last == "M") ? 1_000_000 : 1_000_000_000
        t.removeLast()
    }
    guard let v = UInt64(t) else { return nil }
    let (r, o) = v.multipliedReportingOverflow(by: mult)
    return o ? nil : r
}

/// The word of `known` closest to `word`, if close enough to be what was meant (for "did you mean").
public func nearest(_ word: String, among known: [String]) -> String? {
    known.map { ($0, editDistance($0, word)) }.filter { $0.1 <= max(1, min($0.0.count, word.count) / 3) }.min { $0.1 < $1.1 }?.0
}

/// Levenshtein distance (for "did you mean").
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var row = Array(0...b.count)
    for i in 1...a.count {
        var prev = row[0]
        row[0] = i
        for j in 1...b.count {
            let cur = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
            prev = cur
        }
    }
    return row[b.count]
}

extension Fields {
    public mutating func optionalInt(_ key: String) throws -> Int? {
        guard let v = try optionalUInt(key) else { return nil }
        guard v <= UInt64(Int32.max) else { throw SpecError(field: path + key, problem: "\(v) is too large") }
        return Int(v)
    }

    public mutating func mapping(_ key: String, expected: String) throws -> Fields {
        guard let n = take(key) else { throw SpecError(field: path + key, problem: "missing; expected \(expected)") }
        guard let m = n.mapping else { throw SpecError(field: path + key, problem: "expected \(expected)") }
        return Fields(m, path: path + key + ".")
    }
}

/// `p`, relative to `base` unless absolute.
public func resolvePath(_ p: String, _ base: String?) -> String {
    p.hasPrefix("/") || base == nil ? p : base! + "/" + p
}

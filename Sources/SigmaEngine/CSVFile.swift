import Foundation

/// A data file could not be read: which file, where, and what was wrong.
public struct FormatError: Error, Equatable, Sendable, CustomStringConvertible {
    public let file: String
    public let problem: String
    public init(file: String, problem: String) {
        self.file = file
        self.problem = problem
    }
    public var description: String { "\(file): \(problem)" }

    /// A name read from a file (a tensor or zip entry name), as an error may show it: itself when it is a short run of
    /// letters, digits and `._-/:`, else a placeholder — error texts never echo file contents. `code`: a type code
    /// (`<f4`, `F32`): at most 8 letters, digits and `<>|=`.
    public static func shown(_ s: String, code: Bool = false) -> String {
        let extra = code ? "<>|=" : "._-/:"
        let ok = !s.isEmpty && s.utf8.count <= (code ? 8 : 64) && s.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil)) || extra.unicodeScalars.contains($0)
        }
        return ok ? s : "(\(s.utf8.count) bytes, not shown)"
    }
}

/// Numeric CSV: every row the same number of comma-separated numbers (an optional header row is skipped). Errors
/// give the file, line and column, never the text found there.
public enum CSVFile {
    /// The names in the first line (trimmed).
    public static func header(path: String) throws -> [String] {
        guard let h = FileHandle(forReadingAtPath: path) else { throw FormatError(file: path, problem: "cannot read") }
        defer { try? h.close() }
        let head = (try? h.read(upToCount: 1 << 16)) ?? Data()
        let line = String(decoding: head, as: UTF8.self).split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    public static func readFloats(path: String, header: Bool = false) throws -> (rows: Int, columns: Int, values: [Float]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError(file: path, problem: "cannot read")
        }
        var values: [Float] = []
        var columns = -1, rows = 0
        var headerLeft = header
        // (n counts every line, blank ones too, so an error names the line an editor shows)
        for (n, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            if headerLeft {
                headerLeft = false
                continue
            }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            if columns < 0 { columns = fields.count }
            guard fields.count == columns else {
                throw FormatError(file: path, problem: "line \(n + 1) has \(fields.count) fields, expected \(columns)")
            }
            for (c, f) in fields.enumerated() {
                guard let v = Float(f.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                    // (never the field itself: an error must not carry a file's contents)
                    throw FormatError(file: path, problem: "line \(n + 1) column \(c + 1): not a number")
                }
                values.append(v)
            }
            rows += 1
        }
        guard rows > 0 else { throw FormatError(file: path, problem: "no data rows") }
        return (rows, columns, values)
    }
}

import Foundation

/// BERT's tokenizer: the basic tokenizer (clean-up, CJK spacing, lower-casing, accent stripping, punctuation
/// splitting) followed by greedy longest-match WordPiece over `vocab.txt` — as Hugging Face's `BertTokenizer`
/// with `do_lower_case: true`, `tokenize_chinese_chars: true`.
public struct WordPieceTokenizer: Sendable {
    public let vocab: [String: Int32]
    public let lowercase: Bool
    public let maxInputCharsPerWord = 100
    public let cls: Int32, sep: Int32, unk: Int32, pad: Int32

    public init(vocabPath: String, lowercase: Bool = true) throws {
        guard let data = FileManager.default.contents(atPath: vocabPath) else {
            throw FormatError(file: vocabPath, problem: "cannot read the vocabulary")
        }
        var v: [String: Int32] = [:]
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let token = line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
            if token.isEmpty && i > 0 { continue }
            if v[token] == nil { v[token] = Int32(i) }
        }
        try self.init(vocab: v, lowercase: lowercase, file: vocabPath)
    }

    public init(vocab: [String: Int32], lowercase: Bool = true, file: String = "(vocab)") throws {
        self.vocab = vocab
        self.lowercase = lowercase
        func id(_ t: String) throws -> Int32 {
            guard let i = vocab[t] else { throw FormatError(file: file, problem: "vocabulary has no \(t) token") }
            return i
        }
        cls = try id("[CLS]")
        sep = try id("[SEP]")
        unk = try id("[UNK]")
        pad = try id("[PAD]")
    }

    /// Token ids with [CLS] and [SEP], truncated so the whole sequence has at most `maxLength` tokens.
    public func encode(_ text: String, maxLength: Int = 512) -> [Int32] {
        var ids = [cls]
        for word in basicTokens(text) {
            for piece in wordPiece(word) {
                if ids.count >= maxLength - 1 { ids.append(sep); return ids }
                ids.append(piece)
            }
        }
        ids.append(sep)
        return ids
    }

    /// The basic tokenizer's words.
    public func basicTokens(_ text: String) -> [String] {
        var cleaned = String.UnicodeScalarView()
        for s in text.unicodeScalars {
            if s.value == 0 || s.value == 0xFFFD || isControl(s) { continue }
            if isWhitespace(s) {
                cleaned.append(" ")
            } else if isCJK(s) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
            } else {
                cleaned.append(s)
            }
        }
        var out: [String] = []
        for token in String(cleaned).split(separator: " ", omittingEmptySubsequences: true) {
            var t = String(token)
            if lowercase {
                t = t.lowercased()
                t = String(String.UnicodeScalarView(t.decomposedStringWithCanonicalMapping.unicodeScalars.filter {
                    $0.properties.generalCategory != .nonspacingMark
                }))
            }
            var current = String.UnicodeScalarView()
            for s in t.unicodeScalars {
                if isPunctuation(s) {
                    if !current.isEmpty { out.append(String(current)); current = String.UnicodeScalarView() }
                    out.append(String(s))
                } else {
                    current.append(s)
                }
            }
            if !current.isEmpty { out.append(String(current)) }
        }
        return out
    }

    /// Greedy longest-match-first WordPiece of one word; [UNK] when a piece cannot be matched.
    public func wordPiece(_ word: String) -> [Int32] {
        let chars = Array(word.unicodeScalars)
        if chars.count > maxInputCharsPerWord { return [unk] }
        var pieces: [Int32] = []
        var start = 0
        while start < chars.count {
            var end = chars.count
            var found: Int32? = nil
            while start < end {
                var sub = String(String.UnicodeScalarView(chars[start..<end]))
                if start > 0 { sub = "##" + sub }
                if let id = vocab[sub] { found = id; break }
                end -= 1
            }
            guard let id = found else { return [unk] }
            pieces.append(id)
            start = end
        }
        return pieces
    }

    func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        s == " " || s == "\t" || s == "\n" || s == "\r" || s.properties.generalCategory == .spaceSeparator
    }

    func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let c = s.value
        if (33...47).contains(c) || (58...64).contains(c) || (91...96).contains(c) || (123...126).contains(c) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    func isCJK(_ s: Unicode.Scalar) -> Bool {
        let c = s.value
        return (0x4E00...0x9FFF).contains(c) || (0x3400...0x4DBF).contains(c) || (0x20000...0x2A6DF).contains(c)
            || (0x2A700...0x2B73F).contains(c) || (0x2B740...0x2B81F).contains(c) || (0x2B820...0x2CEAF).contains(c)
            || (0xF900...0xFAFF).contains(c) || (0x2F800...0x2FA1F).contains(c)
    }
}

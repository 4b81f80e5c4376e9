import Foundation
import SigmaEngine
import SigmaModel

/// Labelled text lines (`label<TAB>text`, one per line; blank lines skipped) tokenized for a BERT-family encoder:
/// each row `[length, id₀, id₁, …]`, padded with 0 to the longest text's tokens (`BertClassifier` reads them).
/// Labels are integers below the model's classes, or names numbered in sorted order. Without labels needed (infer),
/// a line without a TAB is all text.
enum TextData {
    static func load(_ spec: LabeledDataSpec, encoder e: ModelSpec.EncoderSpec, needLabels: Bool, limits: SpecLimits) throws -> LabeledData {
        guard let path = spec.text else {
            throw JobError("data: a model: {encoder: …} reads labelled text lines — data: {text: FILE} with label<TAB>text on each line")
        }
        try limits.checkMemory("data.text", bytes: saturating(fileSize(path), 16), what: "reading '\(path)'")
        guard let bytes = FileManager.default.contents(atPath: path) else { throw JobError("data.text: cannot read '\(path)'") }
        guard let text = String(data: bytes, encoding: .utf8) else { throw JobError("\(path): not UTF-8 text") }
        let config: BertEncoder.Config, tokenizer: WordPieceTokenizer
        do {
            config = try BertEncoder.config(modelDirectory: e.folder)
            tokenizer = try WordPieceTokenizer(vocabPath: e.folder + "/vocab.txt")
        } catch let err as FormatError {
            throw JobError("model.encoder: \(err)")
        }
        let maxLength = BertEncoder.maxLength(modelDirectory: e.folder, config: config)
        var names: [Substring] = [], texts: [Substring] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.allSatisfy(\.isWhitespace) { continue }
            guard let tab = line.firstIndex(of: "\t") else {
                if needLabels { throw JobError("\(path): line \(i + 1) has no TAB; expected label<TAB>text") }
                texts.append(line)
                continue
            }
            let label = line[..<tab].trimmingCharacters(in: .whitespaces)
            guard !label.isEmpty else { throw JobError("\(path): line \(i + 1) has an empty label before its TAB") }
            names.append(Substring(label))
            texts.append(line[line.index(after: tab)...])
        }
        guard !texts.isEmpty else { throw JobError("\(path): no lines of text") }
        try limits.checkRows("data.text", UInt64(texts.count))
        var labels: [Int32]? = nil, labelNames: [String]? = nil
        if names.count == texts.count {
            if names.allSatisfy({ Int($0) != nil }) {
                labels = try names.enumerated().map { i, n in
                    let v = Int(n)!
                    guard v >= 0, v < e.classes else { throw JobError("\(path): label \(v) of text \(i + 1) is outside 0..<\(e.classes) (model.classes)") }
                    return Int32(v)
                }
            } else {
                let distinct = Array(Set(names)).sorted()
                guard distinct.count <= e.classes else {
                    throw JobError("\(path): \(distinct.count) distinct label names, but model.classes is \(e.classes)")
                }
                let index = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($1, Int32($0)) })
                labels = names.map { index[$0]! }
                labelNames = distinct.map(String.init)
            }
        } else if needLabels {
            throw JobError("\(path): \(texts.count - names.count) lines without a label; expected label<TAB>text on each")
        }
        let x = BertClassifier.rows(texts.map { tokenizer.encode(String($0), maxLength: maxLength) })
        var data = LabeledData(rows: texts.count, features: x.shape[1], x: x.scalars, y: labels)
        data.labelNames = labelNames
        return data
    }
}

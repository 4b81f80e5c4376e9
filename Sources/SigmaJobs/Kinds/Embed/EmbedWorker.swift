import Foundation
import SigmaEngine
import SigmaModel

/// embed shards: sentence embeddings for a line range, batch by batch on absolute batch boundaries.
public final class EmbedWorker {
    public let spec: EmbedJob
    public let lines: [String]
    public let encoder: BertEncoder

    /// The model folder's config is checked against `limits` before the model is built; the input's size and
    /// lines too.
    public init(spec: EmbedJob, limits: SpecLimits = .standard) throws {
        self.spec = spec
        lines = try EmbedWorker.readLines(spec.input, limits: limits)
        do {
            let c = try BertEncoder.config(modelDirectory: spec.model)
            guard c.layers <= limits.layers else { throw limits.exceeded("model", c.layers, limits.layers, key: "layers", what: "num_hidden_layers") }
            for (name, v) in [("hidden_size", c.hidden), ("intermediate_size", c.intermediate)] where v > limits.width {
                throw limits.exceeded("model", v, limits.width, key: "width", what: name)
            }
            guard c.parameterCount <= limits.parameters else {
                throw limits.exceeded("model", c.parameterCount, limits.parameters, key: "parameters", what: "config.json's parameters")
            }
            try limits.checkMemory("model", bytes: saturating(UInt64(c.parameterCount), 8), what: "the model in '\(spec.model)'")
            encoder = try BertEncoder(modelDirectory: spec.model)
        } catch let e as SpecError {
            throw JobError("\(e)")
        } catch {
            throw JobError("model: \(error)")
        }
    }

    public static func readLines(_ path: String, limits: SpecLimits = .standard) throws -> [String] {
        do { try limits.checkMemory("input", bytes: saturating(fileSize(path), 4), what: "reading '\(path)'") } catch { throw JobError("\(error)") }
        guard let d = FileManager.default.contents(atPath: path) else { throw JobError("input: cannot read '\(path)'") }
        var lines = String(decoding: d, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        guard !lines.isEmpty else { throw JobError("input: '\(path)' has no lines") }
        do { try limits.checkRows("input", UInt64(lines.count)) } catch { throw JobError("\(error)") }
        return lines
    }

    public var dimension: Int { encoder.config.hidden }

    public func embeddings(start: Int, count: Int, lanes: ComputeLanes = .shared) throws -> [Float] {
        guard start >= 0, count >= 0, start + count <= lines.count else {
            throw JobError("lines \(start)..<\(start + count) outside the file's 0..<\(lines.count)")
        }
        return try Batches.run(start: start, count: count, batch: spec.batchSize, width: dimension, lanes: lanes) { r in
            self.encoder.embed(Array(self.lines[r]), batchSize: self.spec.batchSize, threads: 1)
        }
    }
}

extension EmbedWorker: @unchecked Sendable {}   // the encoder and the lines are only read while shards run

import CZlib
import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

/// Crafted files that lie in their headers (sizes past the file or past Int, nested zip fields, inflation bombs,
/// impossible vocabularies): each gets an error naming what is wrong — never a trap, an unbounded allocation, or an
/// error text that echoes the file's bytes (the coordinator reads submitted data in its own process).
@Suite struct HostileFileTests {
    static func tmp(_ name: String, _ bytes: [UInt8]) -> String {
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-hostile-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let p = dir + "/" + name
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }
    static func npy(_ dict: String, data: [UInt8] = []) -> [UInt8] {
        let d = Array(dict.utf8)
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(d.count & 0xFF), UInt8(d.count >> 8)] + d + data
    }
    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }
    /// A zip local header for "x.npy" (method, flags 0, crc 0, 32-bit sizes 0xFFFFFFFF) followed by `extra`.
    static func zipLocal(method: UInt16, extra: [UInt8]) -> [UInt8] {
        let name = Array("x.npy".utf8)
        return le(0x04034b50, 4) + le(45, 2) + le(0, 2) + le(UInt64(method), 2) + le(0, 4) + le(0, 4)
            + le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4) + le(UInt64(name.count), 2) + le(UInt64(extra.count), 2) + name + extra
    }

    /// A shape whose data size is near Int.max: the header's offset plus it overflowed.
    @Test func npyFileHugeShapeOverflowsOffset() throws {
        let p = Self.tmp("big.npy", Self.npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846975,), }\n"))
        #expect(throws: DataError.self) { _ = try NpyFile(path: p) }
    }

    /// A ZIP64 extra block that declares 16 bytes past the end of the file.
    @Test func npzZip64ExtraPastEndOfFile() throws {
        let p = Self.tmp("a.npz", Self.zipLocal(method: 0, extra: Self.le(1, 2) + Self.le(16, 2)))
        #expect(throws: FormatError.self) { _ = try NumPyFormat.readNpz(path: p) }
    }

    /// A ZIP64 entry size near Int.max: the entry's start plus it overflowed.
    @Test func npzZip64HugeSizeOverflows() throws {
        let extra = Self.le(1, 2) + Self.le(16, 2) + Self.le(0, 8) + Self.le(UInt64(Int.max), 8)
        let p = Self.tmp("b.npz", Self.zipLocal(method: 0, extra: extra))
        #expect(throws: FormatError.self) { _ = try NumPyFormat.readNpz(path: p) }
    }

    /// A deflated entry that declares over 4 GiB inflated (zlib counts in 32 bits).
    @Test func npzInflatedSizeOver4GiB() throws {
        let extra = Self.le(1, 2) + Self.le(16, 2) + Self.le(5 << 30, 8) + Self.le(2, 8)
        let p = Self.tmp("c.npz", Self.zipLocal(method: 8, extra: extra) + [0x03, 0x00])
        #expect(throws: FormatError.self) { _ = try NumPyFormat.readNpz(path: p) }
    }

    /// A tensor whose element count times its item size overflows.
    @Test func safetensorsShapeTimesItemSizeOverflows() throws {
        let json = Array(#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#.utf8)
        let p = Self.tmp("a.safetensors", Self.le(UInt64(json.count), 8) + json)
        #expect(throws: FormatError.self) { _ = try SafeTensors.read(path: p) }
    }

    /// An array of no rows whose other dimensions multiply past Int: features per row overflowed.
    @Test func zeroRowNpyWithHugeTrailingDimsOverflowsFeatures() throws {
        let p = Self.tmp("x.npy", Self.npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }\n"))
        #expect(throws: (any Error).self) { _ = try LabeledData.load(LabeledDataSpec(x: p), features: 6, classes: 10, needLabels: false) }
    }

    /// The same through IDX (MNIST format): 0 rows × 65535 × 65535 × 65535 × 65535.
    @Test func zeroRowIdxWithHugeTrailingDimsOverflowsFeatures() throws {
        let p = Self.tmp("x-idx3-ubyte", [0, 0, 0x08, 5] + Self.le(0, 4) + Array(repeating: [0, 0, 0xFF, 0xFF], count: 4).flatMap { $0 })
        #expect(throws: (any Error).self) { _ = try LabeledData.load(LabeledDataSpec(x: p), features: 6, classes: 10, needLabels: false) }
    }

    /// Errors name an unknown dtype without copying it from the file.
    @Test func errorsDoNotEchoFileContents() throws {
        let p = Self.tmp("d.npy", Self.npy("{'descr': 'SECRET-PAYLOAD', 'fortran_order': False, 'shape': (1,), }\n"))
        #expect { _ = try NumPyFormat.readNpy(path: p) } throws: { !"\($0)".contains("SECRET") }
        #expect { _ = try NpyFile(path: p) } throws: { !"\($0)".contains("SECRET") }
        let json = Array(#"{"a":{"dtype":"SECRET-PAYLOAD","shape":[1],"data_offsets":[0,4]}}"#.utf8)
        let s = Self.tmp("e.safetensors", Self.le(UInt64(json.count), 8) + json + [0, 0, 0, 0])
        #expect { _ = try SafeTensors.read(path: s) } throws: { !"\($0)".contains("SECRET") }
    }

    /// Deeply nested JSON in a safetensors header.
    @Test func safetensorsDeeplyNestedHeader() throws {
        let json = Array(("{\"a\":" + String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000) + "}").utf8)
        let p = Self.tmp("n.safetensors", Self.le(UInt64(json.count), 8) + json)
        #expect(throws: FormatError.self) { _ = try SafeTensors.read(path: p) }
    }

    /// A tiny BERT folder (hidden 4, 1 layer, 1 head) with the given vocab.txt lines and config values.
    static func bertFolder(vocab: String, vocabSize: Int, maxPositions: Int = 8) throws -> String {
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-hostile-bert-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let h = 4, f = 4
        try """
        {"hidden_size": \(h), "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": \(f), "max_position_embeddings": \(maxPositions), "type_vocab_size": 1, "vocab_size": \(vocabSize), "hidden_act": "gelu"}
        """.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        try vocab.write(toFile: dir + "/vocab.txt", atomically: true, encoding: .utf8)
        var w: [String: Tensor] = [
            "embeddings.word_embeddings.weight": Tensor(shape: [vocabSize, h], repeating: 0.1),
            "embeddings.position_embeddings.weight": Tensor(shape: [maxPositions, h], repeating: 0.1),
            "embeddings.token_type_embeddings.weight": Tensor(shape: [1, h], repeating: 0.1),
            "embeddings.LayerNorm.weight": Tensor(shape: [h], repeating: 1), "embeddings.LayerNorm.bias": Tensor(zeros: [h]),
        ]
        let l = "encoder.layer.0."
        for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            w[l + n + ".weight"] = Tensor(shape: [h, h], repeating: 0.1); w[l + n + ".bias"] = Tensor(zeros: [h])
        }
        w[l + "intermediate.dense.weight"] = Tensor(shape: [f, h], repeating: 0.1); w[l + "intermediate.dense.bias"] = Tensor(zeros: [f])
        w[l + "output.dense.weight"] = Tensor(shape: [h, f], repeating: 0.1); w[l + "output.dense.bias"] = Tensor(zeros: [h])
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            w[l + n + ".weight"] = Tensor(shape: [h], repeating: 1); w[l + n + ".bias"] = Tensor(zeros: [h])
        }
        try SafeTensors.write(w, path: dir + "/model.safetensors")
        return dir
    }

    /// vocab.txt ids are line numbers: a repeated line made an id reach vocab_size, and its embedding lookup trapped.
    @Test func vocabIdsBeyondVocabSizeAreRefused() throws {
        let dir = try Self.bertFolder(vocab: "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\nworld\n", vocabSize: 6)
        let e: BertEncoder
        do { e = try BertEncoder(modelDirectory: dir) } catch { return }   // refusing the folder is the fix
        _ = e.embed(["world"])
    }

    /// max_position_embeddings 1: every text is at least [CLS] [SEP], past the position table.
    @Test func tinyPositionTableIsRefused() throws {
        let dir = try Self.bertFolder(vocab: "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", vocabSize: 5, maxPositions: 1)
        let e: BertEncoder
        do { e = try BertEncoder(modelDirectory: dir) } catch { return }
        _ = e.embed(["hello"])
    }

    /// config.json sizes past any BERT's: the tables' sizes overflowed when the model was built.
    @Test func encoderConfigSizesAreLimited() throws {
        let dir = try Self.bertFolder(vocab: "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", vocabSize: 5)
        try """
        {"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "max_position_embeddings": 8, "type_vocab_size": 1, "vocab_size": 4611686018427387904}
        """.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        var m = ModelSpec(mlp: [])
        m.encoder = ModelSpec.EncoderSpec(folder: dir, classes: 2, freeze: true)
        #expect(throws: (any Error).self) { _ = try MLModels.build(m, seed: 0) }
    }

    /// Shape entries that are not whole numbers (1e300, 2.9) are refused, not truncated.
    @Test func safetensorsShapeBeyondInt() throws {
        let json = Array(#"{"a":{"dtype":"F32","shape":[1e300],"data_offsets":[0,0]}}"#.utf8)
        let p = Self.tmp("f.safetensors", Self.le(UInt64(json.count), 8) + json)
        #expect(throws: FormatError.self) { _ = try SafeTensors.read(path: p) }
        let j2 = Array(#"{"a":{"dtype":"F32","shape":[2.9],"data_offsets":[0,8]}}"#.utf8)
        let p2 = Self.tmp("g.safetensors", Self.le(UInt64(j2.count), 8) + j2 + [UInt8](repeating: 0, count: 8))
        #expect(throws: FormatError.self) { _ = try SafeTensors.read(path: p2) }
    }

    /// Raw deflate of `data` (as np.savez_compressed writes entries).
    static func deflateRaw(_ data: [UInt8]) -> [UInt8] {
        var s = z_stream()
        _ = deflateInit2_(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        var out = [UInt8](repeating: 0, count: data.count / 100 + 1024)
        var src = data
        let n = src.withUnsafeMutableBufferPointer { i in out.withUnsafeMutableBufferPointer { o in
            s.next_in = i.baseAddress; s.avail_in = uInt(i.count); s.next_out = o.baseAddress; s.avail_out = uInt(o.count)
            _ = CZlib.deflate(&s, Z_FINISH); return Int(s.total_out)
        } }
        deflateEnd(&s)
        return Array(out.prefix(n))
    }

    /// A 65 KB compressed .npz that inflates to 64 MiB is held to limits.memory_bytes (1 MiB here) before inflating.
    @Test func compressedNpzBypassesTheMemoryLimit() throws {
        let rows = 64 << 20 / 24
        let body = Self.npy("{'descr': '<f4', 'fortran_order': False, 'shape': (\(rows), 6), }" + String(repeating: " ", count: 40) + "\n",
                            data: [UInt8](repeating: 0, count: rows * 24))
        let z = Self.deflateRaw(body)
        let crc = body.withUnsafeBufferPointer { UInt64(CZlib.crc32(0, $0.baseAddress, uInt($0.count))) }
        let name = Array("x.npy".utf8)
        let local = Self.le(0x04034b50, 4) + Self.le(20, 2) + Self.le(0, 2) + Self.le(8, 2) + Self.le(0, 4) + Self.le(crc, 4)
            + Self.le(UInt64(z.count), 4) + Self.le(UInt64(body.count), 4) + Self.le(UInt64(name.count), 2) + Self.le(0, 2) + name + z
        let p = Self.tmp("bomb.npz", local)
        var spec = LabeledDataSpec()
        spec.npz = p
        let limits = SpecLimits(shards: 8, histogramBins: 100, rows: 100_000_000, layers: 8, width: 1024, parameters: 1_000_000, memoryBytes: 1 << 20)
        #expect(throws: (any Error).self) { _ = try LabeledData.load(spec, features: 6, classes: 10, needLabels: false, limits: limits) }
    }
}

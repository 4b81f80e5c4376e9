import Foundation
import SigmaJobs
import SigmaModel
import Testing

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

struct Reference: Decodable {
    let sum: Double, min: Double, max: Double, count: Int, sum_squares: Double
    let histogram_10_m5_5: [UInt64]
    let first_row: [Double]
}

func references() throws -> [String: Reference] {
    try JSONDecoder().decode([String: Reference].self, from: Data(contentsOf: URL(fileURLWithPath: fixtures + "/reference.json")))
}

@Suite struct NpyFileTests {
    /// Files written by NumPy: the reader must agree with NumPy's own reductions.
    @Test(arguments: ["normal_f4_1d.npy", "uniform_f8_2d.npy", "range_f8_bigendian.npy"])
    func readsNumPyFilesAndMatchesNumPy(_ name: String) throws {
        let ref = try #require(try references()[name])
        let path = fixtures + "/" + name
        let file = try NpyFile(path: path)
        let row = UnsafeMutableBufferPointer<Double>.allocate(capacity: file.header.columns)
        defer { row.deallocate() }
        try file.readRows(start: 0, count: 1, into: row)
        #expect(Array(row) == ref.first_row)

        let spec = MapReduceSpec(input: .npy(path: path), reduce: [.sum, .min, .max, .count, .histogram(bins: 10, low: -5, high: 5)])
        let p = try MapReduceKernel.runLocal(spec)
        #expect(Int(p.count) == ref.count)
        #expect(p.min == ref.min)
        #expect(p.max == ref.max)
        #expect(abs(p.total - ref.sum) <= 1e-12 * abs(ref.sum))
        #expect(p.histogram == ref.histogram_10_m5_5)
        var sq = spec
        sq.map = .square
        let q = try MapReduceKernel.runLocal(sq)
        #expect(abs(q.total - ref.sum_squares) <= 1e-12 * ref.sum_squares)
    }

    @Test func rejectsUnsupportedDtypeByName() throws {
        #expect {
            _ = try NpyFile(path: fixtures + "/int32.npy")
        } throws: { e in
            let d = e as? DataError
            return d?.problem.contains("<i4") == true && d?.path.hasSuffix("int32.npy") == true
        }
    }

    @Test func rejectsTruncatedAndCorruptFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-npy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/uniform_f8_2d.npy"))
        // Every truncation is an error naming the file, never a crash.
        for cut in stride(from: 0, to: good.count, by: 37) {
            let p = dir + "/cut\(cut).npy"
            try good.prefix(cut).write(to: URL(fileURLWithPath: p))
            #expect(throws: DataError.self) { _ = try NpyFile(path: p) }
        }
        var bad = good
        bad[0] = 0x00
        try bad.write(to: URL(fileURLWithPath: dir + "/magic.npy"))
        #expect(throws: DataError.self) { _ = try NpyFile(path: dir + "/magic.npy") }
        #expect(throws: DataError.self) { _ = try NpyFile(path: dir + "/missing.npy") }
        // Random garbage headers.
        var rng = SystemRandomNumberGenerator()
        for i in 0..<200 {
            var d = good
            for _ in 0..<4 { d[Int.random(in: 0..<128, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            let p = dir + "/fuzz\(i).npy"
            try d.write(to: URL(fileURLWithPath: p))
            if let f = try? NpyFile(path: p) {
                // If it parses, reading every row must stay in bounds.
                let buf = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(1, f.header.rows * f.header.columns))
                defer { buf.deallocate() }
                try? f.readRows(start: 0, count: f.header.rows, into: buf)
            }
        }
    }

    @Test func writeThenReadRoundTrips() throws {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-rt-\(UUID().uuidString).npy").path
        defer { try? FileManager.default.removeItem(atPath: p) }
        let values: [Float] = (0..<60).map { Float($0) * 0.25 - 3 }
        try NpyFile.write(path: p, float32: values, shape: [20, 3])
        let f = try NpyFile(path: p)
        #expect(f.header.shape == [20, 3])
        #expect(f.header.dtype == .float32)
        let buf = UnsafeMutableBufferPointer<Double>.allocate(capacity: 6)
        defer { buf.deallocate() }
        try f.readRows(start: 5, count: 2, into: buf)
        #expect(Array(buf) == values[15..<21].map(Double.init))
        #expect(throws: DataError.self) { try f.readRows(start: 19, count: 2, into: buf) }
    }

    /// A header longer than the first 4 KiB read (NumPy pads, and writers add metadata) is read whole.
    @Test func aLongHeaderIsReadWhole() throws {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-long-\(UUID().uuidString).npy").path
        defer { try? FileManager.default.removeItem(atPath: p) }
        var dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + String(repeating: " ", count: 6000)
        while (10 + dict.utf8.count + 1) % 64 != 0 { dict += " " }
        dict += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(dict.utf8.count & 0xFF), UInt8(dict.utf8.count >> 8)] + Array(dict.utf8)
        for v: Float in [1.5, -2] { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        let f = try NpyFile(path: p)
        #expect(f.header.shape == [2] && f.header.dataOffset == 10 + dict.utf8.count)
        let buf = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2)
        defer { buf.deallocate() }
        try f.readRows(start: 0, count: 2, into: buf)
        #expect(Array(buf) == [1.5, -2])
    }
}

import Foundation
import SigmaEngine
import Testing

let numpyFixtures = engineFixtures + "/numpy"

@Suite struct NumPyFormatTests {
    /// Files written by NumPy (make_numpy_fixtures.py) read back with NumPy's values.
    @Test func readsNumPyFiles() throws {
        let z = try NumPyFormat.readNpz(path: numpyFixtures + "/train.npz")
        #expect(z["x"]?.shape == [3, 4] && z["x"]?.scalars == (0..<12).map { Float($0) / 4 })
        #expect(z["y"]?.scalars == [2, 0, 1])
        #expect(try NumPyFormat.readNpy(path: numpyFixtures + "/labels_i4.npy").scalars == [-3, 0, 7, 1_048_576])
        #expect(try NumPyFormat.readNpy(path: numpyFixtures + "/mask_bool.npy").scalars == [1, 0, 0, 1])
        #expect(try NumPyFormat.readNpy(path: numpyFixtures + "/big_f8.npy").scalars == [1.5, -2.25])
        #expect(try NumPyFormat.readNpy(path: numpyFixtures + "/half.npy").scalars == [0.5, -1, 65504])
        let u = try NumPyFormat.readNpy(path: numpyFixtures + "/u1_3d.npy")
        #expect(u.shape == [2, 3, 4] && u.scalars == (0..<24).map(Float.init))
        // np.savez_compressed: deflated entries, inflated with zlib.
        #expect(try NumPyFormat.readNpz(path: numpyFixtures + "/compressed.npz")["x"]?.scalars == [1, 1, 1])
    }

    /// A damaged compressed entry is named, never read as data.
    @Test func aDamagedCompressedNpzIsNamed() throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: numpyFixtures + "/compressed.npz")))
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).npz").path
        defer { try? FileManager.default.removeItem(atPath: p) }
        // (the first entry's data starts after its 30-byte header, its name and its extra field)
        let start = 30 + Int(bytes[26]) + Int(bytes[27]) << 8 + Int(bytes[28]) + Int(bytes[29]) << 8
        bytes[start + 5] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        #expect { _ = try NumPyFormat.readNpz(path: p) } throws: { "\($0)".contains("entry 'x.npy'") && ("\($0)".contains("damaged") || "\($0)".contains("inflate")) }
    }

    @Test func readsIDX() throws {
        let images = try IDXFormat.read(path: numpyFixtures + "/images.idx3-ubyte")
        #expect(images.shape == [3, 2, 2] && images.scalars == stride(from: 0, to: 240, by: 20).map(Float.init))
        #expect(try IDXFormat.read(path: numpyFixtures + "/labels.idx1-ubyte").scalars == [7, 1, 9])
        #expect(try IDXFormat.read(path: numpyFixtures + "/floats.idx").scalars == [1.25, -3.5])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: numpyFixtures + "/images.idx3-ubyte"))
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("cut-\(UUID().uuidString).idx").path
        defer { try? FileManager.default.removeItem(atPath: p) }
        try bytes.prefix(bytes.count - 1).write(to: URL(fileURLWithPath: p))
        #expect { _ = try IDXFormat.read(path: p) } throws: { "\($0)".contains("truncated") && "\($0)".contains(p) }
    }

    /// Sigma writes `.npy` / `.npz` that NumPy reads (checked with the machine's python3 + NumPy), and reads them back.
    @Test func writesFilesNumPyReads() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("npz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = random([3, 5], seed: 80), b = Tensor(shape: [4], [3, 1, 4, 1])
        try NumPyFormat.writeNpz(["a": a, "labels": b], path: dir + "/out.npz")
        try NumPyFormat.writeNpy(a, path: dir + "/a.npy")
        let back = try NumPyFormat.readNpz(path: dir + "/out.npz")
        #expect(back["a"] == a && back["labels"] == b)
        #expect(try NumPyFormat.readNpy(path: dir + "/a.npy") == a)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", """
            import numpy as np, sys
            z = np.load(sys.argv[1]); a = np.load(sys.argv[2])
            assert z['a'].shape == (3, 5) and z['a'].dtype == np.float32 and (z['a'] == a).all()
            assert list(z['labels']) == [3, 1, 4, 1]
            print(repr(float(a.sum())))
            """, dir + "/out.npz", dir + "/a.npy"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "NumPy could not read Sigma's files")
        let sum = Double(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(sum != nil && abs(sum! - Double(a.scalars.reduce(0, +))) < 1e-4)
    }

    @Test func corruptNpyIsAnErrorNotACrash() throws {
        let good = try Data(contentsOf: URL(fileURLWithPath: numpyFixtures + "/u1_3d.npy"))
        for cut in 0..<good.count where cut % 7 == 0 {
            #expect(throws: FormatError.self) { _ = try NumPyFormat.readNpy(good.prefix(cut), file: "cut.npy") }
        }
        var rng = SeededRandom(seed: 81)
        for _ in 0..<300 {
            var d = good
            for _ in 0..<3 { d[Int(rng.next() % 100)] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? NumPyFormat.readNpy(d, file: "fuzz.npy")
        }
        // A header declaring an absurd shape is refused before anything is allocated.
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 9), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var huge = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.utf8.count), 0])
        huge.append(contentsOf: Array(header.utf8) + [0, 0, 0x80, 0x3F])
        #expect { _ = try NumPyFormat.readNpy(huge, file: "huge.npy") } throws: { "\($0)".contains("too large") }
    }
}

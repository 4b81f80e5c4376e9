import Foundation
import SigmaJobs
import SigmaModel
import Testing

/// CSV datasets with or without a header line and with a chosen label column (issue 22): the same rows, however
/// the file lays them out; a header read as numbers, an unknown column and a name without a header are named.
@Suite struct CSVDataTests {
    static func file(_ name: String, _ text: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-csv-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func headersAndLabelColumnsGiveTheSameRows() throws {
        let plain = try LabeledData.load(LabeledDataSpec(csv: try Self.file("plain.csv", "1,2,0\n3,4,1\n5,6,2\n")), features: 2, classes: 3, needLabels: true)
        let layouts: [LabeledDataSpec] = [
            LabeledDataSpec(csv: try Self.file("named.csv", "y,a,b\n0,1,2\n1,3,4\n2,5,6\n"), header: true, labelColumn: "y"),
            LabeledDataSpec(csv: try Self.file("index.csv", "1,0,2\n3,1,4\n5,2,6\n"), labelColumn: "1"),
            LabeledDataSpec(csv: try Self.file("last.csv", "a,b,label\n1,2,0\n3,4,1\n5,6,2\n"), header: true),
        ]
        for spec in layouts {
            let d = try LabeledData.load(spec, features: 2, classes: 3, needLabels: true)
            #expect(d.x == plain.x && d.y == plain.y && d.rows == 3, "\(spec)")
        }
        #expect(plain.x == [1, 2, 3, 4, 5, 6] && plain.y == [0, 1, 2])
    }

    @Test func layoutMistakesAreNamed() throws {
        func problem(_ spec: LabeledDataSpec) -> String {
            do { _ = try LabeledData.load(spec, features: 2, classes: 3, needLabels: true); return "loaded" } catch { return "\(error)" }
        }
        let headed = try Self.file("headed.csv", "a,b,y\n1,2,0\n")
        #expect(problem(LabeledDataSpec(csv: headed)).contains("add header: true"))
        #expect(problem(LabeledDataSpec(csv: headed, header: true, labelColumn: "z")).contains("no column 'z'"))
        #expect(problem(LabeledDataSpec(csv: headed, header: true, labelColumn: "7")).contains("3 columns"))
        // The spec's own checks: a column name needs a header; header applies to a csv only.
        let base = "kind: train\nmodel: {mlp: [2, 3]}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\n"
        #expect { _ = try JobSpec.parse(base + "data: {csv: \(headed), label_column: y}\n") } throws: { "\($0)".contains("add header: true") }
        #expect { _ = try JobSpec.parse(base + "data: {x: a.npy, y: b.npy, header: true}\n") } throws: { "\($0)".contains("csv only") }
        #expect { _ = try JobSpec.parse(base + "data: {csv: \(headed), header: yes please}\n") } throws: { "\($0)".contains("true or false") }
        let ok = try JobSpec.parse(base + "data: {csv: \(headed), header: true, label_column: y}\n")
        #expect(ok.kind == "train")
        // A feature that is NaN or infinite would make every loss NaN from the first step: named, not trained on.
        for (name, text) in [("nan.csv", "1,2,0\n3,nan,1\n"), ("inf.csv", "1,2,0\n3,4,1\ninf,5,2\n")] {
            let p = problem(LabeledDataSpec(csv: try Self.file(name, text)))
            #expect(p.contains("not a finite number") && p.contains(name.hasPrefix("nan") ? "row 2, feature 2" : "row 3, feature 1"), "\(p)")
        }
    }
}

/// IDX datasets (MNIST's format) in jobs, against the same data NumPy wrote as .npy (Fixtures/make_idx.py):
/// images (rows, height, width) are rows of height × width features.
@Suite struct IDXDataTests {
    @Test func idxImagesAndLabelsEqualNumPysArrays() throws {
        let idx = try LabeledData.load(LabeledDataSpec(x: fixtures + "/images-idx3-ubyte", y: fixtures + "/labels-idx1-ubyte"), features: 6, classes: 10, needLabels: true)
        let npy = try LabeledData.load(LabeledDataSpec(x: fixtures + "/images_flat.npy", y: fixtures + "/labels.npy"), features: 6, classes: 10, needLabels: true)
        #expect(idx.rows == 5 && idx.x == npy.x && idx.y == npy.y && idx.y == [3, 0, 9, 1, 3])
    }

    @Test func badIDXFilesAreNamed() throws {
        func problem(_ x: String, features: Int = 6) -> String {
            do { _ = try LabeledData.load(LabeledDataSpec(x: x, y: fixtures + "/labels-idx1-ubyte"), features: features, classes: 10, needLabels: true); return "loaded" }
            catch { return "\(error)" }
        }
        #expect(problem(fixtures + "/truncated-idx3-ubyte").contains("truncated"))
        #expect(problem(fixtures + "/images-idx3-ubyte", features: 784).contains("6 features per row (shape [5, 2, 3]); model.mlp[0] is 784"))
        #expect(problem(fixtures + "/reference.json").contains("neither a NumPy .npy file nor an IDX file"))
    }

    /// `.npz` datasets (np.savez and np.savez_compressed) give the same rows; missing arrays are named.
    @Test func npzDatasetsEqualTheSameArrays() throws {
        let npy = try LabeledData.load(LabeledDataSpec(x: fixtures + "/images_flat.npy", y: fixtures + "/labels.npy"), features: 6, classes: 10, needLabels: true)
        var plain = LabeledDataSpec()
        plain.npz = fixtures + "/xy.npz"
        var named = LabeledDataSpec()
        (named.npz, named.features, named.labels) = (fixtures + "/named.npz", "images", "digits")
        for spec in [plain, named] {
            let d = try LabeledData.load(spec, features: 6, classes: 10, needLabels: true)
            #expect(d.x == npy.x && d.y == npy.y, "\(spec)")
        }
        var wrong = named
        wrong.features = "pixels"
        #expect { _ = try LabeledData.load(wrong, features: 6, classes: 10, needLabels: true) } throws: { "\($0)".contains("no array 'pixels' (it has digits, images)") }
        let base = "kind: train\nmodel: {mlp: [6, 10]}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\n"
        let spec = try JobSpec.parse(base + "data: {npz: \(fixtures)/named.npz, features: images, labels: digits}\n")
        #expect(spec.kind == "train")
        #expect { _ = try JobSpec.parse(base + "data: {csv: a.csv, npz: b.npz}\n") } throws: { "\($0)".contains("one of csv, x/y, npz, safetensors, text or generate") }
        #expect { _ = try JobSpec.parse(base + "data: {x: a.npy, features: images}\n") } throws: { "\($0)".contains("applies to those only") }
    }
}

/// Generated data for tests and demos: the same rows in every process, a job that learns them, bad sizes named.
@Suite struct GeneratedDataTests {
    @Test func blobsAreTheSameEverywhereAndLearnable() throws {
        var spec = LabeledDataSpec()
        spec.generate = .init(rows: 600, features: 4, classes: 3, seed: 9, spread: 0.2)
        let a = try LabeledData.load(spec, features: 4, classes: 3, needLabels: true)
        let b = try LabeledData.load(spec, features: 4, classes: 3, needLabels: true)
        #expect(a.x == b.x && a.y == b.y && a.rows == 600 && a.y?.prefix(4) == [0, 1, 2, 0])
        let job = try JobSpec.parse("""
            kind: train
            model: {mlp: [4, 16, 3]}
            data: {generate: blobs, rows: 600, features: 4, classes: 3, seed: 9, spread: 0.2}
            optimizer: {adam: {lr: 0.02}}
            steps: 150
            batch_size: 32
            eval_every: 150
            """)
        let result = try JobKinds.standard.runLocal(job, roots: try DataRoots([FileManager.default.temporaryDirectory.path]))
        let report = try JobKinds.standard.report(result, spec: job)
        let accuracy = try #require(report.json["eval_accuracy"] as? Double, "\(report.json)")
        #expect(accuracy >= 0.95, "held-out accuracy \(accuracy)")
        #expect { _ = try JobSpec.parse("kind: train\nmodel: {mlp: [4, 3]}\ndata: {generate: blobs, rows: 10, features: 4, classes: 1}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\n") }
            throws: { "\($0)".contains("data.classes") && "\($0)".contains("between 2 and 1000") }
        #expect { _ = try JobSpec.parse("kind: train\nmodel: {mlp: [4, 3]}\ndata: {generate: spirals, rows: 10}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\n") }
            throws: { "\($0)".contains("expected blobs") }
        #expect { _ = try LabeledData.load(spec, features: 5, classes: 3, needLabels: true) } throws: { "\($0)".contains("model.mlp[0] is 5") }
    }
}

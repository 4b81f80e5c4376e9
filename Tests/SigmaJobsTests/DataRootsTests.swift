import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// A folder removed at the end of a test.
struct Folder {
    let path: String
    init(_ name: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let p = path + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Job files only under the data roots, errors without file contents, checkpoints never replacing a file (issue 17,
/// holes 3 and 5).
@Suite struct DataRootsTests {
    static func train(csv: String, extra: String = "") throws -> JobSpec {
        try JobSpec.parse("kind: train\nmodel: {mlp: [3, 4, 2]}\ndata: {csv: \(csv)}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 4\nbatch_size: 2\nmicro_batch: 1\nholdout: 0\n" + extra)
    }

    static func expectRefused(_ spec: JobSpec, roots: DataRoots, naming path: String, without secrets: [String]) {
        #expect {
            _ = try JobKinds.standard.prepare(spec, roots: roots)
        } throws: { e in
            let text = "\(e)"
            return text.contains(path) && text.contains("outside the data roots") && text.contains(roots.folders[0])
                && text.contains("--data-root") && secrets.allSatisfy { !text.contains($0) }
        }
    }

    /// `data: {csv: /proc/self/environ}` returned the coordinator's environment in the error, `/etc/passwd` its first
    /// line; now both are refused by path, with no content.
    @Test func filesOutsideTheRootsAreRefusedWithoutTheirContents() throws {
        let dir = try Folder("roots")
        defer { dir.remove() }
        let roots = try DataRoots([dir.path])
        let env = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
        Self.expectRefused(try Self.train(csv: "/proc/self/environ"), roots: roots, naming: "/proc/self/environ", without: [env])
        let passwd = (try? String(contentsOfFile: "/etc/passwd", encoding: .utf8))?.split(separator: "\n").first.map(String.init) ?? "root:x:0:0"
        Self.expectRefused(try Self.train(csv: "/etc/passwd"), roots: roots, naming: "/etc/passwd", without: [passwd, String(passwd.prefix(6))])
        // `..` out of a root is followed before the check (up to / from wherever TMPDIR puts the root).
        let up = String(repeating: "/..", count: dir.path.split(separator: "/").count)
        Self.expectRefused(try Self.train(csv: dir.path + up + "/etc/passwd"), roots: roots, naming: "/etc/passwd", without: [passwd])
        // Inside the root, a file named by the spec is read; a folder or a FIFO is not a data file.
        #expect { _ = try roots.file(dir.path, field: "data.csv") } throws: { "\($0)".contains("not a regular file") }
        #expect(mkfifo(dir.path + "/fifo", 0o600) == 0)
        #expect { _ = try roots.file(dir.path + "/fifo", field: "data.csv") } throws: { "\($0)".contains("not a regular file") }
    }

    /// A symlink inside a root that points outside it is refused (it resolves outside); one pointing inside is read.
    /// A file that is missing, a folder, or unreadable is told apart, with the path and how relative paths resolve
    /// (issue 20, point 7: "cannot read" without "no such file").
    @Test func unusableFilesAreToldApart() throws {
        let dir = try Folder("unusable")
        defer { dir.remove() }
        let roots = try DataRoots([dir.path])
        #expect { _ = try roots.file(dir.path + "/missing.csv", field: "data.csv") } throws: {
            "\($0)".contains("data.csv: no such file: '\(dir.path)/missing.csv'") && "\($0)".contains("relative paths resolve against the spec file's folder")
        }
        try FileManager.default.createDirectory(atPath: dir.path + "/sub", withIntermediateDirectories: true)
        #expect { _ = try roots.file(dir.path + "/sub", field: "data.x") } throws: { "\($0)".contains("is not a regular file (a folder)") }
    }

    @Test(.enabled(if: geteuid() != 0, "root reads any file: an unreadable one exists only for other users"))
    func anUnreadableFileIsToldApart() throws {
        let dir = try Folder("unreadable")
        defer { dir.remove() }
        let locked = try dir.write("locked.csv", "1,2\n")
        chmod(locked, 0o000)
        #expect { _ = try DataRoots([dir.path]).file(locked, field: "data.csv") } throws: { "\($0)".contains("is not readable by the user") }
    }

    @Test func aSymlinkInsideTheRootPointingOutsideIsRefused() throws {
        let dir = try Folder("symlink")
        defer { dir.remove() }
        let roots = try DataRoots([dir.path])
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/data.csv", withDestinationPath: "/etc/passwd")
        Self.expectRefused(try Self.train(csv: dir.path + "/data.csv"), roots: roots, naming: dir.path + "/data.csv", without: ["root:"])
        let real = try dir.write("real.csv", "1,2,3,0\n4,5,6,1\n1,1,1,0\n2,2,2,1\n")
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/inside.csv", withDestinationPath: real)
        #expect(try roots.file(dir.path + "/inside.csv", field: "data.csv") == (try roots.file(real, field: "data.csv")))
        _ = try JobKinds.standard.prepare(try Self.train(csv: dir.path + "/inside.csv"), roots: roots)
    }

    /// A CSV's error gives the line and column, never the text found there.
    @Test func csvErrorsCarryNoContents() throws {
        let dir = try Folder("csv")
        defer { dir.remove() }
        let p = try dir.write("d.csv", "1,2,3,0\n4,5,hunter2-secret,1\n")
        #expect { _ = try CSVFile.readFloats(path: p) } throws: { e in
            let t = "\(e)"
            return t.contains("line 2 column 3") && !t.contains("hunter2")
        }
    }

    /// A 128-byte `.npy` claiming shape (10^12, 0) is refused from its header (it aborted the coordinator with
    /// shard_size 1: 16 TB of shard ranges).
    @Test func anAbsurdNpyHeaderIsRefusedBeforeAnyAllocation() throws {
        let dir = try Folder("npy")
        defer { dir.remove() }
        let p = dir.path + "/huge.npy"
        try NpyFile.write(path: p, float64: [], shape: [1_000_000_000_000, 0])
        #expect { _ = try NpyFile(path: p) } throws: { "\($0)".contains("no values") }
        // A header whose rows do fit the file still meets the rows and shard limits before any range is made.
        let spec = MapReduceSpec(input: .npy(path: p), reduce: [.sum], sharding: .size(1))
        #expect(throws: SpecError.self) { try spec.sharding.check(rows: 1_000_000_000_000, limits: .standard) }
        #expect(throws: SpecError.self) { try SpecLimits.standard.checkRows("input.npy", 1_000_000_000_000) }
    }

    /// checkpoint_dir must lie under a root; a job never replaces a checkpoint another job (or an earlier run) wrote.
    @Test func checkpointsStayUnderTheRootsAndAreNeverReplaced() throws {
        let dir = try Folder("ckpt"), elsewhere = try Folder("elsewhere")
        defer { dir.remove(); elsewhere.remove() }
        let roots = try DataRoots([dir.path])
        let csv = try dir.write("d.csv", "1,2,3,0\n4,5,6,1\n1,1,1,0\n2,2,2,1\n")
        let outside = try Self.train(csv: csv, extra: "checkpoint_every: 2\ncheckpoint_dir: \(elsewhere.path)/ck")
        #expect { _ = try JobKinds.standard.prepare(outside, roots: roots) } throws: { "\($0)".contains("checkpoint_dir") && "\($0)".contains("outside the data roots") }
        #expect(!FileManager.default.fileExists(atPath: elsewhere.path + "/ck"), "nothing created outside the roots")

        let spec = try Self.train(csv: csv, extra: "checkpoint_every: 2\ncheckpoint_dir: \(dir.path)/ck")
        _ = try JobKinds.standard.runLocal(spec, roots: roots)
        let step2 = dir.path + "/ck/step-2.safetensors"
        let first = try Data(contentsOf: URL(fileURLWithPath: step2))
        // A second job with the same folder would write step-2 and step-4 again: refused at submit time.
        #expect { _ = try JobKinds.standard.prepare(spec, roots: roots) } throws: { "\($0)".contains("step-2.safetensors") && "\($0)".contains("never replaced") }
        // And a checkpoint write that finds the name taken (a file that appeared since) fails without replacing it.
        #expect { try OutputFiles.write(OutputFile(path: step2, bytes: Data([1, 2, 3])), replacing: false) } throws: { "\($0)".contains("already exists") }
        #expect(try Data(contentsOf: URL(fileURLWithPath: step2)) == first)
        #expect((try FileManager.default.contentsOfDirectory(atPath: dir.path + "/ck")).sorted() == ["step-2.safetensors", "step-4.safetensors"])
    }

    /// A worker refuses a spec beyond its own limits with an error, before loading anything.
    @Test func aShardRunnerRefusesSpecsBeyondItsLimits() throws {
        var small = SpecLimits.standard
        small.parameters = 10
        let runner = ShardRunner(limits: small)
        let spec = try Self.train(csv: "/nonexistent.csv")
        #expect { _ = try runner.run(spec, job: 1, round: 0, params: nil, start: 0, count: 1) } throws: { e in
            "\(e)".contains("limits.parameters") && !"\(e)".contains("nonexistent")
        }
    }
}

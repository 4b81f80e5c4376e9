import Foundation
import SigmaModel
#if canImport(Glibc)
import Glibc
#endif

/// The folders a process reads job files from and writes checkpoints into (`--data-root`, cluster.yaml
/// `data_roots`; default: the folder the process started in). A path a spec names is resolved with `realpath`
/// (every symlink and `..` followed), and accepted only when the result lies under one of the folders and is a
/// regular file (a folder, for a model folder), checked through a descriptor opened with `O_NOFOLLOW`. The spec
/// then reads the resolved paths. See docs/jobs.md, "Data roots and limits".
public struct DataRoots: Sendable, Equatable, CustomStringConvertible {
    /// Real paths of the folders, without a trailing slash ("/" for the whole filesystem).
    public let folders: [String]

    /// Resolves each folder (relative ones against the current directory); throws when one is not a folder.
    public init(_ folders: [String]) throws {
        guard !folders.isEmpty else { throw JobError("data roots: none given") }
        self.folders = try folders.map { f in
            guard let r = DataRoots.realPath(f) else { throw JobError("data root '\(f)': \(String(cString: strerror(errno)))") }
            var st = stat()
            guard stat(r, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw JobError("data root '\(f)' is not a folder") }
            return r
        }
    }

    /// The folder this process started in; none when it cannot be resolved (removed since): every path is refused
    /// then — it was the whole filesystem.
    public static func currentDirectory() -> DataRoots {
        (try? DataRoots([FileManager.default.currentDirectoryPath])) ?? DataRoots(unchecked: [])
    }

    init(unchecked folders: [String]) { self.folders = folders }

    public var description: String { folders.joined(separator: ", ") }

    static func realPath(_ p: String) -> String? {
        guard let r = realpath(p, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    func contains(_ real: String) -> Bool {
        folders.contains { $0 == "/" || real == $0 || real.hasPrefix($0 + "/") }
    }

    func outside(_ field: String, _ path: String, _ real: String) -> JobError {
        let via = real == path ? "" : " (it resolves to '\(real)')"
        return JobError("\(field): '\(path)'\(via) is outside the data roots (\(description)); job files are read, and checkpoints "
                        + "written, only under them — move the file there, or start the coordinator and workers with --data-root DIR "
                        + "(cluster.yaml data_roots)")
    }

    /// Why `path` could not be opened, for people: no such file (and how a spec's relative paths resolve), not
    /// readable by this user, or the system's word for it.
    static func unusable(_ field: String, _ path: String, errno e: Int32) -> JobError {
        switch e {
        case ENOENT, ENOTDIR:
            return JobError("\(field): no such file: '\(path)' (a spec's relative paths resolve against the spec file's folder)")
        case EACCES:
            return JobError("\(field): '\(path)' is not readable by the user the coordinator and workers run as")
        default:
            return JobError("\(field): '\(path)': \(String(cString: strerror(e)))")
        }
    }

    /// The real path of a regular file under a root, for reading.
    public func file(_ path: String, field: String) throws -> String {
        guard !path.isEmpty else { throw JobError("\(field): empty path") }
        guard let real = DataRoots.realPath(path) else { throw Self.unusable(field, path, errno: errno) }
        guard contains(real) else { throw outside(field, path, real) }
        // (O_NONBLOCK: a FIFO must not hold the open; O_NOFOLLOW: a symlink put there since realpath is refused)
        let fd = open(real, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw Self.unusable(field, path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw JobError("\(field): '\(path)' is not a regular file (\((st.st_mode & S_IFMT) == S_IFDIR ? "a folder" : "a device, socket or pipe"))")
        }
        return real
    }

    /// The real path of a folder under a root (an embed model folder), for reading.
    public func folder(_ path: String, field: String) throws -> String {
        guard !path.isEmpty else { throw JobError("\(field): empty path") }
        guard let real = DataRoots.realPath(path) else { throw Self.unusable(field, path, errno: errno) }
        guard contains(real) else { throw outside(field, path, real) }
        var st = stat()
        guard lstat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw JobError("\(field): '\(path)' is not a folder") }
        return real
    }

    /// The real path of a folder to write into under a root, created (with its missing parents) if needed. The
    /// part that does not exist yet may not contain `.` or `..`.
    public func outputFolder(_ path: String, field: String) throws -> String {
        guard !path.isEmpty else { throw JobError("\(field): empty path") }
        var existing = path, missing: [String] = []
        while DataRoots.realPath(existing) == nil {
            let url = URL(fileURLWithPath: existing)
            let name = url.lastPathComponent, parent = url.deletingLastPathComponent().path
            guard !name.isEmpty, name != ".", name != "..", name != "/", parent != existing else {
                throw JobError("\(field): '\(path)': cannot resolve its parent folder")
            }
            missing.insert(name, at: 0)
            existing = parent
        }
        let base = DataRoots.realPath(existing)!
        guard contains(base) else { throw outside(field, path, base + (missing.isEmpty ? "" : "/" + missing.joined(separator: "/"))) }
        let target = missing.isEmpty ? base : (base == "/" ? "" : base) + "/" + missing.joined(separator: "/")
        do { try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true) } catch {
            throw JobError("\(field): cannot create '\(path)': \(error.localizedDescription)")
        }
        // (made again from real paths: a symlink swapped in meanwhile shows here)
        guard let real = DataRoots.realPath(target), real == target else { throw JobError("\(field): '\(path)' changed while it was created") }
        var st = stat()
        guard lstat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw JobError("\(field): '\(path)' is not a folder") }
        return real
    }
}

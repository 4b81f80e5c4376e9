import Foundation
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

/// A worker's copies of input files the coordinator ships (`input_transport: coordinator`), in a cache keyed by
/// SHA-256: `<cache>/<sha256>/<file name>`. A compute thread asks for a job's files (`localize`) and waits; the
/// poller thread sends its FILE-GETs and hands the answers back (`outbox`, `deliver`). Each file is written under a
/// temporary name, checked against the SHA-256 the coordinator announced, then renamed into place — so what the
/// cache holds under a digest always has that digest, and a file travels to a host once whatever jobs use it.
final class InputFetcher: Sendable {
    let directory: String
    /// Most bytes the cache keeps (0: no limit): after each job's files are in place, the least recently used
    /// entries of jobs no longer running here are removed until it fits.
    let limit: UInt64
    /// Cache entries (directory names) each job running here uses: never removed while it runs.
    private let inUse = Mutex<[JobID: Set<String>]>([:])
    /// Bytes per FILE-GET.
    let chunk: UInt32
    let timeoutSeconds: Double
    private let nextRequest = Atomic<UInt64>(1)
    private let pending = Mutex<[UInt64: Slot]>([:])
    private let queued = Mutex<[Message]>([])
    let wake: @Sendable () -> Void

    final class Slot: Sendable {
        let done = DispatchSemaphore(value: 0)
        let answer = Mutex<Result<FileData, FetchError>?>(nil)
    }

    struct FetchError: Error, CustomStringConvertible {
        let description: String
    }

    init(directory: String, limit: UInt64 = 0, chunk: UInt32 = 4 << 20, timeoutSeconds: Double = 60, wake: @escaping @Sendable () -> Void) {
        self.directory = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        self.limit = limit
        self.chunk = chunk
        self.timeoutSeconds = timeoutSeconds
        self.wake = wake
    }

    /// The default cache: $XDG_CACHE_HOME/sigma/inputs, else ~/.cache/sigma/inputs.
    static var defaultDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/sigma/inputs" }
        if let h = env["HOME"], !h.isEmpty { return h + "/.cache/sigma/inputs" }
        return "/tmp/sigma-inputs-\(getuid())"
    }

    // MARK: poller side

    /// FILE-GETs waiting to be sent (the poller sends them).
    func outbox() -> [Message] {
        queued.withLock { q in
            defer { q.removeAll() }
            return q
        }
    }

    /// Hands an answer to the compute thread waiting on `request`; false when nobody waits for it.
    func deliver(request: UInt64, _ answer: Result<FileData, FetchError>) -> Bool {
        guard let slot = pending.withLock({ $0.removeValue(forKey: request) }) else { return false }
        slot.answer.withLock { $0 = answer }
        slot.done.signal()
        return true
    }

    func isPending(_ request: UInt64) -> Bool { request != 0 && pending.withLock { $0[request] != nil } }

    /// Every waiting request fails (the connection to the coordinator is gone).
    func failAll(_ why: String) {
        let slots = pending.withLock { p in
            defer { p.removeAll() }
            return p
        }
        for (_, s) in slots {
            s.answer.withLock { $0 = .failure(FetchError(description: why)) }
            s.done.signal()
        }
    }

    // MARK: compute-thread side

    func get(job: JobID, index: UInt32, offset: UInt64, length: UInt32) throws -> FileData {
        let id = nextRequest.add(1, ordering: .relaxed).newValue
        let slot = Slot()
        pending.withLock { $0[id] = slot }
        queued.withLock { $0.append(.fileGet(FileGet(request: id, job: job, index: index, offset: offset, length: length))) }
        wake()
        if slot.done.wait(timeout: .now() + timeoutSeconds) == .timedOut {
            _ = pending.withLock { $0.removeValue(forKey: id) }
            throw FetchError(description: "no answer from the coordinator within \(Int(timeoutSeconds)) s")
        }
        let d = try slot.answer.withLock { $0! }.get()
        guard d.job == job, d.index == index, d.offset == offset, d.payload.count <= Int(length) else {
            throw FetchError(description: "the coordinator answered for job \(d.job) file \(d.index) at \(d.offset), asked job \(job) file \(index) at \(offset)")
        }
        return d
    }

    /// `spec` reading local copies of its input files: cached ones as they are, the others fetched first.
    func localize(_ spec: OpenSpec, job: JobID) throws -> OpenSpec {
        do {
            let first = try get(job: job, index: 0, offset: 0, length: 0)
            var local: [String: String] = [:]
            var shas: [String] = []
            for i in 0..<first.files {
                let meta = i == 0 ? first : try get(job: job, index: i, offset: 0, length: 0)
                inUse.withLock { $0[job, default: []].insert(meta.sha256) }   // (before it is written: not pruned meanwhile)
                local[meta.path] = try cached(meta, job: job)
                shas.append(meta.sha256)
            }
            for folder in spec.paths.filter({ $0.folder != nil && $0.workers }).map(\.path) {
                let inFolder = local.filter { $0.key.hasPrefix(folder + "/") }
                local[folder] = try folderOfLinks(inFolder.map { (String($0.key.dropFirst(folder.count + 1)), $0.value) },
                                                  key: SHA256.hex(of: Array(inFolder.keys.sorted().map { local[$0]! }.joined(separator: "\n").utf8)))
            }
            // The entries this job uses: marked used now (their directory's time) and kept while it runs.
            let entries = Set(local.values.map { String($0.dropFirst(directory.count + 1).prefix { $0 != "/" }) })
            for e in entries { utimes(directory + "/" + e, nil) }
            inUse.withLock { $0[job, default: []].formUnion(entries) }
            prune()
            return spec.localized(local)
        } catch let e as FetchError {
            throw JobError("input_transport coordinator: \(e)")
        }
    }

    /// The job no longer runs here: its cache entries may be removed.
    func release(_ jobs: Set<JobID>) {
        inUse.withLock { u in for j in jobs { u[j] = nil } }
    }

    /// Which entries to remove, oldest use first, so that the rest fit in `limit` bytes; entries in `keep` stay.
    static func evictions(_ entries: [(name: String, bytes: UInt64, used: Double)], keep: Set<String>, limit: UInt64) -> [String] {
        var total = entries.reduce(UInt64(0)) { $0 + $1.bytes }
        var out: [String] = []
        for e in entries.sorted(by: { ($0.used, $0.name) < ($1.used, $1.name) }) where total > limit && !keep.contains(e.name) {
            out.append(e.name)
            total -= e.bytes
        }
        return out
    }

    /// Removes least recently used entries until the cache fits its limit (hard links count once per entry, so
    /// the total is an upper bound). Entries of jobs running here are kept; a partial download (`.part`) is not an
    /// entry.
    func prune() {
        guard limit > 0, let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        let keep = inUse.withLock { $0.values.reduce(into: Set<String>()) { $0.formUnion($1) } }
        var entries: [(name: String, bytes: UInt64, used: Double)] = []
        for n in names where !n.hasPrefix(".") && !n.hasSuffix(".part") {
            var st = stat()
            guard lstat(directory + "/" + n, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            var bytes: UInt64 = 0
            for f in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + n)) ?? [] {
                var fs = stat()
                if lstat(directory + "/" + n + "/" + f, &fs) == 0 { bytes += UInt64(fs.st_size) }
            }
            entries.append((n, bytes, Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9))
        }
        for e in Self.evictions(entries, keep: keep, limit: limit) {
            try? FileManager.default.removeItem(atPath: directory + "/" + e)
        }
    }

    /// The cache's copy of the file `meta` describes, fetched if missing.
    func cached(_ meta: FileData, job: JobID) throws -> String {
        let name = (meta.path as NSString).lastPathComponent
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/") else {
            throw FetchError(description: "file \(meta.index): '\(meta.path)' has no usable file name")
        }
        let dir = directory + "/" + meta.sha256
        let path = dir + "/" + name
        if Self.isVerified(path, size: meta.size, sha256: meta.sha256) { return path }
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw FetchError(description: "cannot create the cache directory \(dir): \(error)")
        }
        let temp = dir + "/.\(name).\(getpid()).\(nextRequest.add(1, ordering: .relaxed).newValue).part"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FetchError(description: "cannot write \(temp): \(String(cString: strerror(errno)))") }
        var closed = false
        defer {
            if !closed { close(fd) }
            unlink(temp)
        }
        var hash = SHA256()
        var offset: UInt64 = 0
        while offset < meta.size {
            let d = try get(job: job, index: meta.index, offset: offset, length: chunk)
            guard d.size == meta.size, d.sha256 == meta.sha256 else {
                throw FetchError(description: "'\(meta.path)' changed on the coordinator during the transfer")
            }
            guard !d.payload.isEmpty else { throw FetchError(description: "'\(meta.path)': no bytes at \(offset) of \(meta.size)") }
            try d.payload.withUnsafeBytes { b in
                hash.update(b)
                var done = 0
                while done < b.count {
                    let w = write(fd, b.baseAddress! + done, b.count - done)
                    guard w > 0 else { throw FetchError(description: "cannot write \(temp): \(String(cString: strerror(errno)))") }
                    done += w
                }
            }
            offset += UInt64(d.payload.count)
        }
        let got = SHA256.hex(hash.finish())
        guard got == meta.sha256 else {
            throw FetchError(description: "'\(meta.path)' arrived with SHA-256 \(got), the coordinator announced \(meta.sha256); not kept")
        }
        guard fchmod(fd, 0o444) == 0, fsync(fd) == 0, close(fd) == 0 else { throw FetchError(description: "cannot write \(temp): \(String(cString: strerror(errno)))") }
        closed = true
        guard rename(temp, path) == 0 else { throw FetchError(description: "cannot rename \(temp): \(String(cString: strerror(errno)))") }
        Self.recordVerified(path)
        return path
    }

    /// What changes whenever a file's bytes can have: inode, size and modification time (not ctime: linking a cached
    /// file into a model folder changes that).
    static func stamp(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return "\(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }

    static func stampPath(_ path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().path + "/." + url.lastPathComponent + ".verified"
    }

    /// Notes that `path`'s bytes were checked against their SHA-256 just now.
    static func recordVerified(_ path: String) {
        guard let s = stamp(path) else { return }
        try? s.write(toFile: stampPath(path), atomically: true, encoding: .utf8)
    }

    /// Whether the cached `path` can be used as is: it has the size, and either its stamp is the one recorded when its
    /// SHA-256 was last checked, or it is checked again now and matches. A copy that was changed on disk is removed
    /// (and then fetched again).
    static func isVerified(_ path: String, size: UInt64, sha256: String) -> Bool {
        guard let now = stamp(path) else { return false }
        if now.split(separator: " ").dropFirst().first == Substring("\(size)") {
            if (try? String(contentsOfFile: stampPath(path), encoding: .utf8)) == now { return true }
        } else {
            return false   // a partial or foreign file: fetched again (the fetch replaces it)
        }
        if (try? SHA256.file(path))?.hex == sha256 {
            recordVerified(path)
            return true
        }
        unlink(path)
        unlink(stampPath(path))
        return false
    }

    /// A folder holding `files` (name, cached path) under their names — hard links into the cache (copies where
    /// links fail), made under a temporary name and renamed into place.
    func folderOfLinks(_ files: [(String, String)], key: String) throws -> String {
        let dir = directory + "/folder-" + key
        if FileManager.default.fileExists(atPath: dir) { return dir }
        let temp = dir + ".\(getpid()).\(nextRequest.add(1, ordering: .relaxed).newValue).part"
        do {
            try FileManager.default.createDirectory(atPath: temp, withIntermediateDirectories: true)
            for (name, path) in files {
                guard !name.isEmpty, !name.contains("/") else { throw FetchError(description: "'\(name)' is not a file name in a model folder") }
                if link(path, temp + "/" + name) != 0 { try FileManager.default.copyItem(atPath: path, toPath: temp + "/" + name) }
            }
            if rename(temp, dir) != 0 {
                try? FileManager.default.removeItem(atPath: temp)
                guard FileManager.default.fileExists(atPath: dir) else { throw FetchError(description: "cannot create \(dir)") }
            }
            return dir
        } catch let e as FetchError {
            throw e
        } catch {
            try? FileManager.default.removeItem(atPath: temp)
            throw FetchError(description: "cannot create \(dir): \(error)")
        }
    }
}

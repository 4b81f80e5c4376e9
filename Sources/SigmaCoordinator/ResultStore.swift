import Foundation
import SigmaModel
import SigmaTransport

/// Finished jobs' results larger than `CoordinatorConfig.storeResultsOver`, one file per job: in the state folder
/// (`<state>/results/<job>.result`, written durably before the journal records the job's end) or, for a
/// coordinator without a journal, in a private temporary folder removed when it stops (or, when it was killed, by the
/// next coordinator without a journal that starts: `sweepStale`). The coordinator's memory
/// holds none of them; clients read them in pieces (RESULT-GET).
final class ResultStore: @unchecked Sendable {   // (written by the poller thread, read by the file server's)
    let folder: String
    /// The folder is this process's own (no journal): removed at stop.
    let temporary: Bool

    /// The store of a state folder (nil: a temporary one).
    init(stateFolder: String?) throws {
        if let stateFolder {
            folder = stateFolder + "/results"
            temporary = false
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw JournalError(file: folder, problem: "cannot create the results folder (\(error.localizedDescription)); give a writable --state-dir")
            }
        } else {
            let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
            ResultStore.sweepStale(in: base)
            var template = Array((base + "/\(ResultStore.temporaryPrefix)\(getpid())-XXXXXX").utf8CString)
            guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                throw JournalError(file: base, problem: "cannot create a folder for job results (\(String(cString: strerror(errno)))); set TMPDIR to a writable folder")
            }
            folder = String(cString: made)
            temporary = true
        }
    }

    // A result is renamed into place whole, and a restart checks its size. It is not fsynced: like the journal's
    // commits (synchronous=NORMAL), a result survives the process's death, and a power loss may take the latest ones
    // (the restart then says so); a poller stalled for seconds on a gigabyte's fsync would miss workers' heartbeats.

    func path(_ job: JobID) -> String { "\(folder)/\(job).result" }

    /// Writes job `job`'s result.
    func write(_ job: JobID, _ bytes: [UInt8]) throws {
        if let problem = bytes.withUnsafeBytes({ writeWhole($0, to: path(job)) }) { throw StoreError(path: path(job), problem: problem) }
    }

    /// The size of job `job`'s stored result (nil: missing).
    func size(_ job: JobID) -> UInt64? {
        var st = stat()
        return stat(path(job), &st) == 0 ? UInt64(st.st_size) : nil
    }

    /// Bytes `offset..<offset+length` of job `job`'s result of `size` bytes (fewer at its end).
    func read(_ job: JobID, offset: UInt64, length: UInt32, size: UInt64) throws -> Frame {
        let p = path(job)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError(path: p, problem: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, UInt64(st.st_size) == size else {
            throw StoreError(path: p, problem: "\(st.st_size) bytes, but the job's result has \(size)")
        }
        let n = Int(min(UInt64(length), size - min(offset, size)))
        var short = false
        let frame = Frame(count: n) { buf in
            var done = 0
            while done < n {
                let r = pread(fd, buf.baseAddress! + done, n - done, off_t(offset) + off_t(done))
                if r <= 0 { short = true; memset(buf.baseAddress! + done, 0, n - done); break }
                done += r
            }
        }
        if short { throw StoreError(path: p, problem: "read failed at byte \(offset)") }
        return frame
    }

    func discard(_ job: JobID) { unlink(path(job)) }

    /// Deletes every file but the results of `kept` (left by jobs the journal no longer holds, or by a stop between
    /// a result's write and its journal entry).
    func sweep(keeping kept: Set<JobID>) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            if name.hasSuffix(".result"), let id = JobID(name.dropLast(".result".count)), kept.contains(id) { continue }
            unlink(folder + "/" + name)
        }
    }

    /// Temporary stores are `sigma-results-<pid>-XXXXXX`, so one whose coordinator was killed (SIGKILL cannot clean up)
    /// is known as such.
    static let temporaryPrefix = "sigma-results-"

    /// Removes the temporary stores in `base` of this user's coordinators that no longer run (their results went with
    /// them: nothing can ask for them again). Another user's, a live process's and any other name are left alone.
    static func sweepStale(in base: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix(temporaryPrefix) {
            let rest = name.dropFirst(temporaryPrefix.count).split(separator: "-", maxSplits: 1)
            guard rest.count == 2, rest[1].count == 6, let pid = Int32(rest[0]), pid > 0 else { continue }
            var st = stat()
            let path = base + "/" + name
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == geteuid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    /// A temporary store is removed with its results.
    func removeIfTemporary() {
        if temporary { try? FileManager.default.removeItem(atPath: folder) }
    }

    struct StoreError: Error, CustomStringConvertible {
        let path: String
        let problem: String
        var description: String { "job result \(path): \(problem)" }
    }
}

/// Writes `bytes` to `path` under a temporary name, then renames it into place (a crash leaves no half file); nil on
/// success, else what went wrong. Not fsynced: like the journal's commits (synchronous=NORMAL), the file survives the
/// process's death, and a power loss may take the latest ones.
func writeWhole(_ bytes: UnsafeRawBufferPointer, to path: String) -> String? {
    let partial = path + ".partial"
    let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return String(cString: strerror(errno)) }
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
        if n <= 0 { break }
        done += n
    }
    let problem = done < bytes.count ? String(cString: strerror(errno)) : nil
    close(fd)
    if problem == nil, rename(partial, path) == 0 { return nil }
    let why = problem ?? String(cString: strerror(errno))
    unlink(partial)
    return why
}

/// Writes what must reach the disk off the poller thread — finished jobs' results, committed shard results over
/// 64 KiB — in the order asked (a gigabyte takes seconds here; heartbeats must not wait for it). Each piece of work
/// reports back through `Shared` and wakes the poller, which then tells the core or the journal.
final class StoreWriter: @unchecked Sendable {
    private let queue = BlockingQueue<@Sendable () -> Void>()
    private var thread: OSThread?

    init() {
        thread = OSThread(name: "sigma-store") { [queue] in
            while let work = queue.next() { work() }
        }
    }

    func push(_ work: @escaping @Sendable () -> Void) { queue.push(work) }

    /// Finishes what was asked, then ends the thread.
    func stop() {
        queue.close(dropping: false)
        thread?.join()
        thread = nil
    }
}

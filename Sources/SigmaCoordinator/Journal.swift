import Foundation
import GRDB
import SigmaCoordinatorCore
import SigmaModel
import SigmaProtocol

/// The coordinator's journal: SQLite in WAL mode (GRDB) in its state folder. It holds every accepted job (spec,
/// submitter, options, client-chosen id), each committed shard result of a job that resumes from its shards, each
/// job's end and result, and the next job id. The shell writes a batch of entries in one transaction before it sends
/// anything the same batch produced, so nothing is acknowledged before it is on disk (docs/operations.md, "Restarts
/// and the journal").
public final class Journal: @unchecked Sendable {   // (used by the coordinator's poller thread only, after start)
    /// The journal file's format; a newer one is refused (not silently started afresh).
    static let schemaVersion = 4
    let queue: DatabaseQueue
    public let path: String
    /// Committed shard results over `inlineShardBytes` live here as files (`<job>-<shard>`), the journal's row
    /// marking them: gigabytes of infer or embed outputs do not pass through SQLite's WAL twice.
    let shardFolder: String
    static let inlineShardBytes = 64 << 10
    let lockFD: Int32

    /// Opens (or creates) the journal in `folder` (created 0700). Errors name the file and what to do.
    public init(folder: String) throws {
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            throw JournalError(file: folder, problem: "cannot create the state folder (\(error.localizedDescription)); give a writable --state-dir")
        }
        var st = stat()
        guard stat(folder, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw JournalError(file: folder, problem: "not a folder; give another --state-dir") }
        guard access(folder, W_OK) == 0 else { throw JournalError(file: folder, problem: "not writable by this user; give a writable --state-dir") }
        lockFD = open(folder + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            if lockFD >= 0 { close(lockFD) }
            throw JournalError(file: folder, problem: "in use by another coordinator; give each coordinator its own --state-dir")
        }
        path = folder + "/journal.sqlite"
        shardFolder = folder + "/shards"
        do { try FileManager.default.createDirectory(atPath: shardFolder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            close(lockFD)
            throw JournalError(file: shardFolder, problem: "cannot create the shards folder (\(error.localizedDescription)); give a writable --state-dir")
        }
        do {
            queue = try DatabaseQueue(path: path)
            try queue.writeWithoutTransaction { db in
                // Free pages go back to the file system (a large job's committed shards leave when it ends; set before
                // WAL mode and the first table, so for journals created from now on) and the WAL file is cut back
                // after checkpoints.
                if try Int.fetchOne(db, sql: "PRAGMA user_version") == 0 { try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL") }
                try db.execute(sql: "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864")
            }
            try Self.migrate(queue, path: path)
        } catch let e as JournalError {
            close(lockFD)
            throw e
        } catch {
            close(lockFD)
            throw JournalError(file: path, problem: "cannot be opened as a journal (\(error)); if it is damaged, move it aside to start afresh — its jobs are then forgotten")
        }
    }

    deinit { close(lockFD) }

    static func migrate(_ queue: DatabaseQueue, path: String) throws {
        try queue.write { db in
            let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            guard version <= schemaVersion else {
                throw JournalError(file: path, problem: "written by a newer Sigma (journal format \(version), this one reads \(schemaVersion)); run that version, or move the file aside")
            }
            if version == 0 {
                try db.execute(sql: """
                    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                    CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL,
                        options INTEGER NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL, owner_name TEXT NOT NULL,
                        state INTEGER, error TEXT, result BLOB, shards INTEGER, elapsed INTEGER, dropped INTEGER NOT NULL DEFAULT 0,
                        result_size INTEGER, result_stored INTEGER NOT NULL DEFAULT 0, shares INTEGER NOT NULL DEFAULT 0);
                    CREATE TABLE shards (job INTEGER NOT NULL, shard INTEGER NOT NULL, payload BLOB NOT NULL, in_file INTEGER NOT NULL DEFAULT 0,
                        PRIMARY KEY (job, shard));
                    CREATE TABLE logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER NOT NULL, at INTEGER NOT NULL, level INTEGER NOT NULL, text TEXT NOT NULL);
                    CREATE INDEX logs_job ON logs (job, seq);
                    CREATE TABLE deployments (name TEXT PRIMARY KEY, spec BLOB NOT NULL, owner TEXT NOT NULL DEFAULT '');
                    PRAGMA user_version = \(schemaVersion);
                    """)
                return
            }
            if version == 1 {
                // Format 2: a result may be kept in a file of the state folder (results/<job>.result), the row its size.
                try db.execute(sql: """
                    ALTER TABLE jobs ADD COLUMN result_size INTEGER;
                    ALTER TABLE jobs ADD COLUMN result_stored INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE shards ADD COLUMN in_file INTEGER NOT NULL DEFAULT 0;
                    """)
            }
            if version <= 2 {
                // Format 3: the deployments' specs.
                try db.execute(sql: "CREATE TABLE deployments (name TEXT PRIMARY KEY, spec BLOB NOT NULL)")
            }
            if version <= 3 {
                // Format 4: the worker slots of a job's first plan (its committed shards' ranges follow from them),
                // and who made each deployment.
                try db.execute(sql: "ALTER TABLE jobs ADD COLUMN shares INTEGER NOT NULL DEFAULT 0")
                try db.execute(sql: "ALTER TABLE deployments ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            }
            try db.execute(sql: "PRAGMA user_version = \(schemaVersion)")
        }
    }

    /// Writes `entries` in one transaction, with the rows of shard results `filed` as files (`writeShard`) — of
    /// jobs that are still running: the file of a job that has ended meanwhile is deleted instead.
    public func write(_ entries: [JournalEntry], filed: [(job: JobID, shard: ShardIndex)] = []) throws {
        guard !entries.isEmpty || !filed.isEmpty else { return }
        var orphans: [String] = []
        defer { for f in orphans { unlink(f) } }
        try queue.write { db in
            for (job, shard) in filed {
                try db.cachedStatement(sql: """
                    INSERT OR REPLACE INTO shards (job, shard, payload, in_file)
                    SELECT ?, ?, x'', 1 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ? AND state IS NULL)
                    """).execute(arguments: [Int64(job), Int64(shard), Int64(job)])
                if db.changesCount == 0 { orphans.append(shardFile(job, shard)) }
            }
            for e in entries {
                switch e {
                case .accepted(let j):
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO jobs (id, kind, name, spec, options, key, owner, owner_name, shares) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)").execute(
                                   arguments: [Int64(j.id), j.spec.kind, j.spec.name, Data(j.spec.body), Int64(j.options.rawValue), j.key, j.owner, j.ownerName,
                                               Int64(j.shares)])
                    try db.cachedStatement(sql: "INSERT INTO meta (key, value) VALUES ('next_job', ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)").execute(
                                   arguments: [Int64(j.id + 1)])
                case .committed(let job, let shard, let payload):
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO shards (job, shard, payload) VALUES (?, ?, ?)").execute(
                                   arguments: [Int64(job), Int64(shard), payload.withUnsafeBytes { Data($0) }])
                case .resultDropped(let job):
                    // (no longer stored either: a restart neither looks for its file nor counts its bytes)
                    try db.cachedStatement(sql: "UPDATE jobs SET result = NULL, dropped = 1, result_stored = 0 WHERE id = ?").execute(arguments: [Int64(job)])
                case .logged(let job, let line):
                    try db.cachedStatement(sql: "INSERT INTO logs (job, at, level, text) VALUES (?, ?, ?, ?)").execute(
                        arguments: [Int64(job), Int64(bitPattern: line.at), Int64(line.level.rawValue), line.text])
                case .ended(let job, let state, let error, let result, let size, let shards, let elapsed):
                    let stored: Int64 = result.isEmpty && size > 0 ? 1 : 0
                    try db.cachedStatement(sql: "UPDATE jobs SET state = ?, error = ?, result = ?, result_size = ?, result_stored = ?, shards = ?, elapsed = ? WHERE id = ?").execute(
                                   arguments: [Int64(state.rawValue), error, Data(result), Int64(size), stored, Int64(shards), Int64(elapsed), Int64(job)])
                    for shard in try Int64.fetchAll(db, sql: "SELECT shard FROM shards WHERE job = ? AND in_file = 1", arguments: [Int64(job)]) {
                        unlink(shardFile(job, ShardIndex(shard)))
                    }
                    try db.cachedStatement(sql: "DELETE FROM shards WHERE job = ?").execute(arguments: [Int64(job)])
                case .deployed(let name, let spec, let owner):
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO deployments (name, spec, owner) VALUES (?, ?, ?)").execute(arguments: [name, Data(spec.body), owner])
                case .undeployed(let name):
                    try db.cachedStatement(sql: "DELETE FROM deployments WHERE name = ?").execute(arguments: [name])
                }
            }
        }
        if entries.contains(where: { if case .ended = $0 { true } else { false } }) {
            try queue.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA incremental_vacuum") }
        }
    }

    /// What an earlier run left: its jobs (oldest first; at most `keep` ended ones, the latest) with the committed
    /// shards of those that had not ended, and the next free job id.
    public func read(keep: Int) throws -> (next: JobID, jobs: [RestoredJob]) {
        try queue.read { db in
            let next = JobID(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'next_job'") ?? 1)
            var out: [RestoredJob] = []
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM jobs WHERE state IS NULL OR id IN (SELECT id FROM jobs WHERE state IS NOT NULL ORDER BY id DESC LIMIT ?) ORDER BY id
                """, arguments: [keep])
            func logs(_ job: JobID) throws -> [JobLogLine] {
                try Row.fetchAll(db, sql: "SELECT at, level, text FROM (SELECT * FROM logs WHERE job = ? ORDER BY seq DESC LIMIT 2000) ORDER BY seq",
                                 arguments: [Int64(job)]).map { l in
                    JobLogLine(at: UInt64(bitPattern: l["at"] as Int64), level: LogLevel(rawValue: UInt8(truncatingIfNeeded: l["level"] as Int64)) ?? .info,
                               text: l["text"])
                }
            }
            for row in rows {
                let body: Data = row["spec"]
                let job = JournaledJob(id: JobID(row["id"] as Int64), spec: JobSpec(kind: row["kind"], name: row["name"], body: Array(body)),
                                       options: SubmitOptions(rawValue: UInt8(truncatingIfNeeded: row["options"] as Int64)), key: row["key"],
                                       owner: row["owner"], ownerName: row["owner_name"], shares: Int(row["shares"] as Int64? ?? 0))
                if let raw = row["state"] as Int64?, let state = JobState(rawValue: UInt8(truncatingIfNeeded: raw)), state.isFinal {
                    let result: Data = row["result"] ?? Data()
                    var r = RestoredJob(job: job, state: state, error: row["error"] ?? "", result: Array(result),
                                        shards: UInt32(truncatingIfNeeded: row["shards"] as Int64? ?? 0), elapsed: Nanos(row["elapsed"] as Int64? ?? 0))
                    r.logs = try logs(job.id)
                    r.resultDropped = (row["dropped"] as Int64? ?? 0) != 0
                    if (row["result_stored"] as Int64? ?? 0) != 0 { r.storedResult = UInt64(row["result_size"] as Int64? ?? 0) }
                    out.append(r)
                } else {
                    let shards = try Row.fetchAll(db, sql: "SELECT shard, payload, in_file FROM shards WHERE job = ? ORDER BY shard", arguments: [Int64(job.id)])
                    var r = RestoredJob(job: job, state: .running, committed: shards.compactMap { s in
                        let shard = ShardIndex(s["shard"] as Int64)
                        if (s["in_file"] as Int64) != 0 {
                            // (a file lost with the host's power: that shard runs again)
                            return FileManager.default.contents(atPath: shardFile(job.id, shard)).map { (shard, Frame(Array($0))) }
                        }
                        let payload: Data = s["payload"]
                        return (shard, Frame(Array(payload)))
                    })
                    r.logs = try logs(job.id)
                    out.append(r)
                }
            }
            return (max(next, (out.map(\.job.id).max() ?? 0) + 1), out)
        }
    }

    /// The deployments' `kind: serve` specs and who made them (`Principal.owner`; "" if not known), by name.
    public func deployments() throws -> [(spec: JobSpec, owner: String)] {
        try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT name, spec, owner FROM deployments ORDER BY name").map { r in
                let body: Data = r["spec"]
                return (JobSpec(kind: "serve", name: r["name"], body: Array(body)), r["owner"])
            }
        }
    }

    func shardFile(_ job: JobID, _ shard: ShardIndex) -> String { "\(shardFolder)/\(job)-\(shard)" }

    /// A committed shard result over `inlineShardBytes`, as a file (on the store writer's thread); its row follows
    /// in a later `write(_:filed:)`. Until then a restart runs that shard again.
    func writeShard(_ job: JobID, _ shard: ShardIndex, _ payload: Frame) throws {
        if let problem = payload.withUnsafeBytes({ writeWhole($0, to: shardFile(job, shard)) }) {
            throw JournalError(file: shardFile(job, shard), problem: "cannot be written (\(problem))")
        }
    }

    /// Ended jobs beyond the latest `keep` leave the journal (their results with them).
    public func trim(keep: Int) throws {
        try queue.write { db in
            try db.execute(sql: "DELETE FROM jobs WHERE state IS NOT NULL AND id NOT IN (SELECT id FROM jobs WHERE state IS NOT NULL ORDER BY id DESC LIMIT ?)",
                           arguments: [keep])
            try db.execute(sql: "DELETE FROM logs WHERE job NOT IN (SELECT id FROM jobs)")
        }
    }
}

/// The journal cannot be used: which file, and what to do.
public struct JournalError: Error, CustomStringConvertible {
    public let file: String
    public let problem: String
    public var description: String { "journal \(file): \(problem)" }
}

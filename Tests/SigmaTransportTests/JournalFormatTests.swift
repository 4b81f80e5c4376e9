import Foundation
import GRDB
import SigmaCoordinator
import SigmaCoordinatorCore
import SigmaModel
import Testing

/// The journal's file format across versions: a journal written by an earlier Sigma opens, keeps its jobs and gains
/// what the new format adds.
@Suite struct JournalFormatTests {
    /// A format-2 journal (before deployments were kept) with one ended job opens as format 4: the job is still
    /// there (its first plan's slots unknown: 0), deployments are written with their owners, read and removed, and a
    /// job accepted now keeps its plan's slots.
    @Test func aFormat2JournalOpensAndKeepsDeployments() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-format-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        do {
            // Format 2, as the previous release created it.
            let old = try DatabaseQueue(path: folder + "/journal.sqlite")
            try old.write { db in
                try db.execute(sql: """
                    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                    CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL,
                        options INTEGER NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL, owner_name TEXT NOT NULL,
                        state INTEGER, error TEXT, result BLOB, shards INTEGER, elapsed INTEGER, dropped INTEGER NOT NULL DEFAULT 0,
                        result_size INTEGER, result_stored INTEGER NOT NULL DEFAULT 0);
                    CREATE TABLE shards (job INTEGER NOT NULL, shard INTEGER NOT NULL, payload BLOB NOT NULL, in_file INTEGER NOT NULL DEFAULT 0,
                        PRIMARY KEY (job, shard));
                    CREATE TABLE logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER NOT NULL, at INTEGER NOT NULL, level INTEGER NOT NULL, text TEXT NOT NULL);
                    CREATE INDEX logs_job ON logs (job, seq);
                    INSERT INTO meta (key, value) VALUES ('next_job', 8);
                    INSERT INTO jobs (id, kind, name, spec, options, key, owner, owner_name, state, error, result, shards, elapsed)
                        VALUES (7, 'map-reduce', 'old', x'6b696e64', 0, '', '', '', 2, '', x'0102', 4, 99);
                    PRAGMA user_version = 2;
                    """)
            }
        }
        let journal = try Journal(folder: folder)
        let (next, jobs) = try journal.read(keep: 10)
        #expect(next == 8 && jobs.map(\.job.id) == [7] && jobs.first?.result == [1, 2] && jobs.first?.state == .completed)
        #expect(jobs.first?.job.shares == 0)
        #expect(try journal.deployments().isEmpty)
        let spec = JobSpec(kind: "serve", name: "digits", body: Array("kind: serve\nname: digits\n".utf8))
        try journal.write([.deployed(name: "digits", spec: spec, owner: "KEY"), .deployed(name: "other", spec: JobSpec(kind: "serve", name: "other", body: [1]), owner: "")])
        #expect(try journal.deployments().map(\.spec) == [spec, JobSpec(kind: "serve", name: "other", body: [1])])
        #expect(try journal.deployments().map(\.owner) == ["KEY", ""], "who made each deployment")
        try journal.write([.undeployed(name: "other")])
        #expect(try journal.deployments().map(\.spec) == [spec])
        try journal.write([.accepted(JournaledJob(id: 8, spec: JobSpec(kind: "map-reduce", name: "new", body: [1]), options: [], key: "",
                                                  owner: "", ownerName: "", shares: 6))])
        #expect(try journal.read(keep: 10).jobs.first { $0.job.id == 8 }?.job.shares == 6)
        let version = try DatabaseQueue(path: folder + "/journal.sqlite").read { try Int.fetchOne($0, sql: "PRAGMA user_version") }
        #expect(version == 4)
    }

    /// A result kept in a file and then dropped (past keep_result_bytes) reads back as dropped and not stored: a
    /// restart neither reports its file missing nor counts its bytes again.
    @Test func aDroppedStoredResultReadsBackAsDropped() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-dropped-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let journal = try Journal(folder: folder)
        try journal.write([.accepted(JournaledJob(id: 1, spec: JobSpec(kind: "map-reduce", name: "big", body: [1]), options: [], key: "",
                                                  owner: "", ownerName: "")),
                           .ended(job: 1, state: .completed, error: "", result: [], resultSize: 1 << 20, shards: 4, elapsed: 5)])
        #expect(try journal.read(keep: 10).jobs.first?.storedResult == 1 << 20)
        try journal.write([.resultDropped(job: 1)])
        let job = try #require(try journal.read(keep: 10).jobs.first)
        #expect(job.resultDropped && job.storedResult == nil)
    }
}

import Foundation
import SigmaModel
@testable import SigmaWorker
import Testing

/// The worker's cache of inputs shipped by the coordinator stays within its limit: least recently used entries
/// go first, entries of jobs running here never, partial downloads are not entries.
@Suite struct InputCacheTests {
    @Test func evictionsTakeTheOldestUntilTheRestFits() {
        let entries: [(name: String, bytes: UInt64, used: Double)] = [("a", 40, 3), ("b", 30, 1), ("c", 20, 2), ("d", 10, 4)]
        #expect(InputFetcher.evictions(entries, keep: [], limit: 100) == [])
        #expect(InputFetcher.evictions(entries, keep: [], limit: 70) == ["b"])
        #expect(InputFetcher.evictions(entries, keep: [], limit: 50) == ["b", "c"])
        #expect(InputFetcher.evictions(entries, keep: ["b"], limit: 50) == ["c", "a"])
        #expect(InputFetcher.evictions(entries, keep: ["a", "b", "c", "d"], limit: 0) == [])
        #expect(InputFetcher.evictions(entries, keep: [], limit: 0) == ["b", "c", "a", "d"])
    }

    @Test func pruneRemovesLeastRecentlyUsedEntriesFromDisk() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-cache-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Three entries of 1,000 bytes, used at t = 100, 300, 200; a partial download of 5,000 bytes.
        for (name, t) in [("old", 100), ("new", 300), ("mid", 200)] {
            try FileManager.default.createDirectory(atPath: dir + "/" + name, withIntermediateDirectories: true)
            try Data(count: 1000).write(to: URL(fileURLWithPath: dir + "/" + name + "/f.npy"))
            var times = [timeval(tv_sec: t, tv_usec: 0), timeval(tv_sec: t, tv_usec: 0)]
            #expect(utimes(dir + "/" + name, &times) == 0)
        }
        try FileManager.default.createDirectory(atPath: dir + "/x", withIntermediateDirectories: true)
        try Data(count: 5000).write(to: URL(fileURLWithPath: dir + "/x/.f.npy.1.2.part"))
        var times = [timeval(tv_sec: 50, tv_usec: 0), timeval(tv_sec: 50, tv_usec: 0)]
        #expect(utimes(dir + "/x", &times) == 0)
        // (x holds a partial file: it counts 5,000 bytes and is the oldest — removed first)
        InputFetcher(directory: dir + "/", limit: 2000, wake: {}).prune()
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == ["new", "mid"])
        InputFetcher(directory: dir, limit: 1500, wake: {}).prune()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["new"])
        InputFetcher(directory: dir, limit: 0, wake: {}).prune()   // no limit
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["new"])
    }

    /// A cached copy is used as is only while its stamp (inode, size, modification time) is the one recorded when its
    /// SHA-256 was checked; otherwise it is hashed again: kept when it still matches, removed when it does not.
    @Test func aCachedCopyChangedOnDiskIsNotUsed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-verified-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/data.csv"
        let bytes = Array("1,2,3\n4,5,6\n".utf8)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let sha = SHA256.hex({ var h = SHA256(); h.update(bytes); return h.finish() }())
        let size = UInt64(bytes.count)
        // Never checked: hashed now, matches, stamp recorded.
        #expect(InputFetcher.isVerified(path, size: size, sha256: sha))
        #expect(FileManager.default.fileExists(atPath: InputFetcher.stampPath(path)))
        // Touched only (same bytes, new time): hashed again, still good.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000)], ofItemAtPath: path)
        #expect(InputFetcher.isVerified(path, size: size, sha256: sha))
        #expect(try String(contentsOfFile: InputFetcher.stampPath(path), encoding: .utf8) == InputFetcher.stamp(path))
        // One byte changed, same size: not used, and removed so that it is fetched again.
        var bad = bytes
        bad[0] = UInt8(ascii: "9")
        try Data(bad).write(to: URL(fileURLWithPath: path))
        #expect(!InputFetcher.isVerified(path, size: size, sha256: sha))
        #expect(!FileManager.default.fileExists(atPath: path))
        // The wrong size never passes.
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(!InputFetcher.isVerified(path, size: size + 1, sha256: sha))
    }
}

import Foundation
@testable import SigmaCoordinator
import Testing

/// A coordinator without a journal keeps large results in `$TMPDIR/sigma-results-PID-XXXXXX`; one killed (SIGKILL
/// cannot clean up) left its folder behind — the next one removes the folders of this user's coordinators that no
/// longer run, and nothing else.
@Suite struct ResultStoreTests {
    @Test func foldersOfCoordinatorsThatNoLongerRunAreSwept() throws {
        let base = FileManager.default.temporaryDirectory.path + "/sigma-store-test-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: base) }
        // A process that has ended: its pid is free (until reused, which this test would only see as "live").
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        let dead = ended.processIdentifier
        let names = ["sigma-results-\(dead)-AbC123",      // a killed coordinator's: swept
                     "sigma-results-\(getpid())-XyZ789",  // a live one's (this process): kept
                     "sigma-results-AbC123",              // the old form, no pid: kept
                     "sigma-results-\(dead)-toolong7",    // not a temporary store's name: kept
                     "other-\(dead)-AbC123"]              // not ours: kept
        for n in names { try FileManager.default.createDirectory(atPath: base + "/" + n, withIntermediateDirectories: false) }
        try "x".write(toFile: base + "/" + names[0] + "/1.result", atomically: true, encoding: .utf8)
        // (a file with the store's name is not a folder: kept)
        try "x".write(toFile: base + "/sigma-results-\(dead)-file00", atomically: true, encoding: .utf8)
        ResultStore.sweepStale(in: base)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: base))
        #expect(left == Set(names.dropFirst()).union(["sigma-results-\(dead)-file00"]))
    }

    @Test func aTemporaryStoreIsNamedWithItsPidAndRemovedAtStop() throws {
        let store = try ResultStore(stateFolder: nil)
        #expect(store.temporary && URL(fileURLWithPath: store.folder).lastPathComponent.hasPrefix("sigma-results-\(getpid())-"))
        #expect(FileManager.default.fileExists(atPath: store.folder))
        store.removeIfTemporary()
        #expect(!FileManager.default.fileExists(atPath: store.folder))
    }
}

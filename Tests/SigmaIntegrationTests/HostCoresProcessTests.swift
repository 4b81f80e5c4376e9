import Foundation
import Testing

/// Workers started on one host share its cores (issue 16): the first takes every free core, a later one gets what is
/// left and says so — compute threads never exceed the cores, whatever the flags.
@Suite(.timeLimit(.minutes(3))) struct HostCoresProcessTests {
    @Test func aSecondWorkerOnAFullHostGetsOneThreadAndSaysWhy() async throws {
        let claims = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-claims-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: claims) }
        let env = ["SIGMA_CORE_CLAIMS": claims]   // (a folder of this test's own: other tests' workers do not count)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let cluster = try await ProcessCluster(workers: 0)
        defer { cluster.stop() }
        let first = try SigmaProcess(["worker", "--join", cluster.endpoint, "--name", "first", "--log-level", "warning"], environment: env)
        cluster.workers.withLock { $0.append(first) }
        cluster.adopt("first")
        try await cluster.waitForWorkers(1)
        let late = try SigmaProcess(["worker", "--join", cluster.endpoint, "--threads", "2", "--name", "late", "--log-level", "warning"], environment: env)
        cluster.workers.withLock { $0.append(late) }
        cluster.adopt("late")
        try await cluster.waitForWorkers(2)

        let st = try SigmaProcess(["status", "--coordinator", cluster.endpoint, "--json"])
        #expect(try await st.wait() == 0)
        let o = try JSONSerialization.jsonObject(with: Data(st.stdout.joined(separator: "\n").utf8)) as? [String: Any]
        let workers = try #require(o?["workers"] as? [[String: Any]])
        let slots = Dictionary(uniqueKeysWithValues: workers.compactMap { w in (w["name"] as? String).map { ($0, (w["slots"] as? Int) ?? -1) } })
        #expect(slots["first"] == cores, "the first worker should take every core: \(slots)")
        #expect(slots["late"] == 1, "the late worker should run one thread: \(slots)")
        let said = late.stderr.joined(separator: "\n")
        #expect(said.contains("all \(cores) cores of this host are held by other sigma workers"), "no warning: \(said.suffix(600))")
        #expect(!first.stderr.joined(separator: "\n").contains("cores of this host"), "the first worker warned")
    }
}

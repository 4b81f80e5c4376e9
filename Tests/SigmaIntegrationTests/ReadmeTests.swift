import Foundation
import Testing

/// The README's first steps run as written (issue 20): its "Running a real cluster" block, on this host — keys,
/// enrolment, a CURVE coordinator and worker, a job followed to its end, `sigma top`, the environment variables and
/// the job commands. Only what cannot be literal here is substituted: 127.0.0.1 and free ports for 10.0.0.5:7700
/// (and its dashboard port), this checkout for /srv/sigma, and `sigma top` given `--once` (no terminal here).
@Suite(.serialized, .timeLimit(.minutes(3))) struct ReadmeTests {
    @Test func theFirstStepsOfARealClusterRunAsWritten() async throws {
        let readme = try String(contentsOfFile: repoRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## Running a real cluster").dropFirst().first)
        let block = try #require(section.components(separatedBy: "```").dropFirst().first, "no code block under 'Running a real cluster'")
        let port = try freePort(), http = try freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-readme-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/examples", withDestinationPath: repoRoot + "/examples")
        var script = ["set -e", "cd '\(dir)'", "export PATH='\(URL(fileURLWithPath: try sigmaBinary()).deletingLastPathComponent().path)':\"$PATH\"",
                      // (the started processes by pid: `jobs -p` in a command substitution sees no jobs, and they outlived the test)
                      "pids=''", "trap 'kill $pids 2>/dev/null || true' EXIT"]
        var steps = 0
        for raw in block.split(separator: "\n").map(String.init) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            var command = line.replacingOccurrences(of: "tcp://10.0.0.5:7700", with: "tcp://127.0.0.1:\(port)")
                .replacingOccurrences(of: "--listen 10.0.0.5", with: "--listen 127.0.0.1:\(port) --http-port \(http)")
                .replacingOccurrences(of: "/srv/sigma", with: repoRoot)
            #expect(!command.contains("10.0.0.5"), "a README line this test cannot place: \(line)")
            steps += 1
            if command.hasPrefix("sigma top ") { command = command.replacingOccurrences(of: "sigma top ", with: "sigma top --once ") }
            if command.hasPrefix("sigma coordinator ") {
                script += ["\(command) > coordinator.log 2>&1 &", "pids=\"$pids $!\"",
                           "for i in $(seq 100); do grep -q listening coordinator.log && break; sleep 0.2; done",
                           "grep -q listening coordinator.log || { cat coordinator.log; exit 9; }"]
            } else if command.hasPrefix("sigma worker ") {
                script += ["\(command) > worker.log 2>&1 &", "pids=\"$pids $!\""]
            } else {
                script += ["echo '$ \(line.replacingOccurrences(of: "'", with: ""))'", command]
            }
        }
        #expect(steps >= 10, "the README block has \(steps) commands")
        let run = await runToolAsync("/bin/sh", ["-c", script.joined(separator: "\n")], timeout: 150)
        let log = { (name: String) in (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? "" }
        #expect(run.status == 0, "the README's steps stopped (exit \(run.status)):\n\(run.out.suffix(1500))\n\(run.err.suffix(1500))\ncoordinator: \(log("coordinator.log").suffix(600))\nworker: \(log("worker.log").suffix(600))")
        #expect(run.out.contains("completed") && run.out.contains("sum ="), "the followed job did not complete:\n\(run.out.suffix(800))")
        #expect(run.out.contains("sigma top") && run.out.contains("sum-of-squares"), "top or jobs showed nothing:\n\(run.out.suffix(800))")
        #expect(FileManager.default.fileExists(atPath: dir + "/out/result.json"), "sigma results 1 -o out/ wrote no result.json")
    }
}

import Foundation
import Testing

/// What a user sees from the command line itself (issue 20, points 3 and 7): a version, usage errors on the
/// documented exit code, results never scattered into the current folder, no internal codes in messages, and Ctrl-C
/// in `submit --follow` leaving the job running and saying so.
@Suite(.serialized) struct CommandLineTests {
    @Test func versionUsageErrorsAndMessages() async throws {
        let (vs, vout, _) = try await sigma(["--version"])
        #expect(vs == 0 && vout.hasPrefix("sigma ") && vout.contains("SGP/5"), "\(vout)")
        // Argument errors exit 2, as documented ("2 bad input (spec, config, flags)"), not ArgumentParser's 64.
        for args in [["jobs", "--no-such-flag"], ["job", "not-a-number"], ["submit"]] {
            let (s, _, e) = try await sigma(args)
            #expect(s == 2, "\(args): exit \(s): \(e)")
        }
        // An unknown command gets the nearest known one.
        let (us, _, ue) = try await sigma(["sbumit", "job.yaml"])
        #expect(us == 2 && ue.contains("unknown command 'sbumit'; did you mean 'submit'?"), "\(ue)")
        let cluster = try await ProcessCluster(workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        // `sigma top --json`: the figures behind the view, once.
        let (ts, tout, te) = try await sigma(["top", "--json", "--coordinator", cluster.endpoint])
        let top = try JSONSerialization.jsonObject(with: Data(tout.utf8)) as? [String: Any]
        #expect(ts == 0 && (top?["workers"] as? [Any])?.count == 1, "\(te) \(tout.prefix(200))")
        // No protocol codes in what a person reads.
        let (ms, _, me) = try await sigma(["job", "99999", "--coordinator", cluster.endpoint])
        #expect(ms == 2 && me.contains("no job 99999") && !me.contains("(code"), "\(me)")
    }

    /// A train job is told in steps, not in its first step's shards (issue 20, point 4: "accepted: 4 shards" then
    /// "completed: 2 shards", and an ETA of 491 s for a 1.1 s job): steps when accepted and when done, `sigma job` in
    /// steps (shards only with --shards), and an ETA measured from the first step, not from the job's start-up.
    @Test func trainJobsAreToldInSteps() async throws {
        let dir = try Scratch("cli-train")
        defer { dir.remove() }
        let cluster = try await ProcessCluster(workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 400))
        let started = Date()
        let (s, out, e) = try await sigma(["submit", spec, "--follow", "--coordinator", cluster.endpoint, "-o", dir.path + "/out"])
        let took = Date().timeIntervalSince(started)
        try #require(s == 0, "\(e)")
        let job = try #require(jobID(in: e), "\(e)")
        #expect(e.contains("job \(job) accepted: 400 steps of 64 rows"), "\(e)")
        #expect(out.contains("job \(job) completed in") && out.contains(": 400 steps (about ") && out.contains(" samples/s),"), "\(out)")
        let etas = e.split(separator: "\n").compactMap { line -> Double? in
            guard let r = line.range(of: "ETA ") else { return nil }
            return Double(line[r.upperBound...].prefix { $0.isNumber || $0 == "." })
        }
        #expect(etas.allSatisfy { $0 <= took * 3 + 2 }, "ETAs \(etas) for a job of \(took) s")
        let (js, jout, _) = try await sigma(["job", "\(job)", "--coordinator", cluster.endpoint])
        let progress = jout.split(separator: "\n").first { $0.contains("progress") } ?? ""
        // 1,797 digits less a fifth held out are 23 steps of 64 rows per epoch: step 400 is in the 18th and last.
        #expect(js == 0 && progress.contains("step 400/400, epoch 18/18") && !progress.contains("shards"), "\(jout)")
        #expect(e.contains("/400, epoch ") && e.contains("/18  loss"), "\(e)")
        let (_, sout, _) = try await sigma(["job", "\(job)", "--shards", "--coordinator", cluster.endpoint])
        #expect(sout.contains("(this step: "), "\(sout.prefix(400))")
    }

    @Test func resultsGoIntoAFolderOfTheirOwnAndCtrlCDetaches() async throws {
        let dir = try Scratch("cli")
        defer { dir.remove() }
        let cluster = try await ProcessCluster(workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        let small = try dir.write("small.yaml", "kind: map-reduce\nname: tiny sum\ninput: {generate: range, count: 100}\nreduce: sum\n")
        let (s, out, e) = try await sigma(["submit", small, "--coordinator", cluster.endpoint])
        try #require(s == 0, "\(e)")
        let job = try #require(jobID(in: out), "\(out)")
        try await Task.sleep(nanoseconds: 500_000_000)
        // `submit --follow -o DIR` writes a map-reduce result too, as result.json (and --local the same).
        for extra in [["--coordinator", cluster.endpoint], ["--local"]] {
            let (fs, _, fe) = try await sigma(["submit", small, "--follow", "-o", dir.path + "/followed\(extra.count)"] + extra)
            let written = try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path + "/followed\(extra.count)/result.json"))) as? [String: Any]
            #expect(fs == 0 && (written?["sum"] as? Double) == 4950, "\(extra): \(fe) \(String(describing: written))")
        }
        // `sigma results ID` without -o: a folder of the job's own, not the current folder.
        let results = try SigmaProcess(["results", "\(job)", "--coordinator", cluster.endpoint], directory: dir.path)
        #expect(try await results.wait() == 0, "\(results.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/sigma-results/tiny_sum-\(job)/result.json"), "\(results.stdout)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/result.json"))

        // A long job: `results` while it runs is not "job failed" (exit 2, saying it runs); Ctrl-C in --follow detaches.
        let long = try dir.write("long.yaml", "kind: map-reduce\nname: long\ninput: {generate: uniform, count: 3000000000, seed: 1}\nreduce: sum\nshards: 3000\n")
        let follower = try SigmaProcess(["submit", long, "--follow", "--coordinator", cluster.endpoint])
        defer { follower.kill(SIGTERM) }
        let longJob = try await RestartTests.acceptedJob(follower)
        let (rs, _, re) = try await sigma(["results", "\(longJob)", "--coordinator", cluster.endpoint])
        #expect(rs == 2 && re.contains("running") && !re.contains("(code"), "exit \(rs): \(re)")
        follower.kill(SIGINT)
        #expect(try await follower.wait() == 130)
        let said = follower.stderr.joined(separator: "\n")
        #expect(said.contains("detached; job \(longJob) keeps running") && said.contains("sigma cancel \(longJob) --coordinator \(cluster.endpoint)"), "\(said)")
        let (js, jout, _) = try await sigma(["job", "\(longJob)", "--coordinator", cluster.endpoint, "--json"])
        #expect(js == 0 && (jout.contains("\"running\"") || jout.contains("\"queued\"")), "the job goes on: \(jout)")
        _ = try await sigma(["cancel", "\(longJob)", "--coordinator", cluster.endpoint])
    }
}

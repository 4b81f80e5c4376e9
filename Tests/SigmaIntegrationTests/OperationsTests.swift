import Foundation
import SigmaEngine
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// The operator's side over real processes: the job CLI, `sigma top` in tmux, the web dashboard in headless
/// Chromium, Prometheus /metrics and Chrome-trace export.
@Suite(.serialized, .timeLimit(.minutes(10))) struct OperationsTests {
    static let longJob = """
        kind: map-reduce
        name: ops-long
        input: {generate: uniform, count: 9000M, seed: 5, low: -1, high: 1}
        map: square
        reduce: [sum, count]
        shards: 900
        policy: least-loaded
        """

    func run(_ args: [String], timeout: Double = 30) async throws -> (code: Int32, out: String, err: String) {
        let p = try SigmaProcess(args)
        let code = try await p.wait(timeout: timeout)
        let err = p.stderr.joined(separator: "\n")
        // (in the test's log: which command failed and why, should its output then not parse)
        if code != 0 { print("OperationsTests: sigma \(args.prefix(3).joined(separator: " ")) … exited \(code): \(err.suffix(400))") }
        return (code, p.stdout.joined(separator: "\n"), err)
    }

    /// A command's output that should have been JSON, and was not (an empty answer: the command failed; one CI run
    /// failed here with only "The given data was not valid JSON", naming neither the command nor what it printed).
    struct NotJSON: Error, CustomStringConvertible {
        let text: String
        var description: String { "not JSON (\(text.utf8.count) bytes): '\(text.prefix(400))'" }
    }

    func json(_ text: String) throws -> Any {
        do { return try JSONSerialization.jsonObject(with: Data(text.utf8)) } catch { throw NotJSON(text: text) }
    }

    @Test func jobCommandsTopDashboardMetricsAndTrace() async throws {
        let cluster = try await ProcessCluster(workers: 2)
        defer { cluster.stop() }
        let dashLine = try await cluster.coordinator.waitForLine("dashboard ")
        let base = String(dashLine.dropFirst("dashboard ".count)).trimmingCharacters(in: .whitespaces)
        try await cluster.waitForWorkers(2)
        let ep = ["--coordinator", cluster.endpoint]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-ops-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let spec = dir.appendingPathComponent("long.yaml").path
        try OperationsTests.longJob.write(toFile: spec, atomically: true, encoding: .utf8)

        // submit --id is idempotent: the same key answers with the same job.
        let s1 = try await run(["submit", spec, "--id", "ops-key", "--json"] + ep)
        let s2 = try await run(["submit", spec, "--id", "ops-key", "--json"] + ep)
        #expect(s1.code == 0 && s2.code == 0, "\(s1.err) \(s2.err)")
        let job = try #require((try json(s1.out) as? [String: Any])?["job"] as? Int)
        #expect((try json(s2.out) as? [String: Any])?["job"] as? Int == job)
        Snapshot.check("json/submit.json", try Snapshot.jsonShape(s1.out))

        // Wait until some shards are done so every view has something to show.
        var done = 0
        for _ in 0..<100 where done < 20 {
            let j = try await run(["jobs", "--json"] + ep)
            done = ((try json(j.out) as? [[String: Any]])?.first { $0["id"] as? Int == job }?["done"] as? Int) ?? 0
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        #expect(done >= 20)

        // sigma jobs / workers / job --shards, JSON and text.
        let jobs = try await run(["jobs", "--json"] + ep)
        Snapshot.check("json/jobs.json", try Snapshot.jsonShape(jobs.out))
        let statusJSON = try await run(["status", "--json"] + ep)
        Snapshot.check("json/status.json", try Snapshot.jsonShape(statusJSON.out))
        let listed = try #require((try json(jobs.out) as? [[String: Any]])?.first { $0["id"] as? Int == job })
        #expect(listed["client_id"] as? String == "ops-key")
        #expect(listed["name"] as? String == "ops-long")
        let workersOut = try await run(["workers", "--json"] + ep).out
        Snapshot.check("json/workers.json", try Snapshot.jsonShape(workersOut))
        let workers = try #require(try json(workersOut) as? [[String: Any]])
        #expect(workers.filter { $0["state"] as? String != "dead" }.count == 2)
        for key in ["cpu_percent", "rss_bytes", "in_flight", "rtt_us", "throughput_items_per_s", "bytes_in", "compression_ratio"] {
            #expect(workers.allSatisfy { $0[key] != nil }, "workers --json lacks \(key)")
        }
        #expect(workers.contains { ($0["rss_bytes"] as? Int ?? 0) > 1_000_000 }, "worker memory not reported")
        // Each worker's OpenBLAS kernel set, as this machine's OpenBLAS runs it, and how it was chosen.
        let kernels = BLASKernels.reportOnly()
        for w in workers where w["state"] as? String != "dead" {
            #expect((w["blas"] as? String)?.isEmpty == false && ["auto", "openblas", "env"].contains(w["blas_choice"] as? String ?? ""), "\(w)")
            #expect(w["blas_best"] as? String == (kernels.choice == .env ? kernels.best : w["blas"] as? String), "\(w)")
        }
        let workersText = try await run(["workers"] + ep).out
        #expect(workersText.contains("BLAS") && workersText.contains(workers[0]["blas"] as? String ?? "?"), "\(workersText)")
        let detailOut = try await run(["job", "\(job)", "--shards", "--json"] + ep).out
        Snapshot.check("json/job-shards.json", try Snapshot.jsonShape(detailOut))
        let detail = try #require(try json(detailOut) as? [String: Any])
        #expect(detail["policy"] as? String == "least-loaded", "the spec's policy: was not used")
        let attempts = try #require(detail["attempts"] as? [[String: Any]])
        #expect(attempts.count >= 20)
        let names = Set(workers.compactMap { $0["id"] as? String })
        for a in attempts.prefix(20) {
            #expect(names.contains(a["worker"] as? String ?? ""), "attempt on an unknown worker: \(a)")
            #expect((a["host"] as? String)?.isEmpty == false)
            #expect((a["started_s"] as? Double ?? -1) >= (a["queued_s"] as? Double ?? 0))
            if a["outcome"] as? String == "ok" { #expect((a["finished_s"] as? Double ?? -1) >= (a["started_s"] as? Double ?? 0)) }
        }
        let text = try await run(["job", "\(job)"] + ep)
        #expect(text.code == 0 && text.out.contains("ops-long") && text.out.contains("policy"))
        let logs = try await run(["logs", "\(job)"] + ep)
        #expect(logs.code == 0 && logs.out.contains("accepted"), "\(logs.out)")

        // sigma top in an 80×24 tmux pane: workers and the running job's progress are on screen; keys work.
        if let tmux = ["/usr/bin/tmux", "/bin/tmux"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            let session = "sigma-top-\(getpid())"
            let bin = try sigmaBinary()
            func tm(_ args: [String]) async -> String { await runToolAsync(tmux, args, timeout: 20).out }
            _ = await tm(["new-session", "-d", "-s", session, "-x", "80", "-y", "24", "\(bin) top --coordinator \(cluster.endpoint)"])
            defer { _ = runTool(tmux, ["kill-session", "-t", session], timeout: 10) }
            var screen = ""
            for _ in 0..<50 {
                try await Task.sleep(nanoseconds: 200_000_000)
                screen = await tm(["capture-pane", "-p", "-t", session])
                if screen.contains("ops-long") && names.allSatisfy({ screen.contains($0) }) { break }
            }
            #expect(screen.contains("ops-long"), "top shows no job:\n\(screen)")
            #expect(names.allSatisfy { screen.contains($0) }, "top shows no workers:\n\(screen)")
            #expect(screen.contains("%") && screen.contains("["), "top shows no progress bar:\n\(screen)")
            #expect(screen.split(separator: "\n").allSatisfy { $0.count <= 80 })
            // (polled, not a fixed sleep: on a loaded machine a redraw can take a while)
            _ = await tm(["send-keys", "-t", session, "s"])
            var sorted = false
            for _ in 0..<50 where !sorted {
                try await Task.sleep(nanoseconds: 100_000_000)
                sorted = await tm(["capture-pane", "-p", "-t", session]).contains("sort cpu")
            }
            #expect(sorted, "s did not sort by CPU")
            _ = await tm(["send-keys", "-t", session, "q"])
            var quit = false
            for _ in 0..<50 where !quit {
                try await Task.sleep(nanoseconds: 100_000_000)
                quit = await tm(["list-sessions"]).contains(session) == false
            }
            #expect(quit, "q did not quit sigma top")
        } else {
            Issue.record("tmux is not installed (make test installs it): sigma top was not driven")
        }

        // Prometheus /metrics parses as text exposition and carries the sigma_ series.
        let metrics = try await httpGet(base + "metrics")
        let problems = PrometheusText.validate(metrics)
        #expect(problems.isEmpty, "\(problems)")
        for name in ["sigma_workers", "sigma_shards", "sigma_bytes_received_total", "sigma_worker_rtt_seconds_bucket",
                     "sigma_shard_duration_seconds_bucket", "sigma_reduce_duration_seconds_count", "sigma_optimizer_duration_seconds_count",
                     "sigma_shards_completed_total"] {
            #expect(metrics.contains("\n" + name), "/metrics lacks \(name)")
        }
        #expect(metrics.contains("sigma_workers{state=\"busy\"}") || metrics.contains("sigma_workers{state=\"ready\"}"))
        // Per-worker series: one per live worker, labelled with its id and host.
        for id in names {
            for series in ["sigma_worker_in_flight", "sigma_worker_rss_bytes", "sigma_worker_cpu_percent_by_worker", "sigma_worker_shards_done"] {
                #expect(metrics.split(separator: "\n").contains { $0.hasPrefix(series + "{") && $0.contains("worker=\"\(id)\"") },
                        "/metrics lacks \(series) for worker \(id)")
            }
        }

        // The web dashboard in headless Chromium: a screenshot (kept) and the rendered page shows workers and the job.
        if let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            let artifacts = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("artifacts")
            try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
            let shot = artifacts.appendingPathComponent("dashboard.png").path
            try? FileManager.default.removeItem(atPath: shot)
            let flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--timeout=4000"]
            let dom = await dumpDOM(chromium, flags, base)
            _ = await runToolAsync(chromium, flags + ["--window-size=1280,800", "--screenshot=\(shot)", base], timeout: 90)
            #expect(dom.contains("ops-long"), "dashboard shows no job")
            #expect(names.allSatisfy { dom.contains(">\($0)<") }, "dashboard shows no workers")
            let size = (try? FileManager.default.attributesOfItem(atPath: shot)[.size] as? Int) ?? 0
            #expect(size > 10_000, "no screenshot at \(shot)")
            // The per-job page: its shard timeline has a track per worker (virtual time lets the page fetch first).
            let page = base + "job/\(job)"
            let jobDom = await dumpDOM(chromium, flags + ["--virtual-time-budget=4000"], page)
            #expect(jobDom.contains("ops-long"), "the job page shows no job")
            // (the timeline is a canvas; its accessible label names the tracks it drew)
            #expect(jobDom.contains("Shard timeline: 2 worker tracks"), "the job page's timeline does not have a track per worker")
            #expect(workers.allSatisfy { w in jobDom.contains("\(w["id"] as? String ?? "?")@") }, "the job page's timeline lacks a worker track")
            let jobShot = artifacts.appendingPathComponent("job.png").path
            _ = await runToolAsync(chromium, flags + ["--virtual-time-budget=4000", "--window-size=1280,900", "--screenshot=\(jobShot)", page], timeout: 90)
            #expect(((try? FileManager.default.attributesOfItem(atPath: jobShot)[.size] as? Int) ?? 0) > 10_000, "no screenshot at \(jobShot)")
            let jobPage = try await httpGet(base + "api/jobs/\(job)")
            #expect(((try json(jobPage) as? [String: Any])?["attempts"] as? [Any])?.isEmpty == false)
        } else {
            Issue.record("chromium is not installed (make test installs it): the web dashboard was not loaded")
        }

        // Chrome trace: valid structure, one named track per worker, one complete slice per attempt.
        let tracePath = dir.appendingPathComponent("trace.json").path
        let tr = try await run(["trace", "\(job)", "-o", tracePath] + ep)
        #expect(tr.code == 0, "\(tr.err)")
        let trace = try #require(try json(String(decoding: try Data(contentsOf: URL(fileURLWithPath: tracePath)), as: UTF8.self)) as? [String: Any])
        let events = try #require(trace["traceEvents"] as? [[String: Any]])
        let slices = events.filter { $0["ph"] as? String == "X" }
        let named = events.filter { $0["ph"] as? String == "M" && $0["name"] as? String == "thread_name" }
        let tracks = Set(named.compactMap { $0["tid"] as? Int })
        #expect(slices.count >= 20)
        // one track per compute slot a worker used ("ID@host slot N"), from both workers; slices on a track never overlap
        let trackWorkers = Set(named.compactMap { (($0["args"] as? [String: Any])?["name"] as? String)?.components(separatedBy: " slot ").first })
        #expect(trackWorkers.count == 2 && tracks.count >= 2, "\(named)")
        for e in slices {
            #expect(e["ts"] is Double && (e["dur"] as? Double ?? -1) >= 0 && e["pid"] is Int && e["name"] is String)
            #expect(tracks.contains(e["tid"] as? Int ?? -1), "slice on a track without a name: \(e)")
        }
        for (tid, group) in Dictionary(grouping: slices, by: { $0["tid"] as? Int ?? -1 }) {
            let spans = group.map { ($0["ts"] as? Double ?? 0, ($0["ts"] as? Double ?? 0) + ($0["dur"] as? Double ?? 0)) }.sorted { $0.0 < $1.0 }
            #expect(zip(spans, spans.dropFirst()).allSatisfy { $0.1 <= $1.0 + 1e-6 }, "slices overlap on track \(tid): \(zip(spans, spans.dropFirst()).filter { $0.1 > $1.0 + 1e-6 }.prefix(3))")
        }

        // cancel: the job ends cancelled; unknown ids are usage errors naming the job and the next command.
        // A follower attached through the idempotent key sees the cancel and exits 1 naming the job.
        let follower = try SigmaProcess(["submit", spec, "--id", "ops-key", "--follow"] + ep)
        for _ in 0..<150 where !follower.stderr.contains(where: { $0.hasPrefix("job \(job) accepted") }) {
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        #expect(follower.stderr.contains { $0.hasPrefix("job \(job) accepted") }, "the follower did not attach: \(follower.stderr.suffix(3))")
        let c = try await run(["cancel", "\(job)"] + ep)
        #expect(c.code == 0 && c.out.contains("cancelled"), "\(c.out) \(c.err)")
        let followed = try await follower.wait(timeout: 30)
        let followErr = follower.stderr.joined(separator: "\n")
        #expect(followed == 1 && followErr.contains("job \(job) cancelled"), "exit \(followed): \(followErr)")
        let again = try await run(["cancel", "\(job)", "--json"] + ep)
        #expect(again.code == 0)
        Snapshot.check("json/cancel.json", try Snapshot.jsonShape(again.out))
        let afterOut = try await run(["job", "\(job)", "--json"] + ep).out
        Snapshot.check("json/job.json", try Snapshot.jsonShape(afterOut))
        let after = try #require(try json(afterOut) as? [String: Any])
        #expect(after["state"] as? String == "cancelled")
        let missing = try await run(["cancel", "99999"] + ep)
        #expect(missing.code == 2 && missing.err.contains("no job 99999") && missing.err.contains("sigma jobs"), "\(missing.err)")
        #expect(try await run(["job", "99999"] + ep).code == 2)
        // A finished job: sigma results writes result.json; results/logs/trace --json have their committed shapes.
        let small = dir.appendingPathComponent("small.yaml").path
        try "kind: map-reduce\nname: ops-small\ninput: {generate: range, count: 1000}\nmap: square\nreduce: [sum, count]\nshards: 4\n"
            .write(toFile: small, atomically: true, encoding: .utf8)
        let finished = try await run(["submit", small, "--follow", "--json"] + ep)
        let smallJob = try #require((try json(finished.out) as? [String: Any])?["job"] as? Int, "\(finished.out) \(finished.err)")
        let resultsDir = dir.appendingPathComponent("results").path
        let res = try await run(["results", "\(smallJob)", "-o", resultsDir, "--json"] + ep)
        #expect(res.code == 0, "\(res.err)")
        Snapshot.check("json/results.json", try Snapshot.jsonShape(res.out))
        let written = try #require(try? json(String(contentsOfFile: resultsDir + "/result.json", encoding: .utf8)) as? [String: Any])
        #expect(written["sum"] as? Double == 332_833_500 && written["count"] as? Int == 1000, "\(written)")
        let logLines = try await run(["logs", "\(smallJob)", "--json"] + ep)
        #expect(logLines.code == 0 && logLines.out.split(separator: "\n").count >= 2, "\(logLines.out)")
        Snapshot.check("json/logs-line.json", try Snapshot.jsonShape(String(logLines.out.split(separator: "\n")[0])))
        let traced = try await run(["trace", "\(smallJob)", "-o", dir.appendingPathComponent("small.json").path, "--json"] + ep)
        #expect(traced.code == 0, "\(traced.err)")
        Snapshot.check("json/trace.json", try Snapshot.jsonShape(traced.out))
        #expect(try await run(["results", "99999"] + ep).code == 2)

        // An unreachable coordinator: exit 3 saying so.
        let away = try await run(["jobs", "--coordinator", "tcp://127.0.0.1:1", "--timeout", "0.5"])
        #expect(away.code == 3 && away.err.contains("sigma coordinator"), "\(away.err)")
    }

    /// Every command's --help has an example, and equals its committed snapshot (80 columns).
    /// `sigma demo` (what `make demo` runs), shortened: its embedded coordinator admits its own worker processes and
    /// client with the local token, trains, and the distributed map-reduce equals the single-process one.
    @Test func demoRunsOnItsEmbeddedCluster() async throws {
        let p = try SigmaProcess(["demo", "--values", "1M", "--shards", "8", "--steps", "20", "--log-level", "warning"])
        #expect(try await p.wait(timeout: 300) == 0, "\(p.stderr.suffix(5))")
        let out = p.stdout.joined(separator: "\n")
        #expect(out.contains("2 workers joined") && out.contains("✓ distributed result equals the single-process result"), "\(out.suffix(800))")
    }

    @Test func everyCommandHasHelpWithAnExample() async throws {
        let top = try SigmaProcess(["--help"], environment: ["COLUMNS": "80"])
        #expect(try await top.wait(timeout: 30) == 0)
        Snapshot.check("help/sigma.txt", top.stdout.joined(separator: "\n") + "\n")
        let commands = ["coordinator", "worker", "submit", "status", "jobs", "job", "logs", "cancel", "results", "workers",
                        "trace", "top", "demo", "up", "down", "keygen", "deploy", "undeploy", "deployments", "predict", "train", "embed", "simulate", "bench"]
        for cmd in commands {
            #expect(top.stdout.contains { $0.hasPrefix("  \(cmd) ") }, "sigma --help does not list \(cmd)")
            let p = try SigmaProcess([cmd, "--help"], environment: ["COLUMNS": "80"])
            #expect(try await p.wait(timeout: 30) == 0, "\(cmd) --help")
            let h = p.stdout.joined(separator: "\n") + "\n"
            #expect(h.contains("Example"), "sigma \(cmd) --help has no example")
            // Examples are never wrapped at 80 columns: each example line of a 400-column rendering is a whole line of
            // the 80-column one too — no comment cut mid-way (issue 20, point 7).
            let wide = try SigmaProcess([cmd, "--help"], environment: ["COLUMNS": "400"])
            #expect(try await wide.wait(timeout: 30) == 0)
            for line in wide.stdout where line.hasPrefix("  sigma ") || line.hasPrefix("  # ") {
                #expect(p.stdout.contains(line), "sigma \(cmd) --help wraps an example at 80 columns: '\(line)'")
            }
            if ["status", "jobs", "job", "cancel", "results", "workers", "trace"].contains(cmd) {
                #expect(h.contains("--json"), "sigma \(cmd) --help lacks --json")
            }
            Snapshot.check("help/\(cmd).txt", h)
        }
    }

    func httpGet(_ url: String) async throws -> String {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 30
        let (data, response) = try await URLSession.shared.data(for: request)
        let code = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard code == 200 else { throw SigmaTestError("GET \(url): HTTP \(code)") }
        return String(decoding: data, as: UTF8.self)
    }
}

/// A checker of the Prometheus text exposition format (0.0.4): HELP/TYPE lines, sample syntax, TYPE before
/// samples, histogram buckets cumulative with `+Inf` equal to `_count`.
enum PrometheusText {
    static func validate(_ text: String) -> [String] {
        var problems: [String] = []
        var types: [String: String] = [:]
        var buckets: [String: [(le: Double, v: Double)]] = [:]
        var counts: [String: Double] = [:]
        let namePattern = try! NSRegularExpression(pattern: #"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$"#)
        for line in text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) {
            if line.hasPrefix("# HELP ") { continue }
            if line.hasPrefix("# TYPE ") {
                let f = line.split(separator: " ")
                guard f.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(String(f[3])) else {
                    problems.append("bad TYPE line: \(line)"); continue
                }
                types[String(f[2])] = String(f[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            let r = NSRange(line.startIndex..., in: line)
            guard let m = namePattern.firstMatch(in: line, range: r), let nr = Range(m.range(at: 1), in: line) else {
                problems.append("bad sample line: \(line)"); continue
            }
            let name = String(line[nr])
            guard name.hasPrefix("sigma_") else { problems.append("not sigma_-prefixed: \(name)"); continue }
            let family = ["_bucket", "_sum", "_count"].reduce(name) { n, s in types[n] == nil && n.hasSuffix(s) ? String(n.dropLast(s.count)) : n }
            guard types[family] != nil else { problems.append("sample before its TYPE: \(line)"); continue }
            let value = Double(line.split(separator: " ").last!.replacingOccurrences(of: "+Inf", with: "inf")) ?? .nan
            if name.hasSuffix("_bucket"), let leR = line.range(of: #"le=""#) {
                let rest = line[leR.upperBound...]
                let le = rest.prefix { $0 != "\"" }
                buckets[family, default: []].append((le == "+Inf" ? .infinity : Double(le) ?? .nan, value))
            } else if name.hasSuffix("_count"), types[family] == "histogram" {
                counts[family] = value
            }
        }
        for (family, bs) in buckets {
            let sorted = bs.sorted { $0.le < $1.le }
            for i in 1..<max(1, sorted.count) where sorted[i].v < sorted[i - 1].v { problems.append("\(family): buckets not cumulative") }
            if sorted.last?.le != .infinity { problems.append("\(family): no +Inf bucket") }
            if let c = counts[family], sorted.last?.v != c { problems.append("\(family): +Inf bucket \(sorted.last?.v ?? -1) != count \(c)") }
        }
        if types.isEmpty { problems.append("no metrics at all") }
        return problems
    }
}

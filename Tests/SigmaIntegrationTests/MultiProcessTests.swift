import Foundation
import SigmaClient
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Synchronization
import Testing

/// 10M float64 values in a `.npy` file, and an independent single-process Float64 reference over them.
struct BigInput: Sendable {
    static let count = 10_000_000
    static let bins = (count: 20, low: -4.0, high: 8.0)
    let path: String
    let sum: Double, min: Double, max: Double, sumSquares: Double
    let histogram: [UInt64]

    static let shared: BigInput = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-it-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("values.npy").path
        // Values: a drifting sine plus noise, mean ≈ 2, some negative.
        var values = [Double](repeating: 0, count: count)
        var state: UInt64 = 12345
        for i in 0..<count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Double(state >> 11) * 0x1p-53
            values[i] = 2 + 3 * sin(Double(i) * 1e-4) + (u - 0.5)
        }
        try! NpyFile.write(path: path, float64: values)
        // Reference: Kahan summation, written independently of Sigma's kernel.
        func kahan(_ f: (Double) -> Double) -> Double {
            var s = 0.0, c = 0.0
            for v in values {
                let y = f(v) - c
                let t = s + y
                c = (t - s) - y
                s = t
            }
            return s
        }
        var hist = [UInt64](repeating: 0, count: bins.count)
        let width = (bins.high - bins.low) / Double(bins.count)
        for v in values where v >= bins.low && v <= bins.high {
            hist[Swift.min(bins.count - 1, Int((v - bins.low) / width))] += 1
        }
        return BigInput(path: path, sum: kahan { $0 }, min: values.min()!, max: values.max()!, sumSquares: kahan { $0 * $0 },
                        histogram: hist)
    }()

    func spec(map: String = "identity", shards: Int = 200) -> String {
        """
        kind: map-reduce
        name: it-every-reducer
        input: {npy: \(path)}
        map: \(map)
        reduce: [sum, mean, min, max, count, {histogram: {bins: \(BigInput.bins.count), low: \(BigInput.bins.low), high: \(BigInput.bins.high)}}]
        shards: \(shards)
        """
    }

    /// Checks a result against the reference: relative error ≤ 1e-12, exact where exactness is expected.
    func check(_ r: MapReduceResult, squared: Bool = false) {
        let sum = squared ? sumSquares : self.sum
        #expect(r.total.count == UInt64(BigInput.count))
        #expect(abs(r.total.total - sum) <= 1e-12 * abs(sum), "sum \(r.total.total) vs \(sum)")
        let mean = r.total.value(.mean)!
        #expect(abs(mean - sum / Double(BigInput.count)) <= 1e-12 * abs(sum / Double(BigInput.count)))
        if !squared {
            #expect(r.total.min == min)
            #expect(r.total.max == max)
            #expect(r.total.histogram == histogram)
        }
    }
}
extension ProcessHeavyTests {
    @Suite(.serialized, .timeLimit(.minutes(10))) struct MultiProcessTests {
        /// Coordinator + 3 workers as separate OS processes over TCP loopback; every reducer; via the CLI.
        @Test func everyReducerOverTenMillionValuesMatchesSingleProcess() async throws {
            let input = BigInput.shared
            let cluster = try await ProcessCluster(workers: 3)
            defer { cluster.stop() }
            let specPath = URL(fileURLWithPath: input.path).deletingLastPathComponent().appendingPathComponent("every.yaml").path
            try input.spec().write(toFile: specPath, atomically: true, encoding: .utf8)
            let submit = try SigmaProcess(["submit", specPath, "--follow", "--json", "--coordinator", cluster.endpoint])
            #expect(try await submit.wait(timeout: 120) == 0, "\(submit.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(submit.stdout.joined(separator: "\n").utf8)) as! [String: Any]
            #expect(json["state"] as? String == "completed")
            let res = json["result"] as! [String: Any]
            #expect(abs((res["sum"] as! Double) - input.sum) <= 1e-12 * abs(input.sum))
            #expect(res["min"] as! Double == input.min)
            #expect(res["max"] as! Double == input.max)
            #expect(res["count"] as! Int == BigInput.count)
            let hist = (res["histogram"] as! [String: Any])["counts"] as! [Int]
            #expect(hist.map(UInt64.init) == input.histogram)

            // And with f = square through the client library, checking the full-precision binary result.
            let client = try localClient(cluster.endpoint)
            defer { client.close() }
            let o = try await client.runToEnd(try JobSpec.parse(input.spec(map: "square")))
            #expect(o.state == .completed)
            input.check(try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }, squared: true)
            let status = try await client.status()
            #expect(status.workers.filter { $0.state != "dead" && $0.shardsDone > 0 }.count == 3)
        }

        /// One worker SIGKILLed mid-job: its shards run elsewhere (default heartbeat 1 s × 3) and the result is the same.
        /// (Hedging off: a backup copy would otherwise finish the dead worker's last shards before the heartbeat
        /// timeout; hedging is tested in SchedulerScenarioTests. Least-loaded so every worker holds shards: latency-aware
        /// may leave a slower-looking worker idle on this 2-core machine, and then the kill costs nothing to re-run.)
        @Test func workerKilledMidJobGivesTheSameResult() async throws {
            let cluster = try await ProcessCluster(workers: 3, coordinatorArgs: ["--no-hedging", "--policy", "least-loaded"])
            defer { cluster.stop() }
            let client = try localClient(cluster.endpoint)
            defer { client.close() }
            for _ in 0..<500 where try await client.status().workers.count < 3 { try await Task.sleep(nanoseconds: 20_000_000) }
            let victim = cluster.workers.withLock { $0[1] }
            var killedAt: UInt32? = nil
            var outcome: JobOutcome? = nil
            // (generated values, enough that the job is still running when the first progress comes: a 10⁷-value
            // file is over in a blink now)
            let spec = try JobSpec.parse("""
                kind: map-reduce
                name: it-killed
                input: {generate: uniform, count: 400M, seed: 11, low: -2, high: 5}
                map: square
                reduce: [sum, mean, min, max, count, {histogram: {bins: 20, low: 0, high: 25}}]
                shards: 400
                """)
            for try await e in client.run(spec) {
                switch e {
                case .progress(let p) where killedAt == nil && p.done >= 20:
                    victim.kill(SIGKILL)
                    killedAt = p.done
                case .finished(let o): outcome = o
                default: break
                }
            }
            let o = try #require(outcome)
            #expect(killedAt != nil && killedAt! < 400, "the worker was killed mid-job (at \(killedAt ?? 0)/400 shards)")
            #expect(o.state == .completed)
            #expect(o.reruns >= 1, "the killed worker's shards were re-run")
            // Every reducer is exact: the same bytes as one process computing the whole input.
            let local = try JobKinds.standard.runLocal(spec, roots: try DataRoots([FileManager.default.temporaryDirectory.path]))
            #expect(o.payload.withUnsafeBytes { Array($0) } == local, "the result differs from --local")
            let status = try await client.status()
            #expect(status.workers.contains { $0.state == "dead" })
        }

        /// With default settings (latency-aware, hedging on, 1 s heartbeats × 3), every shard a SIGKILLed worker held
        /// is running or done on another worker within 5 s of the kill, and the job completes with the right result.
        @Test func killedWorkersShardsRunElsewhereWithinFiveSecondsByDefault() async throws {
            let cluster = try await ProcessCluster(workers: 2)
            defer { cluster.stop() }
            try await cluster.waitForWorkers(2)
            let client = try localClient(cluster.endpoint)
            defer { client.close() }
            let text = "kind: map-reduce\ninput: {generate: uniform, count: 80M, seed: 9}\nmap: square\nreduce: [sum, count]\nshards: 400"
            let spec = try JobSpec.parse(text)
            let job = try await client.submit(spec).job
            // Wait until both workers hold shards; the victim is the one named w2.
            let status = try await client.status()
            let victim = try #require(status.workers.first { $0.name == cluster.workerName("w2") }?.id)
            var held: Set<UInt32> = []
            for _ in 0..<300 where held.isEmpty {
                let d = try await client.detail(job: job, attempts: true)
                held = Set(d.attempts.filter { $0.worker == victim && $0.outcome == .running }.map(\.shard))
                if held.isEmpty { try await Task.sleep(nanoseconds: 20_000_000) }
            }
            try #require(!held.isEmpty, "w2 never held a shard")
            let d0 = try await client.detail(job: job, attempts: true)
            held = Set(d0.attempts.filter { $0.worker == victim && $0.outcome == .running }.map(\.shard))
            cluster.workers.withLock { $0[1] }.kill(SIGKILL)
            let killed = Date()
            var moved: TimeInterval? = nil
            while moved == nil && Date().timeIntervalSince(killed) < 15 {
                let d = try await client.detail(job: job, attempts: true)
                // (a shard whose result the victim delivered in the instant before the kill needs no other worker)
                let elsewhere = held.allSatisfy { shard in
                    d.attempts.contains { $0.shard == shard && ($0.worker != victim ? ($0.outcome == .running || $0.outcome == .ok) : $0.outcome == .ok) }
                }
                if elsewhere { moved = Date().timeIntervalSince(killed) } else { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            let t = try #require(moved, "shards \(held.sorted()) of the killed worker did not run elsewhere within 15 s")
            print("the killed worker's \(held.count) shard(s) ran elsewhere \(String(format: "%.2f", t)) s after the kill")
            #expect(t <= 5, "the killed worker's shards ran elsewhere only after \(t) s")
            var outcome: JobOutcome? = nil
            for _ in 0..<3000 where outcome == nil {
                outcome = try? await client.fetch(job: job)
                if outcome == nil { try await Task.sleep(nanoseconds: 20_000_000) }
            }
            let o = try #require(outcome)
            #expect(o.state == .completed)
            guard let mr = MapReduceKind.spec(in: spec) else { return }
            let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
            #expect(r.total.count == 80_000_000)
            let reference = try MapReduceKernel.runLocal(mr)
            #expect(abs(r.total.total - reference.total) <= 1e-12 * reference.total)
        }

        /// `sigma worker --drain W` on a running job: the worker finishes what it runs, takes nothing new and exits by
        /// itself (status 0); none of its attempts is lost, and the job completes.
        @Test func drainCommandLetsARunningWorkerFinishAndLeave() async throws {
            let cluster = try await ProcessCluster(workers: 2)
            defer { cluster.stop() }
            try await cluster.waitForWorkers(2)
            let client = try localClient(cluster.endpoint)
            defer { client.close() }
            let spec = try JobSpec.parse("kind: map-reduce\ninput: {generate: uniform, count: 60M, seed: 4}\nmap: square\nreduce: [sum, count]\nshards: 300")
            let job = try await client.submit(spec).job
            let target = cluster.workers.withLock { $0[0] }
            for _ in 0..<300 {
                let d = try await client.detail(job: job, attempts: true)
                if d.job.done >= 5 { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            let id = try #require(try await client.status().workers.first { $0.name == cluster.workerName("w1") }?.id)
            let drain = try SigmaProcess(["worker", "--drain", id, "--join", cluster.endpoint])
            #expect(try await drain.wait(timeout: 30) == 0, "\(drain.stderr)")
            #expect(drain.stdout.joined().contains("worker \(id) (\(cluster.workerName("w1"))@"), "\(drain.stdout)")
            #expect(try await target.wait(timeout: 30) == 0, "the drained worker did not exit by itself")
            var outcome: JobOutcome? = nil
            for _ in 0..<3000 where outcome == nil {
                outcome = try? await client.fetch(job: job)
                if outcome == nil { try await Task.sleep(nanoseconds: 20_000_000) }
            }
            #expect(outcome?.state == .completed)
            let d = try await client.detail(job: job, attempts: true)
            let w1 = try #require(try await client.status().workers.first { $0.id == id })
            let ofW1 = d.attempts.filter { $0.worker == id }
            #expect(!ofW1.isEmpty && ofW1.allSatisfy { $0.outcome == .ok || $0.outcome == .declined || $0.outcome == .late },
                    "outcomes of the drained worker's attempts: \(Set(ofW1.map(\.outcome.description)))")
            #expect(w1.state == "dead", "a drained worker is shown as gone (\(w1.state))")
        }

        /// A worker started after submission receives shards at once and the job completes.
        @Test func workerStartedAfterSubmissionReceivesShards() async throws {
            let cluster = try await ProcessCluster(workers: 0)
            defer { cluster.stop() }
            let client = try localClient(cluster.endpoint)
            defer { client.close() }
            let spec = try JobSpec.parse("kind: map-reduce\ninput: {generate: uniform, count: 1M, seed: 3}\nmap: square\nreduce: [sum, count]\nshards: 50")
            let a = try await client.submit(spec)
            try await Task.sleep(nanoseconds: 300_000_000)
            var s = try await client.status()
            #expect(s.jobs.first { $0.id == a.job }?.done == 0)
            #expect(s.queuedShards == 50)
            try cluster.addWorker("late")
            var outcome: JobOutcome? = nil
            for _ in 0..<1500 {
                if let o = try? await client.fetch(job: a.job) { outcome = o; break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            let o = try #require(outcome)
            #expect(o.state == .completed)
            guard let mr = MapReduceKind.spec(in: spec) else { return }
            let reference = try MapReduceKernel.runLocal(mr)
            let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
            #expect(abs(r.total.total - reference.total) <= 1e-12 * reference.total)
            s = try await client.status()
            #expect(s.workers.first { $0.name == cluster.workerName("late") }?.shardsDone == 50)
            // `sigma status --json` shows the same: workers with cores, in-flight, RTT, last heartbeat; jobs with progress.
            let st = try SigmaProcess(["status", "--json", "--coordinator", cluster.endpoint])
            #expect(try await st.wait() == 0)
            let json = try JSONSerialization.jsonObject(with: Data(st.stdout.joined(separator: "\n").utf8)) as! [String: Any]
            let workers = json["workers"] as! [[String: Any]]
            let late = try #require(workers.first { $0["name"] as? String == cluster.workerName("late") })
            #expect(late["shards_done"] as? Int == 50)
            #expect(late["cores"] as? Int == ProcessInfo.processInfo.activeProcessorCount)
            #expect(late["in_flight"] as? Int == 0)
            #expect(late["rtt_us"] is Double && late["last_seen_ms"] is Double)
            // The scheduler's view: the policy, and a throughput estimate from the 49 shards after the first (warm-up).
            #expect(json["policy"] as? String == "latency-aware")
            #expect((late["throughput_items_per_s"] as? Double ?? 0) > 0, "\(late)")
            let jobs = json["jobs"] as! [[String: Any]]
            #expect(jobs.contains { $0["id"] as? Int == Int(a.job) && $0["done"] as? Int == 50 && $0["total"] as? Int == 50 })
            let table = try SigmaProcess(["status", "--coordinator", cluster.endpoint])
            #expect(try await table.wait() == 0)
            #expect(table.stdout.contains { $0.contains("late") && $0.contains("ready") })
            #expect(table.stdout.contains { $0.contains("policy latency-aware") })
            #expect(table.stdout.contains { $0.contains("RTT") && $0.contains("ITEMS/S") && $0.contains("IN-FLIGHT") })
        }

        /// CLI exit codes: 2 for a bad spec (naming the field), 3 when the coordinator cannot be reached.
        @Test func cliReportsUnreachableCoordinatorAndBadSpecs() async throws {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-cli-\(getpid())")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let bad = dir.appendingPathComponent("bad.yaml").path
            try "kind: map-reduce\ninput: {generate: uniform, count: 10}\nreduce: median".write(toFile: bad, atomically: true, encoding: .utf8)
            let p = try SigmaProcess(["submit", bad, "--coordinator", "tcp://127.0.0.1:1"])
            #expect(try await p.wait() == 2)
            #expect(p.stderr.joined().contains("reduce") && p.stderr.joined().contains("median"))
            let good = dir.appendingPathComponent("good.yaml").path
            try "kind: map-reduce\ninput: {generate: uniform, count: 10}\nreduce: sum".write(toFile: good, atomically: true, encoding: .utf8)
            let q = try SigmaProcess(["submit", good, "--coordinator", "tcp://127.0.0.1:1", "--timeout", "1"])
            #expect(try await q.wait() == 3)
            #expect(q.stderr.joined().contains("sigma coordinator"))
        }
    }
}

typealias MultiProcessTests = ProcessHeavyTests.MultiProcessTests

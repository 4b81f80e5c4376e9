import Foundation
import SigmaClient
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

extension ProcessHeavyTests {
    /// A coordinator killed with SIGKILL and started again on its port with its state folder resumes its jobs from the
    /// journal (docs/operations.md, "Restarts and the journal"): real processes, kills at seeded points.
    @Suite(.serialized) struct JournalTests {
        static func start(port: String, state: String, extra: [String] = []) async throws -> (SigmaProcess, String) {
            let c = try SigmaProcess(["coordinator", "--port", port, "--state-dir", state, "--no-http", "--log-level", "info"] + testDataRoots + extra)
            let line = try await c.waitForLine("listening ")
            return (c, String(line.dropFirst("listening ".count)))
        }

        /// The outcome of `job`, asked again and again (the coordinator may be restarting meanwhile).
        static func outcome(_ job: JobID, at endpoint: String, timeout: Double = 120) async throws -> JobOutcome {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if let client = try? localClient(endpoint) {
                    defer { client.close() }
                    if let o = try? await client.fetch(job: job, timeout: 2), o.state.isFinal { return o }
                }
                try await Task.sleep(nanoseconds: 200_000_000)
            }
            throw SigmaTestError("job \(job) did not end within \(timeout) s")
        }

        @Test func aKilledCoordinatorResumesItsJobFromTheJournal() async throws {
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-journal-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: state) }
            let spec = MapReduceSpec(name: "resume", input: .normal(count: 400_000_000, seed: 3, mean: 1, std: 2), map: .square,
                                     reduce: [.sum, .count, .min, .max, .histogram(bins: 16, low: 0, high: 16)], sharding: .count(600))

            var (coordinator, endpoint) = try await Self.start(port: "\(try freePort())", state: state)
            let port = String(endpoint.split(separator: ":").last!)
            func startWorker(_ name: String) throws -> SigmaProcess {
                try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", name, "--log-level", "warning"] + testDataRoots)
            }
            var worker = try startWorker("w1")
            defer {
                worker.kill(SIGTERM)
                coordinator.kill(SIGTERM)
            }
            let first = try localClient(endpoint)
            let accepted = try await first.submit(.mapReduce(spec))
            first.close()
            // A second job, followed by `sigma submit --follow` from before the first kill to its end.
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            let yaml = state + "/followed.yaml"
            try "kind: map-reduce\nname: followed\ninput: {generate: uniform, count: 20000000, seed: 5}\nreduce: [sum, count]\nshards: 80\n"
                .write(toFile: yaml, atomically: true, encoding: .utf8)
            let follower = try SigmaProcess(["submit", yaml, "--follow", "--coordinator", endpoint])
            defer { follower.kill(SIGTERM) }
            _ = try await follower.waitForStderr("accepted")
            // And the first job's log, followed across the restarts.
            let logFollower = try SigmaProcess(["logs", "\(accepted.job)", "-f", "--coordinator", endpoint])
            defer { logFollower.kill(SIGTERM) }

            // Kills at seeded points of the run (the second a SIGTERM: a graceful stop, which also leaves the job to
            // resume; after the first the worker is killed too and another joins); each restart resumes from the shards
            // committed so far.
            var rng = SeededRandom(seed: 7)
            var resumed: [String] = []
            for i in 0..<10 {
                try await Task.sleep(nanoseconds: UInt64.random(in: 200_000_000...500_000_000, using: &rng))
                coordinator.kill(i == 1 ? SIGTERM : SIGKILL)
                let status = try await coordinator.wait()
                if i == 1 { #expect(status == 0, "a SIGTERM'd coordinator exits cleanly") }
                (coordinator, _) = try await Self.start(port: port, state: state)
                if i == 0 {
                    // The worker dies too, and another takes its place.
                    worker.kill(SIGKILL)
                    _ = try await worker.wait()
                    worker = try startWorker("w2")
                }
                resumed += coordinator.stderr.filter { $0.contains("resumed after a restart") || $0.contains("to resume") }
            }
            // The reference: the same shards, combined in shard order, in this process.
            let parts = try spec.sharding.ranges(rows: 400_000_000).map { try MapReduceKernel.run(spec, start: $0.start, count: $0.count) }
            let reference = MapReduceResult.reduce(spec, partials: parts)
            let o = try await Self.outcome(accepted.job, at: endpoint)
            #expect(o.state == .completed, "\(o.error)")
            let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
            #expect(r == reference, "bitwise the fault-free result: no shard lost, none counted twice")
            #expect(resumed.contains { $0.contains("job \(accepted.job) resumed after a restart") }, "\(resumed)")

            // Ids never repeat; the ended job and its result answer after one more restart.
            let client = try localClient(endpoint)
            let next = try await client.submit(.mapReduce(MapReduceSpec(name: "next", input: .range(count: 10, start: 0, step: 1), reduce: [.sum])))
            client.close()
            #expect(next.job > accepted.job)
            _ = try await Self.outcome(next.job, at: endpoint)
            coordinator.kill(SIGKILL)
            _ = try await coordinator.wait()
            (coordinator, _) = try await Self.start(port: port, state: state)
            let again = try await Self.outcome(accepted.job, at: endpoint)
            #expect(again.payload == o.payload && again.state == .completed)
            let results = try SigmaProcess(["results", "\(accepted.job)", "--coordinator", endpoint, "--json", "-o", state + "/fetched"])
            #expect(try await results.wait() == 0, "\(results.stderr)")
            // Its log, from before the restarts, and `sigma jobs` lists it with its shards.
            let logs = try SigmaProcess(["logs", "\(accepted.job)", "--coordinator", endpoint])
            #expect(try await logs.wait() == 0)
            #expect(logs.stdout.contains { $0.contains("accepted: 400000000 rows in 600 shards") } && logs.stdout.contains { $0.contains("resumed after a restart") },
                    "\(logs.stdout.prefix(5))")
            let jobs = try SigmaProcess(["jobs", "--coordinator", endpoint, "--json"])
            #expect(try await jobs.wait() == 0)
            let listed = try JSONSerialization.jsonObject(with: Data(jobs.stdout.joined(separator: "\n").utf8)) as? [[String: Any]]
            #expect(listed?.contains { ($0["id"] as? Int) == Int(accepted.job) && ($0["total"] as? Int) == 600 && ($0["state"] as? String) == "completed" } == true,
                    "\(jobs.stdout)")

            // The log follower saw the restarts and the job's end.
            #expect(try await logFollower.wait(timeout: 60) == 0, "\(logFollower.stderr.suffix(3))")
            #expect(logFollower.stdout.contains { $0.contains("completed") } && logFollower.stdout.contains { $0.contains("resumed after a restart") },
                    "\(logFollower.stdout.suffix(5))")

            // The follower, started before the first kill, printed the second job's result.
            #expect(try await follower.wait(timeout: 120) == 0, "\(follower.stderr.suffix(5))")
            #expect(follower.stdout.contains { $0.contains("completed") } && follower.stdout.contains { $0.contains("count = 20000000") },
                    "\(follower.stdout)")
        }

        /// A deployment outlives a killed coordinator: started again with its state folder, it deploys what the journal
        /// holds, the worker (registering again by itself) loads it, and it answers as before, bitwise; an undeployed
        /// one stays gone after the next restart.
        @Test func aKilledCoordinatorServesItsDeploymentsAgain() async throws {
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-journal-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: state) }
            var (coordinator, endpoint) = try await Self.start(port: "\(try freePort())", state: state)
            let port = String(endpoint.split(separator: ":").last!)
            let worker = try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", "w1", "--log-level", "warning"] + testDataRoots)
            defer {
                worker.kill(SIGTERM)
                coordinator.kill(SIGTERM)
            }
            let inputs = repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp/inputs.npy"
            /// `sigma predict digits` over the fixture's rows, asked until the deployment answers (it loads first): the
            /// outputs' bits.
            func predict() async throws -> [[UInt32]] {
                let deadline = Date().addingTimeInterval(60)
                while true {
                    let (s, out, err) = try await sigma(["predict", "digits", "--input", inputs, "--json", "--coordinator", endpoint])
                    if s == 0 {
                        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
                        return ((json?["outputs"] as? [[NSNumber]]) ?? []).map { $0.map(\.floatValue.bitPattern) }
                    }
                    guard Date() < deadline else { throw SigmaTestError("digits did not answer within 60 s: \(err.suffix(300))") }
                    try await Task.sleep(nanoseconds: 200_000_000)
                }
            }
            let (ds, _, de) = try await sigma(["deploy", repoRoot + "/examples/serve-digits.yaml", "--coordinator", endpoint])
            try #require(ds == 0, "\(de)")
            let before = try await predict()
            #expect(before.count == 360 && before.allSatisfy { $0.count == 10 }, "\(before.count) rows")

            coordinator.kill(SIGKILL)
            _ = try await coordinator.wait()
            (coordinator, _) = try await Self.start(port: port, state: state)
            let after = try await predict()
            #expect(after == before, "the restored deployment answers the same bits")
            #expect(coordinator.stderr.contains { $0.contains("1 deployment(s) deployed again") }, "\(coordinator.stderr.suffix(5))")

            let (us, _, ue) = try await sigma(["undeploy", "digits", "--coordinator", endpoint])
            #expect(us == 0, "\(ue)")
            coordinator.kill(SIGKILL)
            _ = try await coordinator.wait()
            (coordinator, _) = try await Self.start(port: port, state: state)
            let (ls, lout, _) = try await sigma(["deployments", "--json", "--coordinator", endpoint])
            let listed = try JSONSerialization.jsonObject(with: Data(lout.utf8)) as? [[String: Any]]
            #expect(ls == 0 && listed?.isEmpty == true, "undeployed stays gone: \(lout)")
        }

        /// A journal that cannot be used stops the coordinator with an error naming the file — never a fresh start.
        @Test func aBrokenJournalIsRefusedNamingTheFile() async throws {
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-journal-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: state) }
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: state + "/journal.sqlite"))
            let c = try SigmaProcess(["coordinator", "--port", "0", "--state-dir", state, "--no-http"] + testDataRoots)
            #expect(try await c.wait() == 2)
            let err = c.stderr.joined(separator: "\n")
            #expect(err.contains(state + "/journal.sqlite") && err.contains("move it aside"), "\(err)")

            // Two coordinators on one state folder: the second is refused.
            try FileManager.default.removeItem(atPath: state + "/journal.sqlite")
            let (one, _) = try await Self.start(port: "0", state: state)
            defer { one.kill(SIGTERM) }
            let two = try SigmaProcess(["coordinator", "--port", "0", "--state-dir", state, "--no-http"] + testDataRoots)
            #expect(try await two.wait() == 2)
            #expect(two.stderr.joined().contains("in use by another coordinator"), "\(two.stderr)")
        }

        /// A job submitted while no worker is connected says so, and runs once one joins.
        @Test func aJobWaitingForAWorkerSaysSo() async throws {
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-journal-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: state) }
            let (coordinator, endpoint) = try await Self.start(port: "0", state: state)
            defer { coordinator.kill(SIGTERM) }
            let yaml = state + "/small.yaml"
            try "kind: map-reduce\ninput: {generate: range, count: 100}\nreduce: sum\nshards: 4\n".write(toFile: yaml, atomically: true, encoding: .utf8)
            let submit = try SigmaProcess(["submit", yaml, "--follow", "--coordinator", endpoint])
            defer { submit.kill(SIGTERM) }
            let line = try await submit.waitForStderr("no worker")
            #expect(line.contains("sigma worker --coordinator"))
            // `sigma job` says so too.
            let job = try SigmaProcess(["job", "1", "--coordinator", endpoint])
            #expect(try await job.wait() == 0)
            #expect(job.stdout.contains { $0.contains("waiting: no worker is connected") }, "\(job.stdout)")
            let worker = try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--log-level", "warning"] + testDataRoots)
            defer { worker.kill(SIGTERM) }
            #expect(try await submit.wait(timeout: 60) == 0, "\(submit.stderr.suffix(3))")
            #expect(submit.stdout.contains { $0.contains("sum = 4950") }, "\(submit.stdout)")
        }

        /// A train job whose coordinator is killed continues, after the restart, from its latest checkpoint: its final
        /// model is the same bits as an uninterrupted run's.
        @Test func aKilledCoordinatorResumesATrainJobFromItsCheckpoint() async throws {
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-journal-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: state) }
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            let ckpt = state + "/ckpt"
            let spec = try JobSpec.parse(digitsTrainSpec(steps: 600, extra: "checkpoint_every: 20\ncheckpoint_dir: \(ckpt)"))
            var (coordinator, endpoint) = try await Self.start(port: "\(try freePort())", state: state)
            let port = String(endpoint.split(separator: ":").last!)
            let worker = try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--log-level", "warning"] + testDataRoots)
            defer {
                worker.kill(SIGTERM)
                coordinator.kill(SIGTERM)
            }
            let client = try localClient(endpoint)
            let accepted = try await client.submit(spec)
            client.close()
            // (watched, and the coordinator killed, from a thread of its own: under the whole suite's load the
            // cooperative pool's wake-ups came so late that the 600-step job had finished before a poll saw step 40)
            let victim = coordinator
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                Thread.detachNewThread {
                    for _ in 0..<6000 where !FileManager.default.fileExists(atPath: ckpt + "/step-40.safetensors") { usleep(1000) }
                    victim.kill(SIGKILL)
                    done.resume()
                }
            }
            _ = try await coordinator.wait()
            let written = try FileManager.default.contentsOfDirectory(atPath: ckpt).filter { $0.hasPrefix("step-") }.count
            (coordinator, _) = try await Self.start(port: port, state: state)
            let o = try await Self.outcome(accepted.job, at: endpoint)
            #expect(o.state == .completed, "\(o.error)")
            #expect(written >= 2 && written < 30, "killed mid-run: \(written) checkpoints of 30 written")
            let files = try o.payload.withUnsafeBytes { try ResultBundle.decode($0) }
            let local = try JobKinds.standard.runLocal(try JobSpec.parse(digitsTrainSpec(steps: 600)), roots: try DataRoots([repoRoot]))
                .withUnsafeBytes { try ResultBundle.decode($0) }
            let model = files.first { $0.name == "model.safetensors" }?.data
            #expect(model != nil && model == local.first { $0.name == "model.safetensors" }?.data, "the same final parameters as an uninterrupted run")
        }
    }
}

typealias JournalTests = ProcessHeavyTests.JournalTests

import Foundation
import SigmaClient
import SigmaEngine
import SigmaModel
import Testing

/// A journaled coordinator on a fixed port, with its workers, killed and started again at seeded points.
struct RestartingCluster {
    var coordinator: SigmaProcess
    let endpoint: String
    let port: String
    let state: String
    var workers: [SigmaProcess] = []
    var started = 0
    /// Coordinators killed so far.
    var past: [SigmaProcess] = []
    /// More arguments for `sigma coordinator`.
    let extra: [String]

    init(state: String, workers: Int, extra: [String] = []) async throws {
        self.state = state
        self.extra = extra
        (coordinator, endpoint) = try await JournalTests.start(port: "\(try freePort())", state: state, extra: extra)
        port = String(endpoint.split(separator: ":").last!)
        for _ in 0..<workers { try startWorker() }
    }

    mutating func startWorker() throws {
        started += 1
        workers.append(try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--name", "w\(started)", "--log-level", "warning"] + testDataRoots))
    }

    /// SIGKILLs the coordinator `times` times, `pause` ms apart (seeded), starting it again on its port and state folder
    /// each time; after kill `killWorkersAt` every worker is killed too and as many new ones start.
    mutating func killRepeatedly(times: Int = 10, seed: UInt64, pause: ClosedRange<UInt64>, killWorkersAt: Int = 2) async throws {
        var rng = SeededRandom(seed: seed)
        for i in 0..<times {
            try await Task.sleep(nanoseconds: UInt64.random(in: pause, using: &rng) * 1_000_000)
            coordinator.kill(SIGKILL)
            _ = try await coordinator.wait()
            past.append(coordinator)
            (coordinator, _) = try await JournalTests.start(port: port, state: state, extra: extra)
            if i == killWorkersAt {
                let n = workers.count
                for w in workers { w.kill(SIGKILL); _ = try await w.wait() }
                workers = []
                for _ in 0..<n { try startWorker() }
            }
        }
    }

    /// The "resumed after a restart" lines every coordinator so far logged (read once their jobs have ended: a
    /// coordinator logs them as it starts, maybe after it printed its endpoint).
    var resumed: [String] { (past + [coordinator]).flatMap { $0.stderr.filter { $0.contains("resumed after a restart") } } }

    func stop() {
        for w in workers { w.kill(SIGTERM) }
        coordinator.kill(SIGTERM)
    }
}
extension ProcessHeavyTests {
    /// SIGKILL of the coordinator at ten seeded points of a train and an embed job (and of their workers once), each
    /// followed by a restart: the job completes with the fault-free result, bit for bit, and the `sigma submit --follow`
    /// started before the first kill writes it (docs/operations.md, "Restarts and the journal").
    @Suite(.serialized) struct RestartTests {
        /// The job id a `sigma submit` printed ("job N accepted").
        static func acceptedJob(_ p: SigmaProcess) async throws -> Int {
            let line = try await p.waitForStderr("accepted")
            return try #require(jobID(in: line), "\(line)")
        }

        @Test func aTrainJobSurvivesTenCoordinatorKillsBitwise() async throws {
            let dir = try Scratch("restart-train")
            defer { dir.remove() }
            let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 8000, extra: "checkpoint_every: 100\ncheckpoint_dir: \(dir.path)/ckpt"))
            let (ls, _, le) = try await sigma(["submit", try dir.write("local.yaml", digitsTrainSpec(steps: 8000)), "--local", "-o", dir.path + "/local"])
            try #require(ls == 0, "\(le)")

            var cluster = try await RestartingCluster(state: dir.path + "/state", workers: 1)
            defer { cluster.stop() }
            let follower = try SigmaProcess(["submit", spec, "--follow", "-o", dir.path + "/followed", "--coordinator", cluster.endpoint])
            defer { follower.kill(SIGTERM) }
            let job = try await Self.acceptedJob(follower)
            try await cluster.killRepeatedly(seed: 11, pause: 400...900)
            #expect(try await follower.wait(timeout: 300) == 0, "\(follower.stderr.suffix(5))")
            let resumed = cluster.resumed
            #expect(follower.stdout.contains { $0.contains("completed") }, "\(follower.stdout.suffix(5))")
            // (every kill lands while the job runs: it resumes after each of them)
            #expect(resumed.filter { $0.contains("job \(job) resumed after a restart") }.count == 10, "\(resumed)")
            let model = fileBytes(dir.path + "/followed/model.safetensors")
            #expect(model != nil && model == fileBytes(dir.path + "/local/model.safetensors"), "the same final parameters as an uninterrupted run")
            #expect(fileBytes(dir.path + "/followed/history.json") == fileBytes(dir.path + "/local/history.json"))
        }

        @Test func anEmbedJobSurvivesTenCoordinatorKillsBitwise() async throws {
            let dir = try Scratch("restart-embed")
            defer { dir.remove() }
            let (model, text) = try LargeResultTests.tinyBert(in: dir.path, lines: 200_000)
            let spec = try dir.write("embed.yaml", "kind: embed\nmodel: \(model)\ninput: \(text)\nbatch_size: 64\n")
            let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"], timeout: 600)
            try #require(ls == 0, "\(le)")

            var cluster = try await RestartingCluster(state: dir.path + "/state", workers: 2)
            defer { cluster.stop() }
            let follower = try SigmaProcess(["submit", spec, "--follow", "-o", dir.path + "/followed", "--coordinator", cluster.endpoint])
            defer { follower.kill(SIGTERM) }
            let job = try await Self.acceptedJob(follower)
            try await cluster.killRepeatedly(seed: 12, pause: 300...1200)
            #expect(try await follower.wait(timeout: 300) == 0, "\(follower.stderr.suffix(5))")
            let resumed = cluster.resumed
            // (every kill lands while the job runs: it resumes after each of them)
            #expect(resumed.filter { $0.contains("job \(job) resumed after a restart") }.count == 10, "\(resumed)")
            let got = fileBytes(dir.path + "/followed/embeddings.npy")
            #expect(got != nil && got == fileBytes(dir.path + "/local/embeddings.npy"), "the same embeddings as the fault-free local run")
        }

        /// A train job that asks for no checkpoints gets them from a journaled coordinator (every
        /// `coordinator.checkpoint_seconds`, here 0.2 s, in its state folder): killed, it resumes from the latest, not
        /// from step 0, to the uninterrupted run's bits; the checkpoints go when the job ends.
        @Test func aJournaledCoordinatorCheckpointsTrainJobsByDefault() async throws {
            let dir = try Scratch("restart-default-ckpt")
            defer { dir.remove() }
            let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 2000))
            let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/local"])
            try #require(ls == 0, "\(le)")
            let config = try dir.write("cluster.yaml", "coordinator:\n  checkpoint_seconds: 0.2\n")
            var cluster = try await RestartingCluster(state: dir.path + "/state", workers: 1, extra: ["--config", config])
            defer { cluster.stop() }
            let follower = try SigmaProcess(["submit", spec, "--follow", "-o", dir.path + "/followed", "--coordinator", cluster.endpoint])
            defer { follower.kill(SIGTERM) }
            let job = try await Self.acceptedJob(follower)
            let root = dir.path + "/state/checkpoints"
            func checkpoints() -> [String] {
                ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).flatMap { folder in
                    ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + folder)) ?? []).filter { $0.hasPrefix("step-") }
                }
            }
            for _ in 0..<2000 where checkpoints().count < 3 { try await Task.sleep(nanoseconds: 5_000_000) }
            let written = checkpoints().compactMap { Int($0.dropFirst("step-".count).dropLast(".safetensors".count)) }
            #expect(written.count >= 3, "a checkpoint every 0.2 s of training: \(written)")
            try await cluster.killRepeatedly(times: 1, seed: 13, pause: 0...1, killWorkersAt: -1)
            #expect(try await follower.wait(timeout: 120) == 0, "\(follower.stderr.suffix(5))")
            let resumed = cluster.resumed
            let line = resumed.first { $0.contains("job \(job) resumed after a restart: at step ") } ?? ""
            let step = line.split(separator: " ").last { Int($0) != nil }.flatMap { Int($0) } ?? 0
            #expect(line.contains("of 2000") && step >= (written.max() ?? 1), "resumed from the latest checkpoint, not from step 0: \(resumed), \(written)")
            #expect(fileBytes(dir.path + "/followed/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"), "the uninterrupted run's bits")
            #expect(fileBytes(dir.path + "/followed/history.json") == fileBytes(dir.path + "/local/history.json"))
            #expect(checkpoints().isEmpty && ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).isEmpty,
                    "the job's checkpoints went with it: \(checkpoints())")
        }

        /// `sigma top` says when its coordinator is unreachable (and how old its figures are), keeps trying, and shows
        /// the restarted coordinator's figures again by itself.
        @Test func sigmaTopFollowsTheCoordinatorAcrossARestart() async throws {
            let dir = try Scratch("restart-top")
            defer { dir.remove() }
            var cluster = try await RestartingCluster(state: dir.path + "/state", workers: 0)
            defer { cluster.stop() }
            let top = try SigmaProcess(["top", "--interval", "0.2", "--coordinator", cluster.endpoint])
            defer { top.kill(SIGTERM) }
            // (each frame starts at the top left: ESC [H; a frame with a problem starts with a "!" line)
            func wait(_ what: String, after: Int, _ match: (String) -> Bool) async throws -> Int {
                for _ in 0..<1500 {
                    let lines = top.stdout
                    if let i = lines.indices.first(where: { $0 >= after && match(lines[$0]) }) { return i }
                    try await Task.sleep(nanoseconds: 20_000_000)
                }
                throw SigmaTestError("sigma top never showed \(what): \(top.stdout.suffix(4))")
            }
            let first = try await wait("a frame", after: 0) { $0.contains("\u{1B}[Hsigma top  up") }
            cluster.coordinator.kill(SIGKILL)
            _ = try await cluster.coordinator.wait()
            let lost = try await wait("that the coordinator is unreachable", after: first) { $0.contains("unreachable for") && $0.contains("retrying") }
            #expect(top.stdout[lost].contains("s old)") && top.stdout[lost].contains(cluster.endpoint), "\(top.stdout[lost])")
            (cluster.coordinator, _) = try await JournalTests.start(port: cluster.port, state: cluster.state)
            _ = try await wait("the restarted coordinator's figures", after: lost) { $0.contains("\u{1B}[Hsigma top  up") }
        }

        /// A train job resubmitted with `--resume` after a coordinator restart (its first run's coordinator killed) runs
        /// from that checkpoint to the same final parameters as an uninterrupted run; its id is a new one.
        @Test func aTrainJobResubmittedWithResumeAfterARestartIsBitwise() async throws {
            let dir = try Scratch("restart-resume")
            defer { dir.remove() }
            let ckpt = dir.path + "/ckpt"
            let spec = try dir.write("train.yaml", digitsTrainSpec(steps: 600, extra: "checkpoint_every: 20\ncheckpoint_dir: \(ckpt)"))
            let (ls, _, le) = try await sigma(["submit", try dir.write("local.yaml", digitsTrainSpec(steps: 600)), "--local", "-o", dir.path + "/local"])
            try #require(ls == 0, "\(le)")

            // A coordinator without its state folder afterwards: the first run is lost with it.
            var cluster = try await RestartingCluster(state: dir.path + "/state-1", workers: 1)
            let first = try localClient(cluster.endpoint)
            let a = try await first.submit(try JobSpec.parse(String(contentsOfFile: spec, encoding: .utf8)))
            first.close()
            for _ in 0..<1000 where !FileManager.default.fileExists(atPath: ckpt + "/step-60.safetensors") { try await Task.sleep(nanoseconds: 10_000_000) }
            cluster.coordinator.kill(SIGKILL)
            _ = try await cluster.coordinator.wait()
            (cluster.coordinator, _) = try await JournalTests.start(port: cluster.port, state: dir.path + "/state-1")
            defer { cluster.stop() }
            // The same coordinator resumed the first job; the user resubmits another run from the step-60 checkpoint.
            let resumeFrom = dir.path + "/step-60.safetensors"
            try FileManager.default.copyItem(atPath: ckpt + "/step-60.safetensors", toPath: resumeFrom)
            let plain = try dir.write("plain.yaml", digitsTrainSpec(steps: 600))
            let (s, out, e) = try await sigma(["submit", plain, "--follow", "-o", dir.path + "/resumed", "--resume", resumeFrom,
                                               "--coordinator", cluster.endpoint])
            #expect(s == 0, "\(e)")
            #expect(e.contains("job \(a.job + 1) accepted") || out.contains("job \(a.job + 1)"), "a new id after the restart: \(e)")
            #expect(fileBytes(dir.path + "/resumed/model.safetensors") == fileBytes(dir.path + "/local/model.safetensors"))
            #expect(fileBytes(dir.path + "/resumed/history.json") == fileBytes(dir.path + "/local/history.json"))
            let o = try await JournalTests.outcome(a.job, at: cluster.endpoint)
            #expect(o.state == .completed, "the first run, resumed after the restart, completes too: \(o.error)")
        }
    }
}

typealias RestartTests = ProcessHeavyTests.RestartTests

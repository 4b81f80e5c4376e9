import SigmaModel
import SigmaProtocol
import SigmaTerminal
import Testing

/// What the terminal shows, as pure functions of a status snapshot: `sigma top`'s frame, the workers table and the
/// number formats.
@Suite struct TerminalTests {
    func status() -> ClusterStatus {
        var a = ClusterStatus.Worker(id: "w1", name: "alpha", host: "host-a", cores: 8, slots: 8, state: "busy", inFlight: 3,
                                     rtt: 250_000, lastSeen: 0, shardsDone: 42)
        a.throughput = 1_234_567
        a.cpu = 640
        a.rss = 3 << 30
        a.rawBytes = 300
        a.wireBytes = 100
        a.blas = "Haswell"
        a.blasBest = "SkylakeX"
        var b = ClusterStatus.Worker(id: "w2", name: "beta", host: "host-b", cores: 4, slots: 4, state: "ready", inFlight: 0,
                                     rtt: 0, lastSeen: 0, shardsDone: 7)
        b.blas = "SkylakeX"
        b.blasBest = "SkylakeX"
        var job = ClusterStatus.Job(id: 12, name: "train-digits", kind: "train", state: .running, done: 1, total: 2, running: 1,
                                    reruns: 0, duplicates: 0, elapsed: 30_000_000_000, error: "")
        job.step = 150
        job.steps = 600
        job.loss = 0.25
        job.accuracy = 0.9375
        job.rate = 640          // (the coordinator's recent pace: 5 steps/s of 128 samples, 450 steps left)
        job.secondsLeft = 90
        return ClusterStatus(uptime: 90_000_000_000, workers: [a, b], jobs: [job], queuedShards: 5)
    }

    /// `sigma deployments`: a classifier's class names under its replicas, the first eight when there are more.
    @Test func deploymentsNameAClassifiersClasses() {
        var d = DeploymentStatus(name: "reviews", model: "encoder", replicasWanted: 0, queued: 0, queueLimit: 1024, maxBatch: 8, maxWaitMs: 5)
        d.replicas = [.init(worker: "w1", name: "a", state: "ready")]
        d.labels = ["negative", "positive"]
        var many = d
        many.labels = (0..<12).map { "c\($0)" }
        let text = DeploymentStatus.table([d, many])
        #expect(text.contains("    classes: negative, positive\n") && text.contains("    classes: c0, c1, c2, c3, c4, c5, c6, c7, … (12 in all)\n"), "\(text)")
        d.labels = []
        #expect(!DeploymentStatus.table([d]).contains("classes"))
    }

    /// A train job's held-out figure beside its loss: a classifier's accuracy (above), a regressor's held-out loss.
    @Test func aRegressorShowsItsHeldOutLoss() {
        var s = status()
        s.jobs[0].accuracy = .nan
        s.jobs[0].evalLoss = 0.02134
        let text = TopView(status: s, sort: .throughput).render(width: 110, height: 30).joined(separator: "\n")
        #expect(text.contains("loss 0.250 eval 0.0213") && !text.contains(" acc "), "\(text)")
        // On a narrower terminal the held-out figure gives way first; the rate and ETA stay whole.
        let narrow = TopView(status: s, sort: .throughput).render(width: 100, height: 30).joined(separator: "\n")
        #expect(!narrow.contains("eval 0.0213") && narrow.contains("640 smp/s ETA 90.0s"), "\(narrow)")
    }

    @Test func topFitsTheTerminalAndShowsJobsWorkersAndWarnings() {
        let lines = TopView(status: status(), sort: .throughput).render(width: 110, height: 30)
        #expect(lines.allSatisfy { $0.count <= 110 }, "\(lines.filter { $0.count > 110 })")
        let text = lines.joined(separator: "\n")
        // 90 s left at the recent pace and 640 samples/s, shown whole (the bar gives way).
        #expect(text.contains("step 150/600") && text.contains("loss 0.250 acc 0.938") && text.contains(" 25%") && text.contains("ETA 90.0s") && text.contains("640 smp/s"), "\(text)")
        #expect(text.contains("workers 2 live on 2 hosts") && text.contains("queued 5") && text.contains("cpu 53% of 12 cores"), "\(text)")
        // Sorted by throughput: w1 (1.23M items/s) before w2; the LZ4 ratio and the BLAS set shown.
        let w1 = lines.firstIndex { $0.hasPrefix("w1 ") }, w2 = lines.firstIndex { $0.hasPrefix("w2 ") }
        #expect(w1 != nil && w2 != nil && w1! < w2!)
        #expect(lines[w1!].contains("1.23M") && lines[w1!].contains("3.0GiB") && lines[w1!].contains("3.00"))
        #expect(text.contains("! worker w1 (alpha@host-a) runs OpenBLAS Haswell kernels; its CPU runs SkylakeX faster"))
        // A short terminal keeps the header and says how many workers it left out.
        let short = TopView(status: status(), sort: .id).render(width: 60, height: 12)
        #expect(short.count <= 14 && short.allSatisfy { $0.count <= 60 })
        #expect(TopView.Sort.id.next == .cpu && TopView.Sort.inFlight.next == .id)
    }

    /// `sigma top` fills the terminal it is given (jobs take what the workers leave; no blank rows under a cut list),
    /// leaves out whole worker columns rather than cutting rows at 80 columns, and counts a host's cores and memory
    /// once however many workers share it (issue 20, point 6: 4 job rows above 30 blank lines at 160×45; the worker
    /// table cut at 80 columns; two workers on a 2-core host shown as cpu 198%/400%).
    @Test func topFillsTheTerminalAndFitsEightyColumns() {
        var s = status()
        s.jobs = (1...40).map { i in
            ClusterStatus.Job(id: UInt64(i), name: "job-\(i)", kind: "map-reduce", state: i == 40 ? .running : .completed, done: 4, total: 4,
                              running: 0, reruns: 0, duplicates: 0, elapsed: 1_000_000_000, error: "")
        }
        let tall = TopView(status: s, sort: .id).render(width: 160, height: 45)
        #expect(tall.count >= 42 && tall.count <= 45, "fills 45 rows: \(tall.count)")
        #expect(tall.filter { $0.hasPrefix("job-") || $0.contains(" job-") }.count >= 30, "\(tall.joined(separator: "\n"))")
        #expect(tall.joined(separator: "\n").contains("more jobs"), "says what it left out")
        let narrow = TopView(status: s, sort: .id).render(width: 80, height: 24)
        let header = narrow.first { $0.hasPrefix("WORKER") } ?? ""
        #expect(narrow.allSatisfy { $0.count <= 80 })
        #expect(header.split(separator: " ").allSatisfy { ["WORKER", "HOST", "STATE", "CPU%", "SHARDS", "ITEMS/S", "MEM", "RTT", "IN", "OUT", "LZ4", "BLAS"].contains(String($0)) },
                "whole columns only: \(header)")
        #expect(header.contains("CPU%") && header.contains("ITEMS/S") && !header.contains("BLAS"), "\(header)")
        // Two workers sharing a 2-core host, each 99 % busy: the host is 99 % busy, not 198 % of 400 %.
        var x = ClusterStatus.Worker(id: "w1", name: "x", host: "h", cores: 2, slots: 1, state: "busy", inFlight: 1, rtt: 0, lastSeen: 0, shardsDone: 1)
        x.cpu = 99
        x.memory = 8 << 30
        var y = x
        y.id = "w2"
        let shared = TopView(status: ClusterStatus(uptime: 1, workers: [x, y], jobs: [], queuedShards: 0), sort: .id).render(width: 120, height: 20)
        #expect(shared.joined().contains("cpu 99% of 2 cores") && shared.joined().contains("of 8.0GiB") && shared.joined().contains("on 1 host "),
                "\(shared.prefix(3))")
    }

    @Test func workersTableAndFormats() {
        let table = ClusterStatus.workersTable(status().workers)
        #expect(table.split(separator: "\n").count == 4, "\(table)")   // header, two workers, one BLAS warning
        #expect(ClusterStatus.workersTable([]).contains("no workers; join one with"))
        #expect(formatDuration(500) == "0µs" && formatDuration(1_500_000) == "1.5ms" && formatDuration(2_500_000_000) == "2.5s"
                && formatDuration(600_000_000_000) == "10m")
        #expect(formatBytes(512) == "0KiB" && formatBytes(3 << 20) == "3MiB" && formatBytes(3 << 30) == "3.0GiB")
        #expect(formatRate(999) == "999" && formatRate(4321) == "4.3k" && formatRate(1_234_567) == "1.23M")
        #expect(columns(["ab", "a-very-long-value", "c"], [4, 5]) == "ab  a-very-long-value c       ")   // (8: the default width)
    }

    @Test func liveLineNumbers() {
        #expect(ProgressText.throughput(done: 5, total: 10, items: 1_000_000, unit: "rows", seconds: 2) == "250.0k rows/s")
        #expect(ProgressText.throughput(done: 5, total: 10, items: nil, unit: "rows", seconds: 2) == "2.5 shards/s")
        #expect(ProgressText.scaled(950) == "950" && ProgressText.scaled(12_345) == "12.3k" && ProgressText.scaled(4.1e6) == "4.1M")
        // 100 steps of 32 rows in 4 s, from step 100 to 200 of 600: 800 samples/s, 16 s left.
        let r = ProgressText.trainingRate(elapsed: 4, fromStep: 100, step: 200, steps: 600, batch: 32)
        #expect(r?.rate == 800 && r?.eta == 16)
        #expect(ProgressText.trainingRate(elapsed: 4, fromStep: 200, step: 200, steps: 600, batch: 32) == nil)
        #expect(ProgressText.trainingRate(elapsed: 4, fromStep: 100, step: 600, steps: 600, batch: 32)?.eta == 0)
    }

    @Test func progressAndEta() {
        var j = status().jobs[0]
        #expect(j.progressFraction == 0.25 && j.eta == 90 && j.recentRate == 640 && j.itemUnit == "samples")
        j.secondsLeft = .nan
        #expect(j.eta == nil, "no ETA while the pace is unknown")
        j.secondsLeft = 90
        j.state = .completed
        #expect(j.eta == nil && j.recentRate == nil)
        #expect(Pace.secondsLeft(elapsed: 10, done: 0, total: 4) == nil && Pace.secondsLeft(elapsed: 10, done: 1, total: 4) == 30)
    }
}

import Foundation
import SigmaDashboard
import SigmaModel
import SigmaProtocol
import Synchronization
import Testing

/// A coordinator stand-in with a known cluster: three live workers on two hosts and a dead one, 24 finished jobs and
/// two running (job 25 a train job), and job 25's shard attempts.
final class PictureSource: DashboardSource {
    static func worker(_ id: String, _ host: String, slots: UInt32, inFlight: UInt32, state: String = "busy") -> ClusterStatus.Worker {
        var w = ClusterStatus.Worker(id: id, name: id, host: host, cores: 8, slots: slots, state: state, inFlight: inFlight,
                                     rtt: 200_000, lastSeen: 0, shardsDone: 10)
        w.cpu = Double(inFlight) * 90
        w.throughput = Double(inFlight) * 1000
        return w
    }

    /// The cluster at second `i` of the past (0…599), or now (nil).
    static func status(at i: Int?) -> ClusterStatus {
        let s = Double(i ?? 599)
        let w1 = UInt32((3 + 1.0 * sin(s / 40)).rounded()), w3 = UInt32(s.truncatingRemainder(dividingBy: 120) < 60 ? 2 : 0)
        let workers = [worker("w1", "alpha", slots: 4, inFlight: w1), worker("w2", "alpha", slots: 4, inFlight: 1),
                       worker("w3", "beta", slots: 2, inFlight: w3), worker("w4", "beta", slots: 2, inFlight: 0, state: "dead")]
        var jobs = (1...24).map {
            ClusterStatus.Job(id: $0, name: "batch-\($0)", kind: "map-reduce", state: .completed, done: 8, total: 8, running: 0,
                              reruns: 0, duplicates: 0, elapsed: 2_000_000_000, error: "")
        }
        let step = UInt32(min(100, 1 + (i ?? 599) / 6))
        var train = ClusterStatus.Job(id: 25, name: "digits", kind: "train", state: .running, done: 0, total: 4, running: 3,
                                      reruns: 0, duplicates: 0, elapsed: UInt64(s * 1e9), error: "")
        train.steps = 100
        train.step = step
        train.loss = 2.3 * exp(-Double(step) / 20) + 0.1
        train.accuracy = 0.1 + 0.85 * (1 - exp(-Double(step) / 20))
        jobs.append(train)
        jobs.append(ClusterStatus.Job(id: 26, name: "sums", kind: "map-reduce", state: .running, done: 3, total: 10, running: 2,
                                      reruns: 0, duplicates: 0, elapsed: 5_000_000_000, error: ""))
        var st = ClusterStatus(uptime: 600_000_000_000, workers: workers, jobs: jobs, queuedShards: 4)
        st.totals.shardsDone = UInt64(s * 7)
        return st
    }

    /// An hour's ring holding the last 600 seconds, recorded the way the coordinator records it.
    static func past(now: Double) -> History {
        var h = History()
        for i in 0..<600 { h.record(status(at: i), at: now - 600 + Double(i)) }
        return h
    }

    static let attempts: [AttemptRecord] = {
        func a(_ shard: UInt32, _ w: String, _ host: String, _ from: Double, _ to: Double?) -> AttemptRecord {
            AttemptRecord(round: 59, shard: shard, attempt: 1, start: UInt64(shard) * 100, count: 100, worker: w, host: host, hedge: false,
                          queued: 0, started: UInt64(from * 1e9), finished: to.map { UInt64($0 * 1e9) } ?? 0, compute: 1,
                          outcome: to == nil ? .running : .ok)
        }
        // w1: three side by side, then one in a freed slot; w2: two one after another; w3: one done, one running beside it
        return [a(0, "w1", "alpha", 0, 1), a(1, "w1", "alpha", 0.1, 1.2), a(2, "w1", "alpha", 0.2, 0.9), a(3, "w1", "alpha", 1.0, 2.0),
                a(4, "w2", "alpha", 0, 0.8), a(5, "w2", "alpha", 0.9, 1.9), a(6, "w3", "beta", 0, 1.5), a(7, "w3", "beta", 0.5, nil)]
    }()

    func snapshot() -> ClusterStatus? { Self.status(at: nil) }

    func jobDetail(_ id: JobID) async -> JobDetail? {
        guard var job = Self.status(at: nil).jobs.first(where: { $0.id == id }) else { return nil }
        job.elapsed = 2_500_000_000
        return JobDetail(job: job, policy: "latency-aware", specDigest: "abc", inputDigest: "", modelDigest: "", logFrom: 0, logTotal: 0,
                         logs: [], attemptsDropped: 0, attempts: id == 25 ? Self.attempts : [])
    }

    func takeSamples() -> CoordinatorSamples { CoordinatorSamples() }
}

/// The web dashboard as an operator sees it (issue 20, point 5), in headless Chromium: screenshots read back as
/// pixels and compared with what the known cluster must draw, besides the DOM.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DashboardPictureTests {
    static let flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                        "--force-color-profile=srgb", "--force-device-scale-factor=1", "--timeout=5000"]
    /// For the job page, which fetches its data (virtual time lets it; the overview's open event stream would not).
    static let fetching = flags + ["--virtual-time-budget=5000"]

    @Test func theDashboardDrawsTheCoordinatorsHistoryPerWorkerChartsCurvesAndSlotLanes() async throws {
        guard let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("chromium is not installed (make test installs it): the dashboard's pictures were not checked")
            return
        }
        let now = Date().timeIntervalSince1970
        let port = Mutex<Int?>(nil)
        let server = Task {
            try await Dashboard(source: PictureSource(), history: PictureSource.past(now: now)).run(host: "127.0.0.1", port: 0) { p in port.withLock { $0 = p } }
        }
        defer { server.cancel() }
        for _ in 0..<200 where port.withLock({ $0 }) == nil { try await Task.sleep(nanoseconds: 20_000_000) }
        let base = "http://127.0.0.1:\(try #require(port.withLock { $0 }, "the dashboard did not start"))/"
        let artifacts = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("artifacts")
        try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)

        // The overview, in a browser that never saw it before: the charts start from the coordinator's past.
        let shot = artifacts.appendingPathComponent("dashboard-history.png").path
        func columns(_ hex: String, in p: Picture) -> Set<Int> { Set(p.find(hex).map(\.x)) }
        // (Chromium shoots at its 5 s timeout, the event stream keeping the page loading; in one loaded clean-clone CI
        // run of 2026-12-06 the shot showed no chart line at all — the script had not drawn yet. As for the job page
        // below, a shot without the utilisation line is taken again, up to three times; the checks use the last.)
        var overview = Picture.empty
        for _ in 0..<3 {
            try? FileManager.default.removeItem(atPath: shot)
            _ = await runToolAsync(chromium, Self.flags + ["--window-size=1280,1200", "--screenshot=\(shot)", base], timeout: 90)
            overview = (try? await Picture.load(png: shot)) ?? .empty
            if columns("#7c3aed", in: overview).count >= 400 { break }
        }
        let utilisation = columns("#7c3aed", in: overview)
        #expect(utilisation.count >= 400, "the utilisation line covers \(utilisation.count) columns: the past was not drawn")
        for (k, color) in ["#e11d48", "#0284c7", "#65a30d"].enumerated() {
            let c = columns(color, in: overview)
            #expect(c.count >= 300, "worker w\(k + 1)'s line (\(color)) covers \(c.count) columns of the per-worker chart")
        }
        #expect(columns("#c026d3", in: overview).count < 20, "a fourth line: the dead worker is charted")
        let dom = await dumpDOM(chromium, Self.flags, base)
        #expect(dom.range(of: #"Cluster utilisation: utilisation, CPU; 6\d\d points from \d\d:\d\d:\d\d to \d\d:\d\d:\d\d"#, options: .regularExpression) != nil,
                "the utilisation chart has no time axis over the past: \(dom.components(separatedBy: "aria-label").dropFirst().first?.prefix(120) ?? "none")")
        #expect(dom.contains("Per worker: slots busy: w1@alpha, w2@alpha, w3@beta;"), "the per-worker chart's legend")
        // The job table: running jobs first (newest first), then the finished ones, ten to a page.
        let body = try #require(dom.components(separatedBy: "<tbody id=\"jobs\">").dropFirst().first?.components(separatedBy: "</tbody>").first)
        let ids = body.components(separatedBy: "<a href=\"/job/").dropFirst().compactMap { Int($0.prefix { $0.isNumber }) }
        #expect(ids == [26, 25, 24, 23, 22, 21, 20, 19, 18, 17], "job rows \(ids)")
        #expect(dom.contains("page 1 of 3 · 26 jobs, running first"))

        // The train job's page: loss falls and accuracy rises by step; the timeline has a lane per slot in use.
        let jobShot = artifacts.appendingPathComponent("dashboard-job.png").path
        // (the page fetches its data and draws afterwards; under load Chromium's virtual-time budget can run out before
        // the fetch is answered and the shot shows empty charts (a clean-clone CI run of 2026-12-06) — so a shot without the
        // drawn curves is taken again, up to three times; the checks below are made on the last one)
        // (a retry gets a longer virtual-time budget: a clean-clone CI run of 2026-12-07 under load got no curves in
        // three shots at 5 s)
        var page = Picture.empty
        for attempt in 0..<3 {
            try? FileManager.default.removeItem(atPath: jobShot)
            let budget = attempt == 0 ? Self.fetching : Self.flags + ["--virtual-time-budget=\(5000 * (attempt + 2))"]
            _ = await runToolAsync(chromium, budget + ["--window-size=1280,1000", "--screenshot=\(jobShot)", base + "job/25"], timeout: 90)
            // (no file at all when Chromium ran out of time: seen in CI too; then the checks below fail on an empty page)
            page = (try? await Picture.load(png: jobShot)) ?? .empty
            if Set(page.find("#db2777").map(\.x)).count >= 500 { break }
        }
        func trend(_ hex: String) -> (first: Double, last: Double, columns: Int) {
            // (each column's lowest pixel of the colour: the curve, never the legend's swatch above the plot)
            let lowest = Dictionary(grouping: page.find(hex), by: \.x).mapValues { $0.map(\.y).max()! }
            let xs = lowest.keys.sorted(), tenth = max(1, xs.count / 10)
            func mean(_ part: ArraySlice<Int>) -> Double { Double(part.map { lowest[$0]! }.reduce(0, +)) / Double(part.count) }
            return xs.isEmpty ? (0, 0, 0) : (mean(xs.prefix(tenth)), mean(xs.suffix(tenth)), xs.count)
        }
        let loss = trend("#db2777"), accuracy = trend("#0d9488")
        #expect(loss.columns >= 500 && loss.last - loss.first >= 60, "the loss curve does not fall across the chart: \(loss)")
        #expect(accuracy.columns >= 500 && accuracy.first - accuracy.last >= 60, "the accuracy curve does not rise across the chart: \(accuracy)")
        // Green (ok) bars sit on 5 lanes: w1's 3 slots, w2's 1, w3's first (its second holds a running attempt).
        let green = page.bands("#10b981", fromX: 150)
        #expect(green.count == 5 && green.allSatisfy { (12...16).contains($0.rows) }, "green lanes \(green)")
        let jobDom = await dumpDOM(chromium, Self.fetching, base + "job/25")
        #expect(jobDom.contains("Shard timeline: 3 worker tracks, 6 slot lanes (w1@alpha: 3, w2@alpha: 1, w3@beta: 2), 8 attempts"))
    }
}

/// The coordinator's history ring and the timeline's slot lanes, as pure functions.
@Suite struct HistoryAndLanesTests {
    @Test func theRingKeepsTheNewestPointsInTimeOrderWithTrueFigures() {
        var h = History(capacity: 50, curveCapacity: 8, maxCurves: 2)
        for i in 0..<120 { h.record(PictureSource.status(at: i), at: 1000 + Double(i)) }
        let p = h.ordered
        #expect(p.count == 50 && p.first?.t == 1070 && p.last?.t == 1119)
        #expect(zip(p, p.dropFirst()).allSatisfy { $0.t < $1.t })
        let last = PictureSource.status(at: 119), sum = ClusterSummary(last)
        // live workers only: 10 slots; the dead one's are not counted, a host's cores once (alpha 8 + beta 8)
        #expect(sum.slots == 10 && sum.hostCores == 16 && sum.live == 3 && sum.hosts == 2)
        #expect(p.last?.utilisation == Double(sum.busy) / 10 && p.last?.cpu == sum.cpuPercent / 100 / 16)
        #expect(p.last?.shardsPerSecond == 7, "7 shards completed per second")
        #expect(p.last.map { Set($0.workers.keys) } == ["w1", "w2", "w3"])
        #expect(p.last?.workers["w2"] == 0.25)
        // the train job's curve: one point per step seen, halved when over capacity, first and last kept
        let curve = h.curve(25)
        #expect(curve.count <= 8 && curve.first?.step == 1 && curve.last?.step == 20)
        #expect(zip(curve, curve.dropFirst()).allSatisfy { $0.step < $1.step && $0.loss > $1.loss })
        #expect(h.curve(26).isEmpty, "a map-reduce job has no curve")
    }

    @Test func attemptsSideBySideTakeSeparateLanesAndAFreedLaneIsReused() {
        let a = PictureSource.attempts
        let lanes = SlotLanes.assign(a, now: 2_500_000_000)
        #expect(lanes == [0, 1, 2, 0, 0, 0, 0, 1])
        #expect(SlotLanes.layout(a, lanes: lanes).map { "\($0.track):\($0.lanes)" } == ["w1@alpha:3", "w2@alpha:1", "w3@beta:2"])
        // no two attempts on one lane of one worker overlap
        for i in a.indices { for j in a.indices where i < j && lanes[i] == lanes[j] && SlotLanes.track(a[i]) == SlotLanes.track(a[j]) {
            let end = { (x: AttemptRecord) in x.outcome == .running ? UInt64(2_500_000_000) : x.finished }
            #expect(end(a[i]) <= a[j].started || end(a[j]) <= a[i].started, "attempts \(i) and \(j) overlap on lane \(lanes[i])")
        } }
    }
}

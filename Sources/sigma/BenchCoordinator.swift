import Foundation
import Logging
import SigmaClient
import SigmaCoordinator
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaSimulator
import SigmaTransport

/// `sigma bench coordinator`: what one training step costs the coordinator as workers are added — its process's CPU
/// time, messages and bytes per step — the per-message and per-byte costs fitted from those, and a projection to
/// 1,000 workers and larger models (docs/performance.md, "Coordinator cost per step").
enum BenchCoordinator {
    /// What one job cost between two snapshots; `perStep` divides the difference of two such runs.
    struct Usage {
        var wall = 0.0        // seconds, submit to result (the coordinator's own figure)
        var cpu = 0.0         // seconds of this process's CPU (coordinator; the in-process client idles meanwhile)
        var poller = 0.0      // seconds on the coordinator's poller thread (decode, core, encode, send)
        var zmq = 0.0         // seconds on ZeroMQ's I/O threads (the sockets' system calls and copies)
        var messages = 0.0    // received + sent by the coordinator
        var bytes = 0.0       // payload bytes in + out as the core counts them
        var shards = 0.0
        var compute = 0.0     // seconds of worker compute (sum over shards, as the workers reported)

        static func - (a: Usage, b: Usage) -> Usage {
            Usage(wall: a.wall - b.wall, cpu: a.cpu - b.cpu, poller: a.poller - b.poller, zmq: a.zmq - b.zmq,
                  messages: a.messages - b.messages, bytes: a.bytes - b.bytes, shards: a.shards - b.shards, compute: a.compute - b.compute)
        }
        func scaled(_ k: Double) -> Usage {
            Usage(wall: wall * k, cpu: cpu * k, poller: poller * k, zmq: zmq * k, messages: messages * k, bytes: bytes * k,
                  shards: shards * k, compute: compute * k)
        }
        /// Field-wise medians.
        static func medians(_ xs: [Usage]) -> Usage {
            func m(_ f: (Usage) -> Double) -> Double { median(xs.map(f)) }
            return Usage(wall: m(\.wall), cpu: m(\.cpu), poller: m(\.poller), zmq: m(\.zmq), messages: m(\.messages),
                         bytes: m(\.bytes), shards: m(\.shards), compute: m(\.compute))
        }
    }

    /// One measured row: the per-step usage at `workers` workers for a model of `parameters` parameters.
    struct Row {
        var workers: Int
        var parameters: Int
        var perStep: Usage
        /// The coordinator process's CPU per second with these workers connected and no job (ticks, heartbeats, the
        /// status snapshot): it grows with wall time, not with steps.
        var idleRate = 0.0
        /// Median over the runs' steps of the coordinator's turnaround: from reading a step's last result to the next
        /// step's ASSIGNs handed to the socket — its part of the step's critical path (seconds).
        var turnaround = 0.0
        /// Per-step CPU less what the idle rate accounts for over the step's wall time (on 2 oversubscribed cores a
        /// step's wall time is many times what it would be on 16).
        var netCPU: Double { max(0, perStep.cpu - idleRate * perStep.wall) }
    }

    /// This process's CPU time (user + system), seconds.
    static func processCPU() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    /// CPU seconds of a process's live threads (this one's by default), summed by thread name
    /// (`/proc/<pid>/task/*/schedstat`, ns).
    static func threadCPU(pid: Int32? = nil) -> [String: Double] {
        var out: [String: Double] = [:]
        let dir = "/proc/\(pid.map(String.init) ?? "self")/task"
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for t in tasks {
            guard let comm = try? String(contentsOfFile: "\(dir)/\(t)/comm", encoding: .utf8),
                  let stat = try? String(contentsOfFile: "\(dir)/\(t)/schedstat", encoding: .utf8),
                  let ns = stat.split(separator: " ").first.flatMap({ Double($0) }) else { continue }
            out[comm.trimmingCharacters(in: .whitespacesAndNewlines), default: 0] += ns / 1e9
        }
        return out
    }

    /// Usage counters now (after the status snapshot has caught up: it is refreshed every 50 ms tick).
    static func snapshot(_ c: LocalCluster) async -> Usage {
        try? await Task.sleep(nanoseconds: 150_000_000)
        let threads = threadCPU()
        let totals = c.coordinator.status?.totals ?? ClusterStatus.Totals()
        let m = c.coordinator.messageCounts
        return Usage(cpu: processCPU(), poller: threads["sigma-coord"] ?? 0,
                     zmq: threads.filter { $0.key.hasPrefix("ZMQbg") }.values.reduce(0, +),
                     messages: Double(m.received + m.sent), bytes: Double(totals.bytesIn + totals.bytesOut))
    }

    /// Runs `spec` once and returns what it cost (wall, CPU, messages, bytes, shards, worker compute).
    static func measure(_ spec: JobSpec, on c: LocalCluster, client: SigmaClient) async throws -> Usage {
        let before = await snapshot(c)
        let o = try await client.runToEnd(spec, acceptTimeout: 120)
        guard o.state == .completed else { throw CLIError.jobFailed("bench job failed: \(o.error)") }
        var u = await snapshot(c) - before
        u.wall = Double(o.elapsed) / 1e9
        if let d = try? await client.detail(job: o.job, attempts: true) {
            u.shards = Double(d.attempts.count) + Double(d.attemptsDropped)
            u.compute = Double(d.attempts.filter { $0.outcome == .ok }.reduce(0) { $0 + $1.compute }) / 1e9
        }
        return u
    }

    static func trainSpec(x: String, y: String, layers: [Int], microBatch: Int, batch: Int, steps: Int) throws -> JobSpec {
        try BenchJobs.trainSpec(name: "bench-coordinator", x: x, y: y, layers: layers, batch: batch, microBatch: microBatch, steps: steps)
    }

    /// Per-step usage at `workers` workers: (long run − short run) / (long − short steps), median over `runs` pairs
    /// (start-up — data load, model build, the first steps — cancels out).
    static func sweep(layers: [Int], workerCounts: [Int], microBatch: Int, batch: (Int) -> Int, steps: (short: Int, long: Int),
                      runs: Int, sharedMemory: Bool, collective: Bool = false, x: String, y: String, logger: Logger,
                      report: (Row) -> Void) async throws -> [Row] {
        var rows: [Row] = []
        for w in workerCounts {
            var options = CoordinatorShell.Options()
            options.sharedMemory = sharedMemory
            // Equal shares, one per worker: the latency-aware policy would keep a tiny model's step on one worker
            // (a round trip costs more than its compute), and this measures what each worker costs the coordinator.
            options.core.policy = .roundRobin
            // (the coordinator reducing every step, unless the sweep measures collective steps: the workers reduce)
            options.core.collectiveSteps = collective
            setenv("OPENBLAS_NUM_THREADS", "1", 1)   // each worker process: one compute thread, single-threaded BLAS
            // (shared memory off: for the workers too, so collective members use their sockets, as between hosts)
            let userShm = getenv("SIGMA_SHM").map { String(cString: $0) }
            if !sharedMemory { setenv("SIGMA_SHM", "0", 1) }
            let c = try LocalCluster(workers: w, threadsPerWorker: 1, logger: logger, coordinatorOptions: options, dataRoots: [try BenchJobs.scratch()])
            unsetenv("OPENBLAS_NUM_THREADS")
            if let userShm { setenv("SIGMA_SHM", userShm, 1) } else { unsetenv("SIGMA_SHM") }
            defer { c.stop() }
            guard await c.waitForWorkers(w, timeout: 60) >= w else { throw CLIError.unreachable("\(w) workers did not join") }
            let client = try c.client()
            defer { client.close() }
            let short = try trainSpec(x: x, y: y, layers: layers, microBatch: microBatch, batch: batch(w), steps: steps.short)
            let long = try trainSpec(x: x, y: y, layers: layers, microBatch: microBatch, batch: batch(w), steps: steps.long)
            _ = try await measure(short, on: c, client: client)   // warm-up: every worker has run a shard
            let idle0 = processCPU(), t0 = monotonicNanos()
            try await Task.sleep(nanoseconds: 2_000_000_000)
            let idleRate = (processCPU() - idle0) / (Double(monotonicNanos() - t0) / 1e9)
            var samples: [Usage] = []
            _ = c.coordinator.takeSamples()
            for _ in 0..<runs {
                let a = try await measure(short, on: c, client: client)
                let b = try await measure(long, on: c, client: client)
                samples.append((b - a).scaled(1 / Double(steps.long - steps.short)))
            }
            let params = zip(layers, layers.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
            let turns = c.coordinator.takeSamples().turnarounds.map { Double($0) }   // (not map(Double.init): that is init(bitPattern:))
            let row = Row(workers: w, parameters: params, perStep: Usage.medians(samples), idleRate: idleRate,
                          turnaround: turns.isEmpty ? 0 : median(turns) / 1e9)
            report(row)
            rows.append(row)
        }
        return rows
    }

    /// Least squares y ≈ a + b·x: (a, b).
    static func fit(_ xs: [Double], _ ys: [Double]) -> (a: Double, b: Double) {
        let n = Double(xs.count), mx = xs.reduce(0, +) / n, my = ys.reduce(0, +) / n
        let sxx = zip(xs, xs).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - mx) }
        let sxy = zip(xs, ys).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) }
        guard sxx > 0 else { return (my, 0) }
        let b = sxy / sxx
        return (my - b * mx, b)
    }

    static func printRow(_ r: Row) {
        let u = r.perStep
        // (two formats: Foundation's String(format:) on Linux misreads arguments past the tenth or so)
        print(String(format: "| %d | %d | %.2f | %.3f | %.3f | %.3f | %.0f | %.1f | %.1f |", r.workers, r.parameters, u.wall * 1e3,
                     u.cpu * 1e3, u.poller * 1e3, u.zmq * 1e3, u.messages, u.bytes / 1e6, u.shards)
              + String(format: " %.1f | %.1f | %.3f | %.3f |", u.compute * 1e3, r.idleRate * 1e3, r.netCPU * 1e3, r.turnaround * 1e3))
        fflush(nil)
    }

    static let header = """
        | workers | parameters | wall ms/step | coordinator CPU ms/step | poller thread | ZeroMQ I/O threads | messages/step | MB/step | shards/step | worker compute ms/step (sum) | idle coordinator CPU ms/s | CPU ms/step less idle × wall | turnaround ms (last result in → next step's ASSIGNs out) |
        |---|---|---|---|---|---|---|---|---|---|---|---|---|
        """

    static func run(workerCounts: [Int], benchWorkers: [Int], runs: Int, logger: Logger) async throws {
        let dir = try BenchJobs.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (tx, ty) = try BenchJobs.syntheticData(dir, rows: 4096, features: 16, classes: 10)
        let (bx, by) = try BenchJobs.syntheticData(dir, rows: 4096, features: 256, classes: 10)
        var cpuModel = "?"
        if let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           let line = info.split(separator: "\n").first(where: { $0.hasPrefix("model name") }) {
            cpuModel = line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?"
        }
        print("# sigma bench coordinator — \(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpuModel)), OpenBLAS \(BLASInfo.coreName)")
        print("# each worker a `sigma worker --threads 1` process, OPENBLAS_NUM_THREADS=1; per step = (long run − short run) / step difference, median of \(runs) pairs")
        print("")
        print("## Tiny model: MLP 16-32-10 (874 parameters), micro_batch 4, batch 8 × workers, SGD momentum; shared memory on (unused: payloads < 1 MiB)")
        print("")
        print(header)
        let tiny = try await sweep(layers: [16, 32, 10], workerCounts: workerCounts, microBatch: 4, batch: { 8 * $0 }, steps: (20, 120),
                                   runs: runs, sharedMemory: true, x: tx, y: ty, logger: logger, report: printRow)
        print("")
        print("## Bench model: MLP 256-1024-1024-10 (1.32 M parameters, 5.3 MB per PARAMS and per gradient), batch 2048, micro_batch 64")
        print("## workers oversubscribed on \(ProcessInfo.processInfo.activeProcessorCount) cores: only the coordinator's own CPU per step is the measure")
        var bench: [Bool: [Row]] = [:]
        for shm in [false, true] {
            print("")
            print(shm ? "### same host: shared memory on (payloads ≥ 1 MiB through /dev/shm)" : "### as between hosts: shared memory off (every byte through the socket)")
            print("")
            print(header)
            bench[shm] = try await sweep(layers: [256, 1024, 1024, 10], workerCounts: benchWorkers, microBatch: 64, batch: { _ in 2048 },
                                         steps: (2, 6), runs: runs, sharedMemory: shm, x: bx, y: by, logger: logger, report: printRow)
        }

        // Collective steps (docs/architecture.md): the same bench model, the workers reducing each step among
        // themselves; the coordinator handles statistics, ASSIGNs and the snapshots (every 64 steps or 5 s: the long
        // run has one more than the short, so they count at their rate). Shared memory off: the socket path, as between hosts.
        print("")
        print("### collective steps: the workers reduce each step among themselves (peer links over TCP; snapshot every \(TrainDriver.snapshotSteps) steps or \(Int(TrainDriver.snapshotSeconds)) s)")
        print("")
        print(header)
        let collective = try await sweep(layers: [256, 1024, 1024, 10], workerCounts: benchWorkers.filter { $0 >= 2 }, microBatch: 64, batch: { _ in 2048 },
                                         steps: (4, 68), runs: runs, sharedMemory: false, collective: true, x: bx, y: by, logger: logger, report: printRow)

        // Per-message cost: the tiny sweep (bytes ≈ 3.5 KB per message, folded in). Per-byte cost: the bench-model
        // sweep (shared memory off: the socket path between hosts), after the messages' share is taken off.
        let m = fit(tiny.map { $0.perStep.messages }, tiny.map { $0.perStep.cpu })
        let mp = fit(tiny.map { $0.perStep.messages }, tiny.map { $0.perStep.poller })
        let tcp = bench[false] ?? [], shm = bench[true] ?? []
        func byteFit(_ rows: [Row]) -> (a: Double, b: Double) {
            fit(rows.map { $0.perStep.bytes }, rows.map { $0.perStep.cpu - m.b * $0.perStep.messages })
        }
        let bt = byteFit(tcp), bs = byteFit(shm)
        let pBench = Double(tcp.first?.parameters ?? 1_332_234)
        let tinyP = Double(tiny.first?.parameters ?? 874)
        let perParam = (bt.a - m.a) / (pBench - tinyP)   // the per-step cost that scales with the model, not W (SGD pass)
        let msgsPerWorker = fit(tiny.map { Double($0.workers) }, tiny.map { $0.perStep.messages }).b
        print("")
        print("## Fitted costs (least squares over the worker counts above; coordinator process CPU)")
        print("")
        print(String(format: "- per message: %.2f µs (poller thread alone: %.2f µs); fixed per step (tiny model): %.3f ms", m.b * 1e6, mp.b * 1e6, m.a * 1e3))
        print(String(format: "- messages per worker per step: %.2f", msgsPerWorker))
        print(String(format: "- per byte through the socket (shared memory off): %.3f ns/B (%.2f GB/s of coordinator CPU); fixed per step (bench model): %.2f ms",
                     bt.b * 1e9, 1 / bt.b / 1e9, bt.a * 1e3))
        print(String(format: "- per byte with shared memory (same host): %.3f ns/B; fixed per step: %.2f ms", bs.b * 1e9, bs.a * 1e3))
        print(String(format: "- per parameter per step, independent of workers (SGD pass, PARAMS frame): %.2f ns", perParam * 1e9))

        // The 5 % verdict: the bench model's compute at one worker, spread over 16 real cores, plus the coordinator's
        // measured CPU per step at 16 workers (taken as wholly on the critical path: every worker waits for PARAMS).
        if let one = tcp.first(where: { $0.workers == 1 }) {
            let compute16 = one.perStep.compute / 16
            print("")
            print("## Bench model at 16 workers: coordinator share of the step")
            print("")
            print(String(format: "- worker compute per step at 1 worker: %.1f ms (one thread) → %.2f ms on 16 one-thread workers", one.perStep.compute * 1e3, compute16 * 1e3))
            for (name, rows, b) in [("shared memory off (16 hosts)", tcp, bt), ("shared memory on (one 16-core host)", shm, bs)] {
                let at16 = rows.first { $0.workers == 16 }
                let coord = at16?.perStep.cpu ?? (b.a + b.b * 16 * 8 * pBench + m.b * msgsPerWorker * 16)
                let src = at16 == nil ? "projected from the fit" : "measured"
                print(String(format: "- %@: coordinator CPU %.2f ms/step (%@) → %.1f %% of a %.2f ms step (target ≤ 5 %%)",
                             name as NSString, coord * 1e3, src as NSString, coord / (compute16 + coord) * 100, (compute16 + coord) * 1e3))
            }
            if let c16 = collective.first(where: { $0.workers == 16 }) ?? collective.last {
                // The per-step CPU net of the idle rate over the oversubscribed wall time, plus the idle rate over the
                // constructed step itself (x = net + idle·(compute16 + x)).
                let net = c16.netCPU, coord = (net + c16.idleRate * compute16) / (1 - c16.idleRate)
                print(String(format: "- collective steps, %d workers: coordinator CPU %.2f ms/step measured over a %.0f ms wall step on these oversubscribed cores; less its idle rate (%.1f ms/s: ticks, heartbeats, status) over that wall time %.2f ms; with the idle rate over a step of 16 real cores: %.2f ms → %.1f %% of a %.2f ms step (target ≤ 5 %%: %@). %.0f messages and %.2f MB a step",
                             c16.workers, c16.perStep.cpu * 1e3, c16.perStep.wall * 1e3, c16.idleRate * 1e3, net * 1e3, coord * 1e3,
                             coord / (compute16 + coord) * 100, (compute16 + coord) * 1e3,
                             (coord / (compute16 + coord) <= 0.05 ? "met" : "missed") as NSString, c16.perStep.messages, c16.perStep.bytes / 1e6))
                let t = c16.turnaround
                print(String(format: "- collective steps, %d workers, on the step's critical path: the coordinator's turnaround %.3f ms (median) → %.1f %% of a %.2f ms step (target ≤ 5 %%: %@); with the coordinator reducing (shared memory on): %.3f ms",
                             c16.workers, t * 1e3, t / (compute16 + t) * 100, (compute16 + t) * 1e3, (t / (compute16 + t) <= 0.05 ? "met" : "missed") as NSString,
                             (shm.first { $0.workers == c16.workers }?.turnaround ?? .nan) * 1e3))
            }
        }

        // Projection: coordinator CPU and link time per step, by model size and worker count, against each worker's
        // compute for 128 samples a step (the bench model's 2048 over 16 workers; weak scaling: the batch grows with
        // the workers) at the FLOP rate one worker measured above (6 FLOP per parameter per sample).
        let flops = tcp.first(where: { $0.workers == 1 }).map { 6 * pBench * 2048 / $0.perStep.compute } ?? 50e9
        let perWorker = 128.0
        func cpu(_ p: Double, _ w: Double) -> Double { m.a + perParam * p + m.b * msgsPerWorker * w + bt.b * 8 * p * w }
        func link(_ p: Double, _ w: Double, _ bandwidth: Double) -> Double { 8 * p * w / bandwidth }
        func compute(_ p: Double) -> Double { 6 * p * perWorker / flops }
        func name(_ p: Double) -> String { p >= 1e6 ? "\(Int(p / 1e6)) M" : "\(Int(p / 1e3)) K" }
        print("")
        print("## Projection to 1,000 workers (socket path)")
        print("")
        print(String(format: "CPU = fixed + per-parameter × P + per-message × %.2f·W + per-byte × 8·P·W (the fits above); link = 8·P·W / bandwidth (PARAMS out, gradients in); compute = 6·P FLOP × %.0f samples per worker per step at %.0f GFLOP/s (one worker, measured above); coordinator share = max(CPU, link) / (compute + max(CPU, link)): CPU and link overlap at best, and every worker waits for the step's PARAMS.",
                     msgsPerWorker, perWorker, flops / 1e9))
        print("")
        print("| parameters | workers | coordinator CPU ms/step | link ms/step, 10 GbE (1.25 GB/s) | link ms/step, 100 GbE | worker compute ms/step | coordinator share, 10 GbE | share, 100 GbE |")
        print("|---|---|---|---|---|---|---|---|")
        for p in [1e3, 1e6, 1e7, 1e8] {
            for w in [16.0, 64, 256, 1000] {
                let c = cpu(p, w), l10 = link(p, w, 1.25e9), l100 = link(p, w, 12.5e9), t = compute(p)
                let s10 = max(c, l10), s100 = max(c, l100)
                print(String(format: "| %@ | %.0f | %.2f | %.2f | %.2f | %.2f | %.0f %% | %.0f %% |", name(p) as NSString, w, c * 1e3, l10 * 1e3,
                             l100 * 1e3, t * 1e3, s10 / (t + s10) * 100, s100 / (t + s100) * 100))
            }
        }
        // Where the coordinator stops being the limit: the fewest samples per worker per step (compute grows with
        // them, the coordinator's cost does not) for which it stays within 5 % of the step.
        print("")
        print("Fewest samples per worker per step for the coordinator to stay ≤ 5 % of the step (coordinator ≤ compute / 19), with CPU / 10 GbE / 100 GbE as its limit:")
        print("")
        print("| parameters | 16 workers | 64 workers | 256 workers | 1,000 workers |")
        print("|---|---|---|---|---|")
        for p in [1e3, 1e5, 1e6, 1e7, 1e8] {
            let cells = [16.0, 64, 256, 1000].map { w -> String in
                let c = cpu(p, w)
                func n(_ t: Double) -> String {
                    let x = 19 * flops * t / (6 * p)
                    return x >= 1e6 ? String(format: "%.1f M", x / 1e6) : x >= 1e4 ? String(format: "%.0f K", x / 1e3) : String(format: "%.0f", x.rounded(.up))
                }
                let l10 = link(p, w, 1.25e9), l100 = link(p, w, 12.5e9)
                return "\(n(c)) / \(n(max(c, l10))) / \(n(max(c, l100)))" + (c >= l10 ? " (CPU)" : "")
            }
            print("| \(name(p)) | " + cells.joined(separator: " | ") + " |")
        }
        print("")
        print(String(format: "Per worker and step, the messages cost as much CPU as the bytes at P = %.0f K parameters; the link (10 GbE) costs %.1f× the CPU per byte.",
                     m.b * msgsPerWorker / (8 * bt.b) / 1e3, (1 / 1.25e9) / bt.b))

        // The real core alone (no codec, no sockets) with simulated workers: does its per-message cost stay flat?
        print("")
        print("## The coordinator core alone with simulated workers (sigma simulate; tiny model, 20 steps, no codec or sockets)")
        print("")
        print("| simulated workers | core ms/step | core µs per message | messages/step | simulated step ms |")
        print("|---|---|---|---|---|")
        for w in [100, 250, 500, 1000] {
            var s = Scenario()
            s.policy = .roundRobin
            s.name = "bench-coordinator-\(w)"
            var sw = SimWorker(name: "w")
            sw.rtt = 0.0002
            for i in 0..<w { var x = sw; x.name = "w\(i + 1)"; s.workers.append(x) }
            s.train = TrainScenario(layers: [16, 32, 10], microBatch: 4, batchSize: 8 * w, steps: 20)
            s.costPerRow = 1e-4
            // The core's cost is wall time around each call (this machine is shared): the median of `runs` simulations.
            var reports: [SimReport] = []
            for _ in 0..<max(3, runs) {
                let r = Simulation(s).run()
                guard r.completed else { throw CLIError.jobFailed("simulated train job with \(w) workers: \(r.error)") }
                reports.append(r)
            }
            let r = reports[0], steps = Double(r.steps)
            let core = median(reports.map(\.coreSeconds))
            print(String(format: "| %d | %.2f | %.2f | %.0f | %.2f |", w, core / steps * 1e3, core / Double(max(1, r.messages)) * 1e6,
                         Double(r.messages) / steps, r.makespan / steps * 1e3))
        }
    }
}

import Foundation
import Glibc
import Testing

extension ProcessHeavyTests {
    /// True numbers over real processes (issue 20, point 2): two workers on this host running a known map-reduce job,
    /// read back through the CLI as an operator would — the job's recent rate agrees with the workers' measured
    /// rates, CPU is a share of this host's cores counted once, a cancelled job runs nothing and shows no rate, idle
    /// workers show no stale throughput, and a killed worker is shown dead without its last figures.
    @Suite(.serialized, .timeLimit(.minutes(3))) struct TrueNumbersTests {
        func sigma(_ args: [String]) async throws -> (code: Int32, out: String, err: String) {
            let p = try SigmaProcess(args)
            let code = try await p.wait(timeout: 30)
            return (code, p.stdout.joined(separator: "\n"), p.stderr.joined(separator: "\n"))
        }

        func object(_ text: String) throws -> Any { try JSONSerialization.jsonObject(with: Data(text.utf8)) }

        @Test func figuresOfAKnownWorkloadReadBackThroughTheCommandLine() async throws {
            let cluster = try await ProcessCluster(workers: 2)
            defer { cluster.stop() }
            try await cluster.waitForWorkers(2)
            let ep = ["--coordinator", cluster.endpoint]
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-numbers-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try "kind: map-reduce\nname: known\ninput: {generate: uniform, count: 6000M, seed: 2}\nmap: square\nreduce: [sum]\nshards: 1200\n"
                .write(toFile: dir + "/known.yaml", atomically: true, encoding: .utf8)
            let submitted = try await sigma(["submit", dir + "/known.yaml"] + ep)
            let job = try #require(jobID(in: submitted.out), "\(submitted.out) \(submitted.err)")

            // Running: wait until the job has a recent rate, then compare it with the workers' own measurements.
            var status: [String: Any] = [:], running: [String: Any] = [:]
            for _ in 0..<100 {
                status = try #require(try object(try await sigma(["status", "--json"] + ep).out) as? [String: Any])
                running = ((status["jobs"] as? [[String: Any]])?.first { $0["id"] as? Int == job }) ?? [:]
                if running["rate_per_s"] != nil, (running["done"] as? Int ?? 0) >= 40 { break }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            let jobRate = try #require(running["rate_per_s"] as? Double, "no recent rate for a running job: \(running)")
            #expect(running["rate_unit"] as? String == "items" && running["eta_s"] is Double, "\(running)")
            let workers = try #require(status["workers"] as? [[String: Any]])
            let workerRates = workers.compactMap { $0["throughput_items_per_s"] as? Double }
            #expect(workerRates.count == 2 && workerRates.allSatisfy { $0 > 0 }, "\(workers)")
            let sum = workerRates.reduce(0, +)
            // (one measures wall time per committed item, the other compute time per shard, summed over slots:
            // the same work, within a factor of two of each other — not one twice the other's sum)
            #expect(jobRate > sum / 2 && jobRate < sum * 2, "job \(jobRate) items/s vs its workers' \(sum)")
            // CPU: this host's cores once, however many workers share it; never above 100 % of them.
            let top = try await sigma(["top", "--once"] + ep).out
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let cpuLine = try #require(top.split(separator: "\n").first { $0.hasPrefix("cpu ") }.map(String.init), "\(top)")
            #expect(cpuLine.contains("% of \(cores) cores"), "\(cpuLine): this host has \(cores) cores")
            let share = Int(cpuLine.dropFirst(4).prefix { $0.isNumber }) ?? -1
            #expect(share >= 0 && share <= 110, "\(cpuLine)")
            #expect(top.split(separator: "\n").contains { $0.hasPrefix("workers 2 live on 1 host ") }, "\(top)")

            // Cancelled: nothing running, no rate, no ETA.
            #expect(try await sigma(["cancel", "\(job)"] + ep).code == 0)
            let jobs = try #require(try object(try await sigma(["jobs", "--json"] + ep).out) as? [[String: Any]])
            let cancelled = try #require(jobs.first { $0["id"] as? Int == job })
            #expect(cancelled["state"] as? String == "cancelled" && cancelled["running"] as? Int == 0, "\(cancelled)")
            #expect(cancelled["rate_per_s"] == nil && cancelled["eta_s"] == nil, "\(cancelled)")

            // Idle past the rate's time to live (3 s): no stale throughput.
            try await Task.sleep(nanoseconds: 3_500_000_000)
            let idle = try #require(try object(try await sigma(["workers", "--json"] + ep).out) as? [[String: Any]])
            #expect(idle.allSatisfy { $0["throughput_items_per_s"] as? Double == 0 }, "\(idle)")

            // A killed worker: dead, its figures '-' rather than its last values.
            cluster.workers.withLock { $0[1] }.kill(SIGKILL)
            let victim = " " + cluster.workerName("w2") + " "
            var table = ""
            for _ in 0..<100 {
                table = try await sigma(["workers"] + ep).out
                if table.split(separator: "\n").contains(where: { $0.contains(victim) && $0.contains("dead") }) { break }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            let dead = try #require(table.split(separator: "\n").first { $0.contains(victim) && $0.contains("dead") }.map(String.init), "\(table)")
            let fields = dead.split(separator: " ")   // ID NAME HOST STATE CPU MEMORY …
            #expect(fields.count > 5 && fields[3] == "dead" && fields[4] == "-" && fields[5] == "-", "a dead worker's row keeps its last figures: \(dead)")
        }
    }
}

typealias TrueNumbersTests = ProcessHeavyTests.TrueNumbersTests

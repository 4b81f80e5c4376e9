import Foundation
import SigmaCoordinatorCore
import SigmaSimulator
import Testing

private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

private func scenario(_ name: String) throws -> Scenario {
    try Scenario.parse(try String(contentsOfFile: root + "/scenarios/\(name).yaml", encoding: .utf8))
}

/// The committed scenarios under `scenarios/`, run through the real coordinator core on simulated time (deterministic).
@Suite struct SchedulerScenarioTests {
    /// Speed ×1/×2/×4, RTT 0/5/20 ms: latency-aware within 10 % of the lower bound and ≥ 1.5× faster than round-robin.
    @Test func heterogeneousWorkers() throws {
        var s = try scenario("heterogeneous")
        let la = Simulation(s).run()
        s.policy = .roundRobin
        let rr = Simulation(s).run()
        s.policy = .leastLoaded
        let ll = Simulation(s).run()
        #expect(la.completed && rr.completed && ll.completed)
        #expect(la.makespan <= 1.10 * la.lowerBound, "latency-aware \(la.makespan) s vs lower bound \(la.lowerBound) s")
        #expect(rr.makespan >= 1.5 * la.makespan, "round-robin \(rr.makespan) s vs latency-aware \(la.makespan) s")
        #expect(ll.makespan > la.makespan)
        #expect(la.result == rr.result && la.result == ll.result, "the result depends on the policy")
        // The fast worker did the most, the slow one the least.
        let shards = la.workers.map(\.shards)
        #expect(shards[2] > shards[1] && shards[1] > shards[0], "\(la.workers)")
    }

    /// One worker turns 10× slower: hedging cuts the job's tail (last dispatch → end) at least 2×, same result.
    @Test func hedgingCutsTheStragglerTail() throws {
        var s = try scenario("straggler")
        let hedged = Simulation(s).run()
        s.hedging = false
        let plain = Simulation(s).run()
        #expect(hedged.completed && plain.completed)
        #expect(hedged.hedges >= 1 && hedged.hedgesWon >= 1)
        #expect(plain.hedges == 0)
        #expect(plain.tail >= 2 * hedged.tail, "tail with hedging \(hedged.tail) s, without \(plain.tail) s")
        #expect(hedged.makespan < plain.makespan)
        #expect(hedged.result == plain.result)
    }

    /// A worker vanishing half-way: the job completes with the same result as without the failure, the dead
    /// worker's shards re-run (or were hedged) elsewhere.
    @Test func workerFailingHalfWay() throws {
        var s = try scenario("failure")
        let failed = Simulation(s).run()
        s.workers[2].failAt = nil
        let clean = Simulation(s).run()
        #expect(failed.completed && clean.completed, "\(failed.error)")
        #expect(failed.result == clean.result)
        #expect(failed.reruns + failed.hedgesWon >= 1, "nothing of the dead worker's ran elsewhere")
        #expect(failed.workers[2].shards < clean.workers[2].shards)
        // Without hedging it is the heartbeat timeout that re-queues them.
        s.workers[2].failAt = 1
        s.hedging = false
        let timedOut = Simulation(s).run()
        #expect(timedOut.completed && timedOut.result == clean.result)
        #expect(timedOut.reruns >= 1)
    }

    /// Deterministic: the same scenario gives the same schedule.
    @Test func simulationIsDeterministic() throws {
        let s = try scenario("heterogeneous")
        let a = Simulation(s).run(), b = Simulation(s).run()
        #expect(a.makespan == b.makespan && a.workers.map(\.shards) == b.workers.map(\.shards) && a.result == b.result)
    }

    @Test func badScenarioNamesTheField() throws {
        #expect(throws: (any Error).self) { try Scenario.parse("workers: []") }
        do {
            _ = try Scenario.parse("workers: [{speed: fast}]")
            Issue.record("accepted a non-numeric speed")
        } catch {
            #expect("\(error)".contains("workers[0].speed"))
        }
    }
}

/// The committed 1,000-worker × 100,000-shard scenario: simulated-time bounds asserted; the wall time is reported
/// (and measured by `make bench`, not asserted here).
@Suite struct ThousandWorkersScenarioTests {
    @Test func thousandWorkersHundredThousandShards() throws {
        let s = try scenario("thousand-workers")
        let started = Date()
        let r = Simulation(s).run()
        let wall = Date().timeIntervalSince(started)
        print("thousand-workers: \(String(format: "%.1f", wall)) s wall, makespan \(r.makespan) s, bound \(r.lowerBound) s")
        #expect(r.completed)
        #expect(r.workers.count == 1_000)
        #expect(r.makespan <= 1.10 * r.lowerBound, "latency-aware \(r.makespan) s vs lower bound \(r.lowerBound) s")
    }
}

import Foundation
import SigmaCoordinatorCore
import SigmaSimulator
import Testing

private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Train jobs in the simulator: the real coordinator core (real `TrainDriver`: PARAMS, tree reduce, SGD) fed by
/// simulated workers that answer with zero gradients of the right shape.
@Suite struct TrainSimulationTests {
    /// 1,000 workers (scenarios/train-thousand-workers.yaml): the job finishes every step, each worker gets work each
    /// step, and the coordinator handles at least PARAMS + ASSIGN + RESULT per worker per step.
    @Test func thousandWorkersFinishATrainJob() throws {
        let s = try Scenario.parse(try String(contentsOfFile: root + "/scenarios/train-thousand-workers.yaml", encoding: .utf8))
        let t = try #require(s.train)
        #expect(s.workers.count == 1000 && t.layers == [16, 32, 10] && t.steps == 20)
        let r = Simulation(s).run()
        #expect(r.completed, "\(r.error)")
        #expect(r.steps == 20)
        #expect(r.workers.allSatisfy { $0.shards >= t.steps }, "a worker sat out a step: \(r.workers.filter { $0.shards < t.steps }.prefix(3))")
        #expect(r.messages >= 3 * 1000 * 20)
        #expect(!r.result.isEmpty)
        // 20 steps of 2 micro-batches per worker at 100 µs each, plus round trips: well under a second of simulated time.
        #expect(r.makespan >= r.lowerBound && r.makespan < 1, "makespan \(r.makespan) s")
    }

    /// Same scenario, same simulated outcome (the core's own wall-clock cost is the only thing that varies).
    @Test func deterministic() throws {
        var s = Scenario()
        s.name = "train-small"
        for i in 0..<8 { var w = SimWorker(name: "w\(i)"); w.speed = i % 2 == 0 ? 1 : 2; w.rtt = 0.001 * Double(i % 3); s.workers.append(w) }
        s.train = TrainScenario(layers: [4, 8, 3], microBatch: 2, batchSize: 32, steps: 5)
        s.costPerRow = 1e-3
        let a = Simulation(s).run(), b = Simulation(s).run()
        #expect(a.completed && b.completed, "\(a.error)")
        #expect(a.makespan == b.makespan && a.messages == b.messages && a.result == b.result)
        #expect(a.workers.map(\.shards) == b.workers.map(\.shards))
        #expect(a.steps == 5)
        // Every step's reduce was timed, and its optimizer part (the SGD pass) is part of it.
        #expect(a.samples.reduces.count == 5 && a.samples.optimizers.count == 5)
        #expect(zip(a.samples.reduces, a.samples.optimizers).allSatisfy { r, o in o > 0 && o <= r }, "\(a.samples)")
    }

    /// A scenario's train job is checked when it is read.
    @Test func badTrainScenariosAreRefused() {
        let base = "workers: [{name: w, count: 2}]\njob: "
        #expect(throws: (any Error).self) { try Scenario.parse(base + "{kind: train}") }
        #expect(throws: (any Error).self) { try Scenario.parse(base + "{kind: train, mlp: [4, 2], micro_batch: 0}") }
        #expect(throws: (any Error).self) { try Scenario.parse(base + "{kind: serve, mlp: [4, 2]}") }
    }
}

import Foundation
import SigmaClient
import SigmaCoordinator
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaWorker
import Testing

/// A job kind added by one folder (ToyKind/) and one registration line runs end to end: parsed from YAML, run in
/// this process, and run on a cluster (a coordinator and two workers over TCP loopback) whose every side goes through
/// the same registry — with the same bits both ways, and the count an independent sieve gives.
@Suite(.serialized) struct ToyKindTests {
    /// The registration line.
    static let kinds = JobKinds.standard.adding(PrimeCountKind.self)
    static let yaml = "kind: prime-count\nname: toy\nbelow: 200000\nshard_size: 7000\n"

    /// Primes below `n`, by the sieve of Eratosthenes (not the kind's trial division).
    static func sieve(_ n: Int) -> UInt64 {
        var composite = [Bool](repeating: false, count: n)
        var count: UInt64 = 0
        for i in 2..<n where !composite[i] {
            count += 1
            for j in stride(from: i * i, to: n, by: i) { composite[j] = true }
        }
        return count
    }

    @Test func aKindAddedByOneFolderAndOneLineRunsLocallyAndOnACluster() async throws {
        let spec = try Self.kinds.parse(Self.yaml)
        #expect(spec.kind == "prime-count" && spec.name == "toy")
        let expected = Self.sieve(200_000)
        #expect(expected == 17_984)

        let local = try Self.kinds.runLocal(spec, roots: .currentDirectory(), threads: 2)
        #expect(try Self.kinds.report(local, spec: spec).json["primes"] as? UInt64 == expected)

        var coordinator = CoordinatorShell.Options()
        coordinator.kinds = Self.kinds
        var worker = WorkerShell.Options(slots: 1)
        worker.kinds = Self.kinds
        let cluster = try TestCluster(.tcp, workers: 2, options: coordinator, worker: worker)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(2)
        #expect(WorkerShell.features(Self.kinds).hasPrefix("map-reduce,train,infer,eval,embed,serve,prime-count,"))
        let o = try await cluster.client.runToEnd(spec)
        #expect(o.state == .completed && o.shards == 29, "\(o.error)")
        #expect(o.payload.bytes == local, "the cluster's result is the local one, bitwise")
        let report = try Self.kinds.report(o.payload.bytes, spec: spec)
        #expect(report.lines == ["primes below 200000: 17984"])
        let status = try await cluster.client.status()
        #expect(status.workers.filter { $0.shardsDone > 0 }.count == 2, "both workers took part")
    }

    /// The kind's spec gets the checks every spec gets: unknown keys named with the nearest known one, its own
    /// validation from a file and from the wire alike; a coordinator that does not know the kind says so.
    @Test func theKindsSpecIsCheckedLikeEveryOther() async throws {
        #expect { _ = try Self.kinds.parse("kind: prime-count\nbelow: 10\nshard_sise: 3\n") } throws: { e in
            let s = e as? SpecError
            return s?.field == "shard_sise" && s?.problem == "unknown field; did you mean 'shard_size'?"
        }
        #expect { _ = try Self.kinds.parse("kind: prime-count\nbelow: 10\nshard_size: 0\n") } throws: { "\($0)".contains("shard_size") }
        let wire = JobSpec(kind: "prime-count", name: "w", body: SpecJSON.encode(PrimeCountSpec(name: "w", below: 1 << 40, shardSize: 1)))
        #expect { try Self.kinds.validate(wire) } throws: { "\($0)".contains("'below'") }
        #expect { _ = try JobSpec.parse(Self.yaml) } throws: { "\($0)".contains("unknown job kind 'prime-count'") }

        let cluster = try TestCluster(.inMemory, workers: 1)
        defer { cluster.stop() }
        try await cluster.waitForWorkers(1)
        await #expect { _ = try await cluster.client.submit(try Self.kinds.parse(Self.yaml)) } throws: { e in
            "\(e)".contains("unknown job kind 'prime-count'") && "\(e)".contains("map-reduce, train")
        }
    }
}

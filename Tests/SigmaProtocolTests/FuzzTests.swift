import Foundation
import SigmaCoordinatorCore
import SigmaWorkerCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// Random and mutated frames through the decoders and cores of both sides (issue 17): the coordinator's (with
/// senders of every role) and the worker's. Never a crash, always an ERROR reply for what does not decode, and both
/// still work afterwards. Reproducible: the seed is fixed (`SIGMA_FUZZ_SEED` picks another). `make test` runs
/// 300,000 frames per side; `make fuzz` runs `SIGMA_FUZZ_FRAMES` (1,000,000) per side.
@Suite struct FuzzTests {
    static var frames: Int { ProcessInfo.processInfo.environment["SIGMA_FUZZ_FRAMES"].flatMap(Int.init) ?? 300_000 }
    static var seed: UInt64 { ProcessInfo.processInfo.environment["SIGMA_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0xC0FFEE }

    /// Frames: pure noise (sometimes with a valid-looking header), or a valid message with bytes flipped,
    /// truncated or extended.
    struct Mutator {
        var rng: Rng
        let valid = CodecTests.all.map { Codec.encode($0) }

        mutating func next(_ i: Int) -> [Frame] {
            if i % 4 == 0 {
                var b = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if rng.next() % 2 == 0, b.count >= 4 { b[0] = 0x53; b[1] = 1; b[2] = UInt8(rng.next() % 0x1E) }
                var frames = [Frame(b)]
                if rng.next() % 4 == 0 { frames.append(Frame((0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })) }
                return frames
            }
            var frames = valid[Int(rng.next() % UInt64(valid.count))]
            let which = Int(rng.next() % UInt64(frames.count))
            var b = frames[which].bytes
            switch rng.next() % 3 {
            case 0: if !b.isEmpty { for _ in 0..<(1 + rng.next() % 3) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) } }
            case 1: b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
            default: b += (0..<Int(1 + rng.next() % 8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            frames[which] = Frame(b)
            return frames
        }
    }

    @Test func randomFramesFromPeersOfEveryRoleNeverCrashTheCoordinator() throws {
        var m = Mutator(rng: Rng(seed: Self.seed))
        var core = CoordinatorCore(now: 1)
        let roles: [Principal] = [.trusted, Principal(name: "w", key: "W", role: .worker), Principal(name: "c", key: "C", role: .client),
                                  Principal(name: "a", key: "A", role: .admin)]
        var rejected = 0, accepted = 0
        var now: Nanos = 1
        for i in 0..<Self.frames {
            now += 1000
            let frames = m.next(i)
            let peer = PeerID([0, 0, 0, UInt8(m.rng.next() % 8), 1])
            let who = roles[Int(m.rng.next() % 4)]
            let event: CoordinatorEvent
            do {
                event = .received(peer, try Codec.decode(frames), from: who)
                accepted += 1
            } catch let d as DecodeError {
                event = .rejected(peer, d)
                rejected += 1
            }
            let actions = core.handle(event, now: now)
            if case .rejected(_, let d) = event, d.type != .error {
                #expect(actions.contains { if case .send(_, .error) = $0 { true } else { false } })
            }
            if i % 10_000 == 0 { _ = core.handle(.tick, now: now) }
        }
        #expect(rejected > Self.frames * 2 / 5 && accepted > 0)
        print("FuzzTests: \(Self.frames) frames through the coordinator (seed \(Self.seed)): \(rejected) rejected by the decoder, \(accepted) decoded, \(core.refused) refused by role")
        // Still serving: a worker registers, a job is accepted, status answers and lists the worker.
        let w = PeerID([9, 9, 9, 9, 9]), c = PeerID([8, 8, 8, 8, 8])
        let hello = core.handle(.received(w, .hello(Hello(cores: 1, slots: 1, memory: 1, host: "h", name: "n", instance: "fresh", features: ""))), now: now)
        #expect(hello.contains { if case .send(w, .ready) = $0 { true } else { false } })
        let spec = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        let submit = Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec))
        #expect(core.handle(.received(c, .submit(submit)), now: now).contains { if case .resolveInput = $0 { true } else { false } })
        let acts = core.handle(.inputResolved(c, submit, .success(try JobKinds.standard.prepare(submit.spec, roots: .currentDirectory()))), now: now)
        #expect(acts.contains { if case .send(c, .accept) = $0 { true } else { false } })
        let st = core.handle(.received(c, .status(request: 2)), now: now)
        #expect(st.contains { if case .send(c, .statusReply(2, let s)) = $0 { s.workers.contains { $0.host == "h" && $0.state != "dead" } } else { false } })
    }

    @Test func randomFramesNeverCrashTheWorker() throws {
        var m = Mutator(rng: Rng(seed: Self.seed ^ 0x5EED))
        let hello = Hello(cores: 2, slots: 2, memory: 1 << 30, host: "h", name: "fuzz", instance: "fuzz-1", features: "")
        var core = WorkerCore(config: WorkerCore.Config(hello: hello))
        var now: Nanos = 1
        _ = core.handle(.connected, now: now)
        var rejected = 0, accepted = 0, computes = 0, drained = 0
        for i in 0..<Self.frames {
            now += 1000
            if i % 1000 == 0 {
                // A worker the fuzz told to drain takes nothing new: a fresh one goes on (fuzzing assignments too).
                if core.drainingSince != nil {
                    core = WorkerCore(config: WorkerCore.Config(hello: hello))
                    _ = core.handle(.connected, now: now)
                    drained += 1
                }
                // (registered again now and then: most messages only matter to a registered worker)
                _ = core.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 1000, liveness: 3))), now: now)
            }
            let event: WorkerEvent
            do {
                event = .received(try Codec.decode(m.next(i)))
                accepted += 1
            } catch let d as DecodeError {
                event = .rejected(d)
                rejected += 1
            }
            for a in core.handle(event, now: now) {
                // What the worker would compute is answered at once (as a failure: the fuzzed specs are not run).
                if case .compute(let t) = a {
                    computes += 1
                    _ = core.handle(.computed(ShardResult(job: t.job, shard: t.shard, attempt: t.attempt, status: .failed, error: "fuzz")), now: now)
                }
            }
            if i % 10_000 == 0 { _ = core.handle(.tick, now: now) }
        }
        #expect(rejected > Self.frames * 2 / 5 && accepted > 0)
        print("FuzzTests: \(Self.frames) frames through the worker (seed \(Self.seed ^ 0x5EED)): \(rejected) rejected by the decoder, \(accepted) decoded, \(computes) shards it would have run, \(drained) times told to drain")
        // Still working: registered, it takes an assignment and answers it.
        _ = core.handle(.received(.ready(Ready(workerID: "w1", heartbeatInterval: 1000, liveness: 3))), now: now)
        let spec = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        let acts = core.handle(.received(.assign(Assign(job: 999_999, shard: 0, attempt: 1, start: 0, count: 10, spec: .mapReduce(spec)))), now: now)
        // (a worker the fuzz told to drain declines it instead — still an answer, as a draining worker gives)
        #expect(acts.contains {
            switch $0 {
            case .compute(let t): t.job == 999_999
            case .send(.result(let r)): r.job == 999_999 && r.status == .declined && core.drainingSince != nil
            default: false
            }
        }, "\(acts)")
    }
}

struct Rng {
    var s: UInt64
    init(seed: UInt64) { s = seed }
    mutating func next() -> UInt64 {
        s &+= 0x9E3779B97F4A7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

import SigmaCoordinatorCore
import SigmaModel
import SigmaProtocol
import Testing

/// ≥ 100,000 random and mutated frames through decode + coordinator core: never a crash, always an ERROR
/// reply for what does not decode, and the coordinator still works afterwards.
@Suite struct FuzzTests {
    @Test func hundredThousandRandomFramesNeverCrashTheCoordinator() throws {
        var rng = Rng(seed: 0xC0FFEE)
        var core = CoordinatorCore(now: 1)
        let valid = CodecTests.all.map { Codec.encode($0) }
        var rejected = 0, accepted = 0
        var now: Nanos = 1
        for i in 0..<120_000 {
            now += 1000
            var frames: [Frame]
            switch i % 4 {
            case 0:   // pure noise, random length (sometimes with a valid-looking prefix)
                var b = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if rng.next() % 2 == 0, b.count >= 4 { b[0] = 0x53; b[1] = 1; b[2] = UInt8(rng.next() % 0x18) }
                frames = [Frame(b)]
                if rng.next() % 4 == 0 { frames.append(Frame((0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })) }
            default:  // a valid message with bytes flipped, truncated or extended
                frames = valid[Int(rng.next() % UInt64(valid.count))]
                let which = Int(rng.next() % UInt64(frames.count))
                var b = frames[which].bytes
                switch rng.next() % 3 {
                case 0: if !b.isEmpty { for _ in 0..<(1 + rng.next() % 3) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) } }
                case 1: b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
                default: b += (0..<Int(1 + rng.next() % 8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                }
                frames[which] = Frame(b)
            }
            let peer = PeerID([0, 0, 0, UInt8(rng.next() % 4), 1])
            let event: CoordinatorEvent
            do {
                event = .received(peer, try Codec.decode(frames))
                accepted += 1
            } catch let d as DecodeError {
                event = .rejected(peer, d)
                rejected += 1
            }
            let actions = core.handle(event, now: now)
            if case .rejected(_, let d) = event, d.type != .error {
                #expect(actions.contains { if case .send(_, .error) = $0 { true } else { false } })
            }
        }
        #expect(rejected > 50_000)
        // Still serving: a worker registers, a job is accepted, status answers and lists the worker.
        let w = PeerID([9, 9, 9, 9, 9]), c = PeerID([8, 8, 8, 8, 8])
        let hello = core.handle(.received(w, .hello(Hello(cores: 1, slots: 1, memory: 1, host: "h", name: "n", instance: "fresh", features: ""))), now: now)
        #expect(hello.contains { if case .send(w, .ready) = $0 { true } else { false } })
        let spec = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), reduce: [.sum], sharding: .count(1))
        let acts = core.handle(.received(c, .submit(Submit(request: 1, options: [.pushResult], spec: .mapReduce(spec)))), now: now)
        #expect(acts.contains { if case .send(c, .accept) = $0 { true } else { false } })
        let st = core.handle(.received(c, .status(request: 2)), now: now)
        #expect(st.contains { if case .send(c, .statusReply(2, let s)) = $0 { s.workers.contains { $0.host == "h" && $0.state != "dead" } } else { false } })
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

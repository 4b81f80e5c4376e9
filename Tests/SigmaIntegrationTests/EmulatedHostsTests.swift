import Foundation
import SigmaClient
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// Three "hosts": network namespaces joined to this one by delayed point-to-point links. Where the kernel has
/// `sch_netem`, each link is a veth pair with `tc netem delay` on both ends; where it does not (this project's
/// VMs), each link is a pair of TUN devices joined by a `DelayLine` thread that holds every packet for the same
/// one-way delay. The coordinator runs here (bound to 0.0.0.0 on a free port), each worker inside its namespace.
final class EmulatedHosts {
    enum Links: String { case netem = "veth + tc netem", delayLine = "TUN + userspace delay line" }
    let names: [String]
    let rttMs: [Int]
    let links: Links
    private(set) var made: [String] = []
    private var delayLine: DelayLine?
    private let tag = String(getpid() % 10000)

    static func run(_ args: [String]) -> (Int32, String) { command("/usr/sbin/ip", args) }
    static func tc(_ args: [String]) -> (Int32, String) { command("/usr/sbin/tc", args) }

    /// Runs a tool to the end: its exit status and standard error.
    static func command(_ path: String, _ args: [String]) -> (Int32, String) {
        let r = runTool(path, args)
        return (r.status, r.err)
    }

    /// Why this machine cannot host the test, or nil.
    static var unavailable: String? {
        if getuid() != 0 { return "not root" }
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") { return "no /usr/sbin/ip" }
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/tc") { return "no /usr/sbin/tc" }
        return nil
    }

    /// Whether `tc netem` works here: tried on a throwaway veth pair.
    static func netemAvailable(tag: String) -> Bool {
        let a = "sgqa\(tag)"
        guard run(["link", "add", a, "type", "veth", "peer", "name", "sgqb\(tag)"]).0 == 0 else { return false }
        defer { _ = run(["link", "del", a]) }
        return tc(["qdisc", "add", "dev", a, "root", "netem", "delay", "1ms"]).0 == 0
    }

    init(rttMs: [Int]) throws {
        self.rttMs = rttMs
        names = rttMs.indices.map { [tag] in "sgt\(tag)w\($0)" }
        links = Self.netemAvailable(tag: tag) ? .netem : .delayLine
        do {
            if links == .delayLine { delayLine = DelayLine() }
            for i in names.indices { try link(i) }
            delayLine?.start()
        } catch {
            teardown()
            throw error
        }
    }

    private func ip(_ args: [String]) throws {
        let (rc, err) = Self.run(args)
        if rc != 0 { throw SigmaTestError("ip \(args.joined(separator: " ")): \(err)") }
    }

    /// Namespace `i`, its link to this namespace (10.77.i.1 here, 10.77.i.2 there), delayed by half the RTT each way.
    private func link(_ i: Int) throws {
        let ns = names[i], host = "sgh\(tag)\(i)", peer = "sgp\(tag)\(i)"
        let oneWay = Double(rttMs[i]) / 2
        try ip(["netns", "add", ns])
        made.append(ns)
        switch links {
        case .netem:
            try ip(["link", "add", host, "type", "veth", "peer", "name", peer])
            try ip(["link", "set", peer, "netns", ns])
            try ip(["addr", "add", "10.77.\(i).1/24", "dev", host])
            try ip(["-n", ns, "addr", "add", "10.77.\(i).2/24", "dev", peer])
            if rttMs[i] > 0 {
                for (dev, nsArgs) in [(host, [String]()), (peer, ["-n", ns])] {
                    let (rc, err) = Self.tc(nsArgs + ["qdisc", "add", "dev", dev, "root", "netem", "delay", "\(oneWay)ms"])
                    if rc != 0 { throw SigmaTestError("tc netem on \(dev): \(err)") }
                }
            }
        case .delayLine:
            let line = delayLine!
            let a = try line.device(host), b = try line.device(peer)
            try ip(["link", "set", peer, "netns", ns])
            try ip(["addr", "add", "10.77.\(i).1", "peer", "10.77.\(i).2/32", "dev", host])
            try ip(["-n", ns, "addr", "add", "10.77.\(i).2", "peer", "10.77.\(i).1/32", "dev", peer])
            line.join(a, b, oneWayMs: oneWay)
        }
        try ip(["link", "set", host, "up"])
        try ip(["-n", ns, "link", "set", peer, "up"])
        try ip(["-n", ns, "link", "set", "lo", "up"])
    }

    /// The address of this namespace's side for worker `i` to join.
    func coordinatorAddress(_ i: Int) -> String { "10.77.\(i).1" }

    func teardown() {
        delayLine?.close()
        delayLine = nil
        for (i, ns) in made.enumerated() {
            _ = Self.run(["netns", "del", ns])
            if links == .netem { _ = Self.run(["link", "del", "sgh\(tag)\(i)"]) }
        }
        made = []
    }

    deinit { teardown() }

    /// `sigma worker` inside namespace `i`.
    func worker(_ i: Int, port: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", names[i], try sigmaBinary(), "worker", "--join", "tcp://\(coordinatorAddress(i)):\(port)",
                       "--threads", "1", "--name", "rtt\(rttMs[i])", "--log-level", "warning"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }
}

/// Part of `MultiProcessTests` (serialized with it): the emulated hosts' delay line, coordinator and three workers
/// would otherwise load the machine while the kill test measures its 5-second bound.
extension MultiProcessTests {
    /// Workers behind 0 / 10 / 40 ms links: a map-reduce gives the local result under both policies, and the
    /// latency-aware policy finishes sooner than round-robin.
    @Test func latencyAwareBeatsRoundRobinAcrossDelayedLinks() async throws {
        if let why = EmulatedHosts.unavailable {
            print("EmulatedHostsTests skipped: \(why) (needs root, ip and tc to build network namespaces)")
            return
        }
        let hosts: EmulatedHosts
        do { hosts = try EmulatedHosts(rttMs: [0, 10, 40]) } catch {
            print("EmulatedHostsTests skipped: cannot build namespaces here: \(error)")
            return
        }
        defer { hosts.teardown() }
        let spec = MapReduceSpec(name: "netem", input: .uniform(count: 6_000_000, seed: 3, low: 0, high: 1), map: .square,
                                 reduce: [.sum, .count], sharding: .count(600))
        let local = try MapReduceKernel.runLocal(spec)
        var elapsed: [String: Double] = [:]
        for policy in ["latency-aware", "round-robin"] {
            let coordinator = try SigmaProcess(["coordinator", "--listen", "0.0.0.0", "--insecure", "--port", "0",
                                                "--policy", policy, "--log-level", "info"])
            defer { coordinator.kill(SIGTERM) }
            let line = try await coordinator.waitForLine("listening ")
            let port = String(line.split(separator: ":").last ?? "")
            let workers = try (0..<3).map { try hosts.worker($0, port: port) }
            defer { for w in workers where w.isRunning { kill(w.processIdentifier, SIGKILL) } }
            let client = try SigmaClient(endpoint: "tcp://127.0.0.1:\(port)")
            defer { client.close() }
            for _ in 0..<300 where try await client.status().workers.filter({ $0.state != "dead" }).count < 3 {
                try await Task.sleep(nanoseconds: 50_000_000)
            }
            try #require(try await client.status().workers.count == 3, "workers in the namespaces did not join")
            let o = try await client.runToEnd(.mapReduce(spec), acceptTimeout: 60)
            #expect(o.state == .completed, "\(policy): \(o.error)")
            let r = try o.payload.withUnsafeBytes { try MapReduceResult.decode($0) }
            #expect(abs(r.total.total - local.total) <= 1e-9 * local.total && r.total.count == local.count, "\(policy)")
            elapsed[policy] = Double(o.elapsed) / 1e9
            let st = try await client.status()
            print("emulated hosts (\(hosts.links.rawValue)), \(policy): \(String(format: "%.3f", elapsed[policy]!)) s; "
                  + st.workers.map { "\($0.name): \($0.shardsDone) shards, RTT \(String(format: "%.1f", Double($0.rtt) / 1e6)) ms" }
                    .joined(separator: ", "))
            // The links are really delayed: the coordinator's own heartbeat RTTs see at least the emulated delay
            // (more when a busy worker answers late), and every host got work.
            for w in st.workers {
                let ms = Double(w.rtt) / 1e6, want = Double(w.name.dropFirst(3)) ?? .infinity
                #expect(ms >= want * 0.9, "\(w.name): measured RTT \(ms) ms, below the emulated \(want) ms")
                #expect(w.shardsDone > 0, "\(policy) placed no shard on \(w.name)")
            }
        }
        let la = try #require(elapsed["latency-aware"]), rr = try #require(elapsed["round-robin"])
        #expect(la < rr, "latency-aware \(la) s vs round-robin \(rr) s")
    }
}

import Foundation
import SigmaClient
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// Three "hosts": network namespaces joined to this one by veth pairs, each link delayed with `tc netem`.
/// The coordinator runs here (bound to 0.0.0.0 on a free port), each worker inside its namespace.
final class EmulatedHosts {
    let names: [String]
    let rttMs: [Int]
    private(set) var made: [String] = []

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

    init(rttMs: [Int]) throws {
        self.rttMs = rttMs
        let tag = String(getpid() % 10000)
        names = rttMs.indices.map { "sgt\(tag)w\($0)" }
        for (i, ns) in names.enumerated() {
            let host = "sgh\(tag)\(i)", peer = "sgp\(tag)\(i)"
            let half = "\(Double(rttMs[i]) / 2)ms"
            let steps: [[String]] = [
                ["netns", "add", ns],
                ["link", "add", host, "type", "veth", "peer", "name", peer],
                ["link", "set", peer, "netns", ns],
                ["addr", "add", "10.77.\(i).1/24", "dev", host],
                ["link", "set", host, "up"],
                ["-n", ns, "addr", "add", "10.77.\(i).2/24", "dev", peer],
                ["-n", ns, "link", "set", peer, "up"],
                ["-n", ns, "link", "set", "lo", "up"],
            ]
            made.append(ns)
            for s in steps {
                let (rc, err) = Self.run(s)
                if rc != 0 { teardown(); throw SigmaTestError("ip \(s.joined(separator: " ")): \(err)") }
            }
            if rttMs[i] > 0 {
                for (dev, nsArgs) in [(host, [String]()), (peer, ["-n", ns])] {
                    let (rc, err) = Self.tc(nsArgs + ["qdisc", "add", "dev", dev, "root", "netem", "delay", half])
                    if rc != 0 { teardown(); throw SigmaTestError("tc netem on \(dev): \(err)") }
                }
            }
        }
    }

    /// The address of this namespace's side for worker `i` to join.
    func coordinatorAddress(_ i: Int) -> String { "10.77.\(i).1" }

    func teardown() {
        for (i, ns) in made.enumerated() {
            _ = Self.run(["netns", "del", ns])
            _ = Self.run(["link", "del", "sgh\(String(getpid() % 10000))\(i)"])
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

@Suite(.serialized, .timeLimit(.minutes(10))) struct EmulatedHostsTests {
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
            print("emulated hosts, \(policy): \(String(format: "%.3f", elapsed[policy]!)) s; shards per worker: "
                  + st.workers.map { "\($0.name) \($0.shardsDone)" }.joined(separator: ", "))
        }
        let la = try #require(elapsed["latency-aware"]), rr = try #require(elapsed["round-robin"])
        #expect(la < rr, "latency-aware \(la) s vs round-robin \(rr) s")
    }
}

import Foundation
import Glibc
import SigmaJobs
import SigmaModel
import Testing

/// A free TCP port on 127.0.0.1 (bound, read, closed: another process could take it meanwhile, rarely).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw SigmaTestError("no free port") }
    return Int(UInt16(bigEndian: a.sin_port))
}

/// `sigma up` / `sigma down` against a real OpenSSH server started by the test on 127.0.0.1 (a throw-away host key,
/// one authorized key); two host entries reach it as two hosts.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DeployTests {
    @Test func upStartsTheClusterOverSSHAndDownStopsIt() async throws {
        let sshd = "/usr/sbin/sshd"
        try #require(FileManager.default.isExecutableFile(atPath: sshd), "needs OpenSSH's server (Debian openssh-server; make test installs it)")
        let dir = try Scratch("deploy")
        defer { dir.remove() }
        for k in ["host_key", "id"] {
            let r = runTool("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", dir.path + "/" + k])
            try #require(r.status == 0, "ssh-keygen: \(r.err)")
        }
        try FileManager.default.copyItem(atPath: dir.path + "/id.pub", toPath: dir.path + "/authorized_keys")
        let sshPort = try freePort(), coordinatorPort = try freePort()
        let config = try dir.write("sshd_config", """
            Port \(sshPort)
            ListenAddress 127.0.0.1
            HostKey \(dir.path)/host_key
            AuthorizedKeysFile \(dir.path)/authorized_keys
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            PermitRootLogin prohibit-password
            PidFile \(dir.path)/sshd.pid

            """)
        if getuid() == 0 { try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true) }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: sshd)
        server.arguments = ["-D", "-e", "-f", config]
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { server.terminate() }
        let user = String(cString: getpwuid(getuid()).pointee.pw_name)
        let sigma = try sigmaBinary()
        let yaml = try dir.write("cluster.yaml", """
            coordinator: {listen: 127.0.0.1, port: \(coordinatorPort)}
            worker: {threads: 1}
            hosts:
              - {host: \(user)@127.0.0.1, coordinator: true, workers: 1}
              - {host: \(user)@localhost, workers: 1}
            ssh:
              command: [ssh, -i, \(dir.path)/id, -o, BatchMode=yes, -o, StrictHostKeyChecking=no, -o, UserKnownHostsFile=/dev/null, -o, LogLevel=ERROR]
              port: \(sshPort)
              binary: \(sigma)
              run_dir: \(dir.path)/run dir

            """)
        // sshd takes a moment to listen.
        var ready = false
        for _ in 0..<50 where !ready {
            ready = runTool("/usr/bin/ssh", ["-i", dir.path + "/id", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                                             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-p", "\(sshPort)",
                                             "\(user)@127.0.0.1", "true"], timeout: 10).status == 0
            if !ready { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        try #require(ready, "the test's sshd did not accept a login")

        let up = runTool(sigma, ["up", "--config", yaml, "--wait", "60"], timeout: 120)
        #expect(up.status == 0, "\(up.out)\n\(up.err)")
        #expect(up.out.contains("cluster up: 2 of 2 worker(s)"), "\(up.out)")
        let runDir = dir.path + "/run dir"
        let pidFiles = (try? FileManager.default.contentsOfDirectory(atPath: runDir).filter { $0.hasSuffix(".pid") }.sorted()) ?? []
        #expect(pidFiles == ["coordinator.pid", "worker-127.0.0.1-1.pid", "worker-localhost-1.pid"])
        let pids = pidFiles.compactMap { Int32((try? String(contentsOfFile: runDir + "/" + $0, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") }
        #expect(pids.count == 3 && pids.allSatisfy { kill($0, 0) == 0 })

        // The cluster works: a job through it.
        let endpoint = "tcp://127.0.0.1:\(coordinatorPort)"
        let spec = try dir.write("job.yaml", "kind: map-reduce\ninput: {generate: range, count: 1000}\nreduce: [sum]\nshards: 8\n")
        let job = runTool(sigma, ["submit", spec, "--follow", "--json", "--coordinator", endpoint], timeout: 60)
        #expect(job.status == 0 && job.out.contains("499500"), "\(job.out) \(job.err)")
        let workers = runTool(sigma, ["workers", "--json", "--coordinator", endpoint])
        #expect(workers.out.contains("127.0.0.1-1") && workers.out.contains("localhost-1"), "\(workers.out)")

        // A second `up` starts nothing twice.
        let again = runTool(sigma, ["up", "--config", yaml, "--wait", "0"], timeout: 60)
        #expect(again.status != 0 && again.out.contains("already running"), "\(again.out) \(again.err)")

        let down = runTool(sigma, ["down", "--config", yaml], timeout: 120)
        #expect(down.status == 0, "\(down.out)\n\(down.err)")
        #expect(down.out.contains("coordinator stopped") && down.out.contains("worker-localhost-1 stopped"), "\(down.out)")
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(pids.allSatisfy { kill($0, 0) != 0 }, "a process sigma up started is still alive")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? []).filter { $0.hasSuffix(".pid") }.isEmpty)
        // And down again: nothing left to stop, no error.
        #expect(runTool(sigma, ["down", "--config", yaml], timeout: 60).status == 0)
    }

    /// The commands `sigma up` would run, quoted for any path, and a bad hosts list refused by name.
    @Test func planAndItsErrors() throws {
        var c = try ClusterConfig.parse("""
            coordinator: {port: 7711, listen: 10.0.0.1}
            hosts:
              - {host: a@h1, coordinator: true}
              - {host: h2, workers: 2, key: "/k/it's b.key"}
            ssh: {binary: /opt/sigma bin/sigma, run_dir: /tmp/run}
            """)
        #expect(DeployPlan.check(c).isEmpty)
        #expect(DeployPlan.endpoint(c) == "tcp://h1:7711")
        let up = DeployPlan.up(c)
        #expect(up.map(\.what) == ["coordinator", "worker h2-1", "worker h2-2"])
        #expect(up[0].argv.prefix(4) == ["ssh", "-o", "BatchMode=yes", "--"] && up[0].argv[4] == "a@h1")
        // The remote command line, run by a shell, gives the worker back its arguments whole.
        let remote = up[1].argv.last!
        #expect(remote.contains("'/opt/sigma bin/sigma' worker --join tcp://h1:7711 --name h2-1"))
        #expect(remote.contains("--key '/k/it'\\''s b.key'"))
        let echoed = runTool("/bin/sh", ["-c", "printf '%s\\n' " + DeployPlan.quote("/k/it's b.key") + " " + DeployPlan.quote("a b\"c$d")])
        #expect(echoed.out == "/k/it's b.key\na b\"c$d\n")
        #expect(DeployPlan.down(c).map(\.what) == ["stop workers", "stop coordinator"])
        // --dry-run prints each step as a command line a shell runs as is.
        #expect("\(up[0])".hasPrefix("a@h1 (coordinator): ssh -o BatchMode=yes -- a@h1 'mkdir -p /tmp/run"), "\(up[0])")
        let dry = runTool(try sigmaBinary(), ["down", "--dry-run", "--config", try Scratch("dry").write("c.yaml", "coordinator: {listen: 10.0.0.1}\nhosts:\n  - {host: h1, coordinator: true, workers: 1}\n")])
        #expect(dry.status == 0 && dry.out.hasPrefix("h1 (stop workers): ssh -o BatchMode=yes -- h1 "), "\(dry.out) \(dry.err)")
        var insecure = c
        insecure.insecure = true
        #expect(DeployPlan.up(insecure)[0].argv.last!.contains(" --insecure") && !up[0].argv.last!.contains("--insecure"))
        var loop = c
        loop.listen = "127.0.0.1"
        #expect(DeployPlan.check(loop).contains { $0.contains("out of reach of the workers on h2") })
        c.hosts[0].coordinator = false
        #expect(DeployPlan.check(c).contains { $0.contains("exactly one host") })
        #expect(throws: (any Error).self) { _ = try ClusterConfig.parse("hosts:\n  - {host: h, workers: lots}\n") }
        #expect { _ = try ClusterConfig.parse("hosts:\n  - {host: h, cores: 2}\n") } throws: { "\($0)".contains("cores") }
    }
}

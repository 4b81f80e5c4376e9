import Foundation
import Glibc
import SigmaJobs
import SigmaModel
import SigmaTransport
import Testing

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (`freeLoopbackPort`): a worker's peer port or a
/// client socket cannot take it before the process the test starts binds it.
func freePort() throws -> Int {
    guard let port = freeLoopbackPort() else { throw SigmaTestError("no free port on 127.0.0.1 below the ephemeral range") }
    return port
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
            coordinator: {listen: 127.0.0.1, port: \(coordinatorPort), state_dir: \(dir.path)/journal}
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
        // Each pid file: PID START-TIME EXECUTABLE (this sigma), in a directory only this user may use.
        let records = pidFiles.map { ((try? String(contentsOfFile: runDir + "/" + $0, encoding: .utf8)) ?? "").split(separator: " ", maxSplits: 2) }
        let pids = records.compactMap { $0.first.flatMap { Int32($0) } }
        #expect(pids.count == 3 && pids.allSatisfy { kill($0, 0) == 0 })
        #expect(records.allSatisfy { $0.count == 3 && $0[2].trimmingCharacters(in: .newlines) == URL(fileURLWithPath: sigma).resolvingSymlinksInPath().path }, "\(records)")
        #expect(mode(runDir) == 0o700)

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
        #expect(remote.contains("'/opt/sigma bin/sigma' worker --coordinator tcp://h1:7711 --name h2-1"))
        #expect(remote.contains("--key '/k/it'\\''s b.key'"))
        let echoed = runTool("/bin/sh", ["-c", "printf '%s\\n' " + DeployPlan.quote("/k/it's b.key") + " " + DeployPlan.quote("a b\"c$d")])
        #expect(echoed.out == "/k/it's b.key\na b\"c$d\n")
        #expect(DeployPlan.down(c).map(\.what) == ["stop workers", "stop coordinator"])
        // --dry-run prints each step as a command line a shell runs as is.
        #expect("\(up[0])".hasPrefix("a@h1 (coordinator): ssh -o BatchMode=yes -- a@h1 'd=/tmp/run; mkdir -p -m 700 \"$d\""), "\(up[0])")
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

    /// Runs a step's remote script here, as the host's shell would, with HOME set.
    func runRemote(_ step: DeployPlan.Step, home: String) -> (status: Int32, out: String, err: String) {
        runTool("/usr/bin/env", ["HOME=" + home, "/bin/sh", "-c", step.argv.last!], timeout: 60)
    }

    /// The run directory defaults to one under the host's home, made 0700, and holds `PID START-TIME EXECUTABLE`
    /// records; `up` and `down` refuse one that group or others may write to, or that another user owns.
    @Test func runDirectoryIsPrivateAndChecked() throws {
        let dir = try Scratch("rundir")
        defer { dir.remove() }
        let fake = try dir.write("fake-sigma", "#!/bin/sh\nexec sleep 60\n")
        _ = chmod(fake, 0o755)
        var c = try ClusterConfig.parse("hosts:\n  - {host: h1, coordinator: true, workers: 1}\nssh: {binary: \(fake)}\n")
        #expect(c.ssh.runDirectory == "~/.local/state/sigma/cluster")
        let up = DeployPlan.up(c), down = DeployPlan.down(c)
        #expect(up[0].argv.last!.hasPrefix("d=\"$HOME\"/.local/state/sigma/cluster; mkdir -p -m 700 \"$d\""), "\(up[0])")
        let home = dir.path + "/home", run = home + "/.local/state/sigma/cluster"
        let started = runRemote(up[0], home: home)
        #expect(started.status == 0 && started.out.contains("coordinator started"), "\(started)")
        #expect(mode(run) == 0o700)
        let record = ((try? String(contentsOfFile: run + "/coordinator.pid", encoding: .utf8)) ?? "").split(separator: " ", maxSplits: 2)
        let pid = try #require(record.first.flatMap { Int32($0) }, "\(record)")
        #expect(record.count == 3 && record[1] == processStartTime(pid).map { Substring($0) }, "\(record)")
        #expect(record.last?.trimmingCharacters(in: .newlines).hasSuffix("/sleep") == true, "\(record)")
        let again = runRemote(up[0], home: home)
        #expect(again.status == 3 && again.out.contains("already running (pid \(pid))"), "\(again)")

        // Writable by the group: both refuse, saying how to fix it; the process is not touched.
        _ = chmod(run, 0o770)
        for step in [up[0], down[1]] {
            let r = runRemote(step, home: home)
            #expect(r.status == 5 && r.out.contains("group or others may write") && r.out.contains("chmod 700"), "\(step.what): \(r)")
        }
        #expect(kill(pid, 0) == 0)
        _ = chmod(run, 0o700)
        let stopped = runRemote(down[1], home: home)
        #expect(stopped.status == 0 && stopped.out.contains("coordinator stopped (pid \(pid))"), "\(stopped)")
        #expect(kill(pid, 0) != 0)

        // Another user's directory (as root: one handed to nobody; else the root directory).
        if getuid() == 0 {
            let theirs = dir.path + "/theirs"
            try FileManager.default.createDirectory(atPath: theirs, withIntermediateDirectories: true)
            _ = chmod(theirs, 0o700)
            _ = chown(theirs, 65534, 65534)
            c.ssh.runDirectory = theirs
        } else {
            c.ssh.runDirectory = "/"
        }
        for step in [DeployPlan.up(c)[0], DeployPlan.down(c)[1]] {
            let r = runRemote(step, home: home)
            #expect(r.status == 5 && r.out.contains("owned by uid") && r.out.contains("not by this user"), "\(step.what): \(r)")
        }
    }

    /// `down` signals a process only if it is still the one its pid file records: a pid file naming another process
    /// (whose command line says "sigma") leaves that process alive.
    @Test func downLeavesAnUnrelatedProcessAlone() throws {
        let dir = try Scratch("decoy")
        defer { dir.remove() }
        let run = dir.path + "/run"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        _ = chmod(run, 0o700)
        let c = try ClusterConfig.parse("hosts:\n  - {host: h1, coordinator: true, workers: 1}\nssh: {run_dir: \(run)}\n")
        let decoy = Process()
        decoy.executableURL = URL(fileURLWithPath: "/bin/sh")
        decoy.arguments = ["-c", "sleep 120; true", "sigma-decoy"]
        try decoy.run()
        defer { decoy.terminate() }
        let pid = decoy.processIdentifier
        // (polled: the child may not have exec'd yet)
        var cmdline = ""
        for _ in 0..<100 where !cmdline.contains("sigma") {
            cmdline = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self)
            if !cmdline.contains("sigma") { usleep(10_000) }
        }
        #expect(cmdline.contains("sigma"))
        let start = try #require(processStartTime(pid))
        // A bare pid (what the old pid files held), a wrong start time, and the right start time with another executable.
        _ = try Scratch.write(run + "/worker-h1-1.pid", "\(pid)\n")
        _ = try Scratch.write(run + "/worker-h1-2.pid", "\(pid) 12345 /bin/sh\n")
        _ = try Scratch.write(run + "/coordinator.pid", "\(pid) \(start) /usr/local/bin/sigma\n")
        for step in DeployPlan.down(c) {
            let r = runRemote(step, home: dir.path)
            #expect(r.status == 0 && !r.out.contains("stopped"), "\(step.what): \(r)")
            #expect(r.out.contains("pid \(pid) is another process now: left alone"), "\(step.what): \(r)")
        }
        usleep(200_000)
        #expect(kill(pid, 0) == 0 && decoy.isRunning, "down signalled a process it did not start")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: run)) ?? []).filter { $0.hasSuffix(".pid") }.isEmpty)
    }
}

/// A file's permission bits.
func mode(_ path: String) -> mode_t {
    var st = stat()
    return stat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
}

/// Field 22 of /proc/PID/stat: when the process started (clock ticks after boot).
func processStartTime(_ pid: Int32) -> String? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    return fields.count > 19 ? String(fields[19]) : nil
}

extension Scratch {
    static func write(_ path: String, _ text: String) throws -> String {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

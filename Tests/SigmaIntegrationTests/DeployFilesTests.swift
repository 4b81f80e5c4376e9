import Foundation
import SigmaTransport
import Testing
import Yams

/// The recipes in deploy/ use the binary as it is: every flag they pass exists, the Kubernetes manifests are the
/// objects they claim, and the Slurm script runs a real job when `srun`, `scontrol` and `getent` are stand-ins that
/// run everything on this machine. (No container engine, Kubernetes or Slurm here: those are not exercised.)
@Suite(.serialized, .timeLimit(.minutes(5))) struct DeployFilesTests {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// `sigma CMD --help` lists every `--flag` in `args`.
    func flagsExist(_ args: [String], file: String) throws {
        guard let cmd = args.first else { return }
        let help = runTool(try sigmaBinary(), [cmd, "--help"]).out
        for a in args where a.hasPrefix("--") {
            #expect(help.contains(a + " ") || help.contains(a + "\n"), "\(file): sigma \(cmd) has no \(a)")
        }
    }

    @Test func kubernetesManifestsUseRealFlags() throws {
        let file = root + "/deploy/kubernetes/sigma.yaml"
        let docs = try Yams.load_all(yaml: String(contentsOfFile: file, encoding: .utf8)).compactMap { $0 as? [String: Any] }
        #expect(docs.map { $0["kind"] as? String ?? "?" } == ["Service", "Deployment", "Deployment"])
        var commands: [String] = []
        for d in docs where d["kind"] as? String == "Deployment" {
            let spec = (((d["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any])
            for c in (spec?["containers"] as? [[String: Any]]) ?? [] {
                let args = (c["args"] as? [Any] ?? []).map { "\($0)" }
                commands.append(args.first ?? "")
                try flagsExist(args, file: file)
            }
        }
        #expect(commands == ["coordinator", "worker"])
    }

    @Test func containerfileBuildsTheBinaryTheWayTheMakefileDoes() throws {
        let text = try String(contentsOfFile: root + "/deploy/container/Containerfile", encoding: .utf8)
        let make = try String(contentsOfFile: root + "/Makefile", encoding: .utf8)
        for package in ["libzmq3-dev", "liblz4-dev", "libopenblas-dev", "pkg-config"] {
            #expect(text.contains(package) && make.contains(package), "\(package)")
        }
        #expect(text.contains("swift build -c release") && text.contains("ENTRYPOINT [\"/usr/local/bin/sigma\"]"))
    }

    @Test func slurmScriptRunsAJobWithStandIns() async throws {
        let script = root + "/deploy/slurm/sigma.sbatch"
        #expect(runTool("/bin/bash", ["-n", script]).status == 0)
        let dir = try Scratch("slurm")
        defer { dir.remove() }
        let bin = dir.path + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        // srun: drop its options, run the command here; scontrol: this machine is the allocation; getent: IPv4 loopback.
        let stubs = [
            "srun": "#!/bin/bash\nwhile [[ \"$1\" == --* ]]; do shift; done\nexec \"$@\"\n",
            "scontrol": "#!/bin/bash\necho localhost\n",
            "getent": "#!/bin/bash\necho \"127.0.0.1 localhost\"\n",
        ]
        for (name, text) in stubs {
            try text.write(toFile: bin + "/" + name, atomically: true, encoding: .utf8)
            chmod(bin + "/" + name, 0o755)
        }
        let spec = try dir.write("job.yaml", "kind: map-reduce\ninput: {generate: range, count: 100}\nreduce: [sum]\nshards: 4\n")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script, spec]
        p.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = bin + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        env["SIGMA"] = try sigmaBinary()
        env["SIGMA_PORT"] = "\(try freePort())"
        env["SLURM_JOB_NODELIST"] = "localhost"
        env["SLURM_JOB_ID"] = "42"
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let collected = OutputCollector(out.fileHandleForReading)
        let deadline = Date().addingTimeInterval(90)
        while p.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        let text = collected.text()
        #expect(p.terminationStatus == 0, "\(text.suffix(1500))")
        // (a map-reduce result is printed — into the Slurm job's output file; ML jobs write sigma-results-JOBID/)
        #expect(text.contains("4950") && text.contains("completed"), "\(text.suffix(800))")
    }
}

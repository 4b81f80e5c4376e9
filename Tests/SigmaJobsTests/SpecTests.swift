import Foundation
import SigmaJobs
import SigmaModel
import Testing

@Suite struct SpecTests {
    /// Inputs resolve against the spec's folder; `output:` is a results folder for the command that writes them,
    /// relative to where it runs, for every kind that has one (issue 20, point 3: the train example wrote into examples/).
    @Test func outputIsRelativeToTheCommandNotTheSpecFolder() throws {
        let train = try JobSpec.parse("kind: train\nname: t\ndata: {csv: d.csv}\nmodel: {mlp: [4, 2], activation: relu}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\nbatch_size: 2\noutput: res\n",
                                      baseDirectory: "/srv/specs")
        #expect(train.output == "res")
        let embed = try JobSpec.parse("kind: embed\nname: e\nmodel: m\ninput: s.txt\noutput: out/e\n", baseDirectory: "/srv/specs")
        #expect(embed.output == "out/e")
    }

    @Test func parsesACompleteSpec() throws {
        let s = try JobSpec.parse("""
        kind: map-reduce
        name: squares
        input: {generate: normal, count: 10M, seed: 5, mean: 1, std: 2}
        map: {affine: {a: 2, b: -1}}
        reduce: [sum, mean, min, max, count, {histogram: {bins: 10, low: -5, high: 5}}]
        shard_size: 100k
        """)
        #expect(s == .mapReduce(MapReduceSpec(name: "squares", input: .normal(count: 10_000_000, seed: 5, mean: 1, std: 2),
                                              map: .affine(a: 2, b: -1),
                                              reduce: [.sum, .mean, .min, .max, .count, .histogram(bins: 10, low: -5, high: 5)],
                                              sharding: .size(100_000))))
        // JSON is accepted too, and the binary form round-trips.
        let j = try JobSpec.parse(#"{"kind": "map-reduce", "input": {"npy": "/data/x.npy"}, "reduce": "sum", "shards": 8}"#)
        #expect(j == .mapReduce(MapReduceSpec(input: .npy(path: "/data/x.npy"), reduce: [.sum], sharding: .count(8))))
        for spec in [s, j] {
            let back = try spec.encoded.withUnsafeBytes { try JobSpec.decode($0) }
            #expect(back == spec)
        }
    }

    /// `policy:` is kept by `parseFile` (the submission's scheduling), not part of the job spec itself.
    @Test func policyKeyIsTheSubmissionsNotTheJobs() throws {
        let text = "kind: map-reduce\ninput: {npy: /data/x.npy}\nreduce: sum\nshards: 8\npolicy: round-robin"
        let f = try JobSpec.parseFile(text)
        #expect(f.policy == "round-robin")
        #expect(f.spec == (try JobSpec.parse(text.replacingOccurrences(of: "\npolicy: round-robin", with: ""))))
        #expect(try JobSpec.parseFile("kind: map-reduce\ninput: {npy: /data/x.npy}\nreduce: sum").policy == nil)
    }

    /// Each bad spec's error names the field and the problem.
    @Test(arguments: [
        ("kind: map-reduce\nreduce: sum", "input", "missing"),
        ("kind: mapreduce\ninput: {npy: a.npy}\nreduce: sum", "kind", "unknown job kind"),
        ("kind: map-reduce\ninput: {generate: uniform, count: -5}\nreduce: sum", "input.count", "non-negative integer"),
        ("kind: map-reduce\ninput: {generate: uniform, count: 0}\nreduce: sum", "input.count", "≥ 1"),
        ("kind: map-reduce\ninput: {generate: zipf, count: 10}\nreduce: sum", "input.generate", "unknown generator"),
        ("kind: map-reduce\ninput: {generate: uniform, count: 10, low: 2, high: 1}\nreduce: sum", "input.high", "greater than low"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nreduce: median", "reduce", "unknown reducer 'median'"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nreduce: [sum, {histogram: {bins: 0, low: 0, high: 1}}]", "reduce[1].histogram.bins", "≥ 1"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nreduce: [{histogram: {bins: 4, low: 1, high: 1}}]", "reduce[0].histogram.high", "greater than low"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nmap: cube\nreduce: sum", "map", "unknown function 'cube'"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nreduce: sum\nshards: 5\nshard_size: 3", "shards", "either"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nreduce: sum\nshardz: 5", "shardz", "unknown field"),
        ("kind: map-reduce\ninput: {npy: a.npy, seed: 1}\nreduce: sum", "input.seed", "unknown field"),
        ("kind: map-reduce\ninput: {generate: range, count: 10G}\nreduce: sum\nshard_size: 1", "shard_size", "limit"),
        ("[1, 2", "(document)", "not valid"),
        ("kind: embed\nmodel: m\ninput: s.txt\ninput_transport: ftp", "input_transport", "expected shared"),
        ("kind: map-reduce\ninput: {npy: a.npy}\nreduce: sum\npolicy: fastest", "policy", "unknown scheduling policy 'fastest'; expected one of: latency-aware, least-loaded, round-robin"),
        ("kind: train\nmodel: {mlp: [4, 2]}\ndata: {x: x.npy, y: y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 5\ncheckpoint_every_seconds: 30",
         "checkpoint_dir", "checkpoint_every_seconds needs a directory"),
        ("kind: train\nmodel: {mlp: [4, 2]}\ndata: {x: x.npy, y: y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 5\ncheckpoint_every_seconds: -1\ncheckpoint_dir: ck",
         "checkpoint_every_seconds", "must be between 0 and"),
    ])
    func badSpecsNameTheField(_ text: String, _ field: String, _ problem: String) {
        #expect {
            _ = try JobSpec.parse(text)
        } throws: { e in
            guard let s = e as? SpecError else { return false }
            return s.field == field && s.problem.contains(problem)
        }
    }

    /// An unknown key is named by its path, with the known key it is nearest to (none when nothing is near).
    @Test func unknownKeysSuggestTheNearestKnownOne() {
        let train = "kind: train\nmodel: {mlp: [4, 2]}\ndata: {x: x.npy, y: y.npy}\nsteps: 1\n"
        #expect { _ = try JobSpec.parse(train + "optimizer: {sgd: {lrr: 0.1}}\n") } throws: { e in
            (e as? SpecError) == SpecError(field: "optimizer.sgd.lrr", problem: "unknown field; did you mean 'lr'?")
        }
        #expect { _ = try JobSpec.parse(train + "optimizer: {sgd: {lr: 0.1}}\nbatchsize: 4\n") } throws: { e in
            (e as? SpecError) == SpecError(field: "batchsize", problem: "unknown field; did you mean 'batch_size'?")
        }
        #expect { _ = try JobSpec.parse(train + "optimizer: {sgd: {lr: 0.1}}\ncolour: red\n") } throws: { e in
            (e as? SpecError) == SpecError(field: "colour", problem: "unknown field")
        }
    }

    /// The files a job's workers read, in the order the coordinator serves them, and the same spec reading local
    /// copies (a model folder by a folder of copies); `input_transport` survives the wire form.
    @Test func inputFilesAndLocalizedSpecs() throws {
        let train = try JobSpec.parse("kind: train\nmodel: {mlp: [4, 2]}\ndata: {x: /d/x.npy, y: /d/y.npy}\noptimizer: {sgd: {lr: 0.1}}\nsteps: 1\ninput_transport: coordinator\n")
        #expect(train.inputTransport == .coordinator)
        #expect(try train.encoded.withUnsafeBytes { try JobSpec.decode($0) } == train)   // (the bytes only while they live)
        #expect(try train.workerInputFiles { _ in true } == ["/d/x.npy", "/d/y.npy"])
        guard let t = TrainKind.spec(in: try train.localized(["/d/x.npy": "/c/1/x.npy", "/d/y.npy": "/c/2/y.npy"])) else { Issue.record("kind"); return }
        #expect(t.data.x == "/c/1/x.npy" && t.data.y == "/c/2/y.npy" && t.inputTransport == .coordinator)
        let infer = try JobSpec.parse("kind: infer\nmodel: {mlp: [4, 2], weights: /m/w.safetensors}\ndata: {csv: /d/a.csv}\n")
        #expect(infer.inputTransport == .shared)
        #expect(try infer.workerInputFiles { _ in true } == ["/d/a.csv", "/m/w.safetensors"])
        guard let p = InferKind.spec(in: try infer.localized(["/m/w.safetensors": "/c/w.safetensors"])) else { Issue.record("kind"); return }
        #expect(p.model.weights == "/c/w.safetensors" && p.data.csv == "/d/a.csv")
        let embed = try JobSpec.parse("kind: embed\nmodel: /m/minilm\ninput: /d/s.txt\ninput_transport: coordinator\n")
        #expect(try JobKinds.standard.open(embed).paths.first { $0.folder != nil }?.path == "/m/minilm")
        #expect(try embed.workerInputFiles { _ in false } == ["/d/s.txt", "/m/minilm/config.json", "/m/minilm/vocab.txt", "/m/minilm/model.safetensors"])
        #expect(try embed.workerInputFiles { $0.hasSuffix("sentence_bert_config.json") }.last == "/m/minilm/sentence_bert_config.json")
        guard let e = EmbedKind.spec(in: try embed.localized(["/m/minilm": "/c/folder-1", "/d/s.txt": "/c/s.txt"])) else { Issue.record("kind"); return }
        #expect(e.model == "/c/folder-1" && e.input == "/c/s.txt")
        // Map-reduce ships its npy input the same way; a generated input has nothing to ship.
        let mr = try JobSpec.parse("kind: map-reduce\ninput: {npy: /d/v.npy}\nreduce: sum\ninput_transport: coordinator\n")
        #expect(mr.inputTransport == .coordinator)
        #expect(try mr.encoded.withUnsafeBytes { try JobSpec.decode($0) } == mr)
        #expect(try mr.workerInputFiles { _ in true } == ["/d/v.npy"])
        guard let m = MapReduceKind.spec(in: try mr.localized(["/d/v.npy": "/c/3/v.npy"])) else { Issue.record("kind"); return }
        #expect(m.input == .npy(path: "/c/3/v.npy") && m.inputTransport == .coordinator)
        let plain = try JobSpec.parse("kind: map-reduce\ninput: {npy: /d/v.npy}\nreduce: sum\n")
        #expect(plain.inputTransport == .shared && plain.encoded != mr.encoded)
        #expect(try plain.encoded.withUnsafeBytes { try JobSpec.decode($0) } == plain)
        #expect { _ = try JobSpec.parse("kind: map-reduce\ninput: {generate: range, count: 5}\nreduce: sum\ninput_transport: coordinator\n") }
            throws: { "\($0)".contains("input_transport") && "\($0)".contains("generated") }
    }

    /// One read gives both the provenance digest and the SHA-256, equal to reading the file for each, for sizes
    /// around the 4 MiB pieces (the digest folds each piece's tail bytes separately).
    @Test func oneReadGivesBothDigests() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-digests-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SystemRandomNumberGenerator()
        for size in [0, 7, 8, 4 << 20, (4 << 20) + 13, (8 << 20) + 5] {
            let path = dir + "/f\(size)"
            try Data((0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }).write(to: URL(fileURLWithPath: path))
            let both = try Digest.fileAndSHA256(path)
            let sha = try SHA256.file(path)
            #expect(both.digest == (try Digest.file(path)) && both.sha256 == sha.hex && both.size == UInt64(size) && sha.size == UInt64(size))
            #expect(try Digest.files([path, path], known: [path: both.digest]) == (try Digest.files([path, path])))
        }
        #expect(try Digest.files(["/nonexistent"], known: ["/nonexistent": "x"]) == "x")
    }

    /// SHA-256 against FIPS 180-4's examples, fed whole and in uneven pieces.
    @Test func sha256MatchesTheStandardsExamples() {
        let cases: [([UInt8], String)] = [
            ([], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (Array("abc".utf8), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
            ([UInt8](repeating: 0x61, count: 1_000_000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
        ]
        for (bytes, hex) in cases {
            #expect(SHA256.hex(of: bytes) == hex, "\(bytes.count) bytes")
            var s = SHA256()
            var i = 0, step = 1
            while i < bytes.count {
                s.update(Array(bytes[i..<min(i + step, bytes.count)]))
                i += step
                step = step * 3 % 199 + 1
            }
            #expect(SHA256.hex(s.finish()) == hex, "\(bytes.count) bytes in pieces")
        }
    }

    @Test func clusterConfigParsesAndRejects() throws {
        let c = try ClusterConfig.parse("coordinator: {listen: 127.0.0.1, port: 7800, heartbeat_interval_ms: 250, liveness: 4}\nworker: {threads: 2}")
        #expect(c.port == 7800 && c.heartbeatInterval == 250 && c.liveness == 4 && c.workerThreads == 2)
        #expect(c.coordinator == "tcp://127.0.0.1:7800")
        #expect(throws: SpecError.self) { _ = try ClusterConfig.parse("coordinator: {port: 70000}") }
        #expect(throws: SpecError.self) { _ = try ClusterConfig.parse("coordinatr: {port: 7}") }
        // Scheduler and dashboard settings.
        let s = try ClusterConfig.parse("coordinator: {policy: round-robin, hedging: false, step_timeout_s: 90, http_listen: 0.0.0.0, http_port: 9000}")
        #expect(s.policy == "round-robin" && !s.hedging && s.stepTimeout == 90 && s.httpListen == "0.0.0.0" && s.httpPort == 9000)
        #expect { _ = try ClusterConfig.parse("coordinator: {hedging: maybe}") } throws: { "\($0)".contains("coordinator.hedging") }
        #expect(try ClusterConfig.parse("coordinator: {insecure: true}").insecure && !s.insecure)
        #expect { _ = try ClusterConfig.parse("coordinator: {http_port: 70000}") } throws: { "\($0)".contains("coordinator.http_port") }
    }
}

@Suite struct DigestTests {
    /// A file's digest depends on every byte and on the length; equal files give equal digests.
    @Test func fileDigestFollowsTheContent() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-digest-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bytes = [UInt8]((0..<100_003).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        func write(_ name: String, _ b: [UInt8]) -> String {
            let p = dir + "/" + name
            FileManager.default.createFile(atPath: p, contents: Data(b))
            return p
        }
        let a = try Digest.file(write("a", bytes))
        #expect(a.count == 16)
        #expect(try Digest.file(write("a2", bytes)) == a)
        bytes[50_000] ^= 1
        #expect(try Digest.file(write("b", bytes)) != a)
        bytes[50_000] ^= 1
        bytes[100_002] ^= 0x80   // the tail beyond the last whole word
        #expect(try Digest.file(write("c", bytes)) != a)
        #expect(try Digest.file(write("d", bytes + [0])) != (try Digest.file(write("e", bytes))))
        #expect(throws: SpecError.self) { try Digest.file(dir + "/missing") }
        #expect(try Digest.files([]) == "")
        #expect(try Digest.files([dir + "/a", dir + "/b"]) != (try Digest.files([dir + "/b", dir + "/a"])))
    }
}

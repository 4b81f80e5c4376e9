import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import Testing

/// Tests quote the clause of docs/protocol.md they check.
@Suite struct CodecTests {
    // §3.1 "The header frame: signature 0x53, version, type, flags, then the fields in little-endian order."
    @Test func goldenBytesHeartbeat() {
        var hb = Heartbeat(sent: 0x0102030405060708, echo: 1, held: 2, running: 3, queued: 4, cpu: 0.5, rss: 5)
        hb.rawOut = 6
        hb.wireOut = 7
        hb.available = 8
        let frames = Codec.encode(.heartbeat(hb))
        #expect(frames.count == 1)
        #expect(frames[0].bytes == [0x53, 0x05, 0x03, 0x00,
                                    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
                                    1, 0, 0, 0, 0, 0, 0, 0,
                                    2, 0, 0, 0, 0, 0, 0, 0,
                                    3, 0, 0, 0,
                                    4, 0, 0, 0,
                                    0, 0, 0, 0, 0, 0, 0xE0, 0x3F,
                                    5, 0, 0, 0, 0, 0, 0, 0,
                                    6, 0, 0, 0, 0, 0, 0, 0,
                                    7, 0, 0, 0, 0, 0, 0, 0,
                                    8, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func goldenBytesAssignAndReady() throws {
        let a = Codec.encode(.assign(Assign(job: 7, shard: 2, attempt: 1, start: 256, count: 128, round: 5)))
        #expect(a.count == 1)
        #expect(a[0].bytes == [0x53, 0x05, 0x04, 0x00,
                               7, 0, 0, 0, 0, 0, 0, 0,
                               2, 0, 0, 0,
                               1, 0, 0, 0,
                               0, 1, 0, 0, 0, 0, 0, 0,
                               128, 0, 0, 0, 0, 0, 0, 0,
                               5, 0, 0, 0,
                               0])
        let withParams = Codec.encode(.assign(Assign(job: 7, shard: 2, attempt: 1, start: 256, count: 128, round: 5, withParams: true)))
        #expect(withParams[0].bytes.last == 1)
        #expect(try Codec.decode(withParams) == .assign(Assign(job: 7, shard: 2, attempt: 1, start: 256, count: 128, round: 5, withParams: true)))
        let p = Codec.encode(.params(Params(job: 7, version: 3, payload: Frame([1, 2, 3, 4]))))
        #expect(p.count == 2)
        #expect(p[0].bytes == [0x53, 0x05, 0x09, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0])
        #expect(p[1].bytes == [1, 2, 3, 4])
        let r = Codec.encode(.ready(Ready(workerID: "w1", heartbeatInterval: 1000, liveness: 3, build: "b")))
        #expect(r[0].bytes == [0x53, 0x05, 0x02, 0x00, 2, 0, 0x77, 0x31, 0xE8, 0x03, 0, 0, 3, 0, 1, 0, 0x62, 0, 0])
    }

    @Test func goldenBytesHello() {
        let h = Codec.encode(.hello(Hello(build: "s", cores: 2, slots: 1, memory: 1024, host: "h", name: "n", instance: "i", features: "f")))
        #expect(h[0].bytes == [0x53, 0x05, 0x01, 0x00, 1, 0, 0x73, 2, 0, 1, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0,
                               1, 0, 0x68, 1, 0, 0x6E, 1, 0, 0x69, 1, 0, 0x66])
    }

    static let spec = JobSpec.mapReduce(MapReduceSpec(name: "t", input: .uniform(count: 1000, seed: 1, low: 0, high: 1),
                                                      map: .square, reduce: [.sum, .histogram(bins: 4, low: 0, high: 1)],
                                                      sharding: .count(10)))

    static let trainSpec = JobSpec.train(TrainJob(name: "t", model: ModelSpec(mlp: [4, 3]), data: LabeledDataSpec(csv: "/d.csv"),
                                                  optimizer: OptimizerSpec(kind: "adam", lr: 0.01), steps: 5, batchSize: 8, microBatch: 2))
    static let embedSpec = JobSpec.embed(EmbedJob(model: "/m", input: "/lines.txt", batchSize: 16))

    static let all: [Message] = [
        .hello(Hello(cores: 8, slots: 4, memory: 1 << 34, host: "host-a", name: "w", instance: "abc", features: "map-reduce")),
        .ready(Ready(workerID: "w3", heartbeatInterval: 500, liveness: 4)),
        .heartbeat(Heartbeat(sent: 99, echo: 42, held: 7, running: 2, queued: 1)),
        .heartbeat(Heartbeat(sent: 99, echo: 42, held: 7, running: 2, queued: 1, cpu: 187.5, rss: 1 << 30)),
        .assign(Assign(job: 1, shard: 2, attempt: 3, start: 4, count: 5, spec: spec)),
        .assign(Assign(job: 1, shard: 2, attempt: 3, start: 4, count: 5, round: 17)),
        .assign(Assign(job: 1, shard: 2, attempt: 3, start: 4, count: 5, round: 2, spec: trainSpec)),
        .assign(Assign(job: 1, shard: 2, attempt: 3, start: 4, count: 5, spec: embedSpec)),
        .assign(Assign(job: 1, shard: 2, attempt: 3, start: 4, count: 5, round: 9, withParams: true, spec: trainSpec,
                       collective: CollectiveStep(segment: 3, rank: 1, snapshot: true,
                                                  peers: [PeerAddress(endpoint: "tcp://10.0.0.1:7001", key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
                                                          PeerAddress(endpoint: "tcp://10.0.0.2:7001", key: "")]))),
        .assign(Assign(job: 1, shard: 2, attempt: 3, start: 4, count: 5, round: 9,
                       collective: CollectiveStep(segment: 0, rank: 0, snapshot: false,
                                                  peers: [PeerAddress(endpoint: "a", memoryGroup: 1), PeerAddress(endpoint: "b"),
                                                          PeerAddress(endpoint: "c", memoryGroup: 65_535)]))),
        .params(Params(job: 1, version: 17, payload: Frame([0, 0, 128, 63]))),
        .result(ShardResult(job: 1, shard: 2, attempt: 1, status: .ok, computeTime: 12, payload: Frame([1, 2, 3]))),
        .result(ShardResult(job: 1, shard: 2, attempt: 1, status: .failed, error: "boom")),
        .cancel(Cancel(job: 9, shard: Cancel.allShards, attempt: 0)),
        .disconnect(reason: "bye"),
        .drain(reason: "SIGTERM"),
        .error(ErrorReply(.notFound, request: 5, "no job 5")),
        .submit(Submit(request: 11, options: [.watch, .pushResult], spec: spec)),
        .submit(Submit(request: 11, options: [.pushResult], spec: spec, key: "nightly-7")),
        .cancelJob(request: 15, job: 3),
        .detail(request: 16, job: 3, logFrom: 2, attempts: true),
        .detailReply(request: 16, JobDetail(
            job: .init(id: 3, name: "j", kind: "train", state: .failed, done: 1, total: 2, running: 0, reruns: 1, duplicates: 0,
                       elapsed: 9, error: "boom"),
            policy: "latency-aware", specDigest: "00ff", inputDigest: "", modelDigest: "", logFrom: 2, logTotal: 3,
            logs: [JobLogLine(at: 5, level: .warning, text: "job 3: shard 1 failed")], attemptsDropped: 0,
            attempts: [AttemptRecord(round: 1, shard: 4, attempt: 2, start: 8, count: 8, worker: "w2", host: "h", hedge: true,
                                     queued: 1, started: 2, finished: 3, compute: 1, outcome: .failed, error: "boom")])),
        .drainWorker(request: 17, worker: "w2"),
        .fileGet(FileGet(request: 18, job: 3, index: 1, offset: 4 << 20, length: 1 << 20)),
        .fileData(FileData(request: 18, job: 3, index: 1, files: 2, path: "/data/x.npy", size: 5 << 20, sha256: String(repeating: "0f", count: 32),
                           offset: 4 << 20, payload: Frame([1, 2, 3]))),
        .fileData(FileData(request: 19, job: 3, index: 0, files: 1, path: "/data/y.npy", size: 0, sha256: String(repeating: "e", count: 64), offset: 0)),
        .accept(Accept(request: 11, job: 3, shards: 10)),
        .status(request: 12),
        .statusReply(request: 12, ClusterStatus(uptime: 5, workers: [
            .init(id: "w1", name: "n", host: "h", cores: 2, slots: 1, state: "ready", inFlight: 0, rtt: 50_000, lastSeen: 1, shardsDone: 9)],
            jobs: [.init(id: 1, name: "j", kind: "map-reduce", state: .running, done: 1, total: 2, running: 1, reruns: 0,
                         duplicates: 0, elapsed: 3, error: "")], queuedShards: 4)),
        .statusReply(request: 12, {
            var w = ClusterStatus.Worker(id: "w2", name: "n", host: "h", cores: 2, slots: 1, state: "ready", inFlight: 0, rtt: 0, lastSeen: 1, shardsDone: 0)
            (w.blas, w.blasChoice, w.blasBest) = ("Prescott", "openblas", "Cooperlake")
            return ClusterStatus(uptime: 5, workers: [w], jobs: [], queuedShards: 0)
        }()),
        .watch(request: 13, job: 3),
        .progress(JobProgress(request: 13, job: 3, state: .running, done: 4, total: 10, running: 2, reruns: 1)),
        .progress(JobProgress(request: 13, job: 3, state: .running, done: 1, total: 2, running: 1, reruns: 0, step: 7, steps: 90,
                              loss: 0.25, accuracy: 0.875, workers: 2, stepsPerEpoch: 23)),
        .progress({
            var p = JobProgress(request: 13, job: 4, state: .running, done: 1, total: 2, running: 1, reruns: 0, step: 9, steps: 90, loss: 0.5)
            p.evalLoss = 0.0625   // a regressor's held-out mean squared error, no accuracy
            return p
        }()),
        .statusReply(request: 12, {
            var j = ClusterStatus.Job(id: 2, name: "t", kind: "train", state: .running, done: 1, total: 2, running: 1, reruns: 0,
                                      duplicates: 0, elapsed: 3, error: "")
            (j.step, j.steps, j.stepsPerEpoch, j.rate, j.secondsLeft, j.evalLoss) = (24, 400, 23, 1500, 2.5, 0.125)
            return ClusterStatus(uptime: 5, workers: [], jobs: [j], queuedShards: 0)
        }()),
        .fetch(request: 14, job: 3),
        .jobResult(JobOutcome(request: 14, job: 3, state: .completed, shards: 10, duplicates: 1, reruns: 2, elapsed: 100,
                              payload: Frame([9, 9]))),
        .jobResult(JobOutcome(request: 15, job: 4, state: .completed, shards: 10, elapsed: 100, size: 1 << 30)),
        .resultGet(ResultGet(request: 16, job: 4, offset: 16 << 20, length: 16 << 20)),
        .resultData(ResultData(request: 16, job: 4, size: 1 << 30, offset: 16 << 20, payload: Frame([1, 2, 3]))),
        .deploy(request: 17, spec: JobSpec(kind: "serve", name: "digits", body: [1, 2])),
        .undeploy(request: 18, name: "digits"),
        .deploymentsGet(request: 19),
        .deployments(request: 19, [{
            var d = DeploymentStatus(name: "digits", model: "mlp", replicasWanted: 2, queued: 3, queueLimit: 1024, maxBatch: 32, maxWaitMs: 5)
            (d.inputs, d.width, d.requests, d.p50Ms, d.withdrawn, d.draining) = (64, 3, 7, 0.5, 2, true)
            d.labels = ["zero", "one", "twö"]
            d.replicas = [.init(worker: "w1", name: "a", state: "ready", inFlight: 1, batches: 9), .init(worker: "w2", name: "b", state: "failed", error: "no file")]
            return d
        }()]),
        .predict(PredictRequest(request: 20, name: "digits", timeoutMs: 100, input: .rows(width: 2, values: [1, 2, 3, -0.5]))),
        .predict(PredictRequest(request: 21, name: "minilm", input: .texts(["a", "", "ünïcode"]))),
        .prediction(Prediction(request: 20, rows: 2, width: 1, queueNanos: 5, computeNanos: 6, batchRows: 4, worker: "w1", values: [0.25, -1])),
        .prediction(Prediction(request: 22, rows: 2, width: 2, worker: "w2", labels: ["négatif", "positive"], values: [1, 0, -1, 3])),
        .load(LoadModel(deployment: 1, name: "digits", spec: JobSpec(kind: "serve", name: "digits", body: [3]))),
        .loaded(ModelLoaded(deployment: 1, ok: false, error: "no such file")),
        .loaded(ModelLoaded(deployment: 2, ok: true, width: 3, labels: ["cat", "dog", "ünïcorn"])),
        .unload(deployment: 1),
        .batch(ServeBatch(deployment: 1, batch: 9, input: .texts(["x"]))),
        .batchResult(ServeBatchResult(batch: 9, ok: true, computeNanos: 10, queued: 1, rows: 1, width: 2, values: [1, 2])),
        .withdraw(request: 77),
    ]

    // A training job is told in steps and epochs; a last partial epoch counts.
    /// A row's class name is its largest output's — the first on ties, NaN never the largest — and a class past the
    /// names is named by its index; no names, no labels.
    @Test func predictionLabelsNameEachRowsLargestOutput() {
        let names = ["a", "b"]
        #expect(Prediction.labels([0, 1, 0, 5, 2, 2, 0, 1, 3, 4, 4, 0][...], width: 3, names: names) == ["b", "a", "2", "a"])
        #expect(Prediction.labels([.nan, 1, 2, .nan][...], width: 2, names: names) == ["b", "a"])
        #expect(Prediction.labels([1, 2][...], width: 2, names: []) == [])
        #expect(Prediction.labels([1, 2, 3][...], width: 2, names: names) == [])
    }

    @Test func trainingPositionsCountEpochs() {
        #expect(TrainingPosition(step: 24, steps: 400, stepsPerEpoch: 23).description == "step 24/400, epoch 2/18")
        #expect(TrainingPosition(step: 23, steps: 46, stepsPerEpoch: 23).description == "step 23/46, epoch 1/2")
        #expect(TrainingPosition(step: 0, steps: 46, stepsPerEpoch: 23).description == "step 0/46, epoch 1/2")
        #expect(TrainingPosition(step: 5, steps: 10, stepsPerEpoch: 0).description == "step 5/10")
    }

    // §3 every message type round-trips.
    @Test func everyMessageRoundTrips() throws {
        for m in Self.all {
            #expect(try Codec.decode(Codec.encode(m)) == m, "\(m.type.name)")
        }
        #expect(Set(Self.all.map(\.type)) == Set(MessageType.allCases))
    }

    // §2 "A peer MUST reject a message whose version byte differs from its own, naming both versions."
    @Test func wrongVersionIsRejectedNamingBothVersions() {
        var bytes = Codec.encode(.hello(Hello(cores: 1, slots: 1, memory: 1, host: "h", name: "n", instance: "i", features: "")))[0].bytes
        bytes[1] = 1   // a peer of the previous version
        #expect {
            _ = try Codec.decode([Frame(bytes)])
        } throws: { e in
            let d = e as! DecodeError
            return d.code == .versionNotSupported && d.type == .hello && d.message.contains("version 1 is not supported") && d.message.contains("speaks version \(sigmaProtocolVersion)")
        }
    }

    // §3.1 "Every truncated message is rejected."
    @Test func everyTruncationIsRejected() {
        for m in Self.all {
            let frames = Codec.encode(m)
            let header = frames[0].bytes
            for cut in 0..<header.count {
                #expect(throws: DecodeError.self) {
                    _ = try Codec.decode([Frame(Array(header.prefix(cut)))] + frames.dropFirst())
                }
            }
            if frames.count > 1 {   // payload truncated (where the payload is structured)
                let p = frames[1].bytes
                if case .submit = m {
                    for cut in 0..<p.count {
                        #expect(throws: DecodeError.self) { _ = try Codec.decode([frames[0], Frame(Array(p.prefix(cut)))]) }
                    }
                }
            }
        }
    }

    // §5 limits.
    @Test func oversizedAndMalformedAreRejected() {
        var limits = ProtocolLimits()
        limits.maxPayload = 100
        let big = Codec.encode(.result(ShardResult(job: 1, shard: 0, attempt: 1, status: .ok, payload: Frame([UInt8](repeating: 1, count: 101)))))
        #expect(throws: DecodeError.self) { _ = try Codec.decode(big, limits: limits) }
        let header = [UInt8](repeating: 0x53, count: 70_000)
        #expect { _ = try Codec.decode([Frame(header)]) } throws: { ($0 as! DecodeError).code == .tooLarge }
        let three = Codec.encode(.status(request: 1)) + [Frame([1]), Frame([2])]
        #expect { _ = try Codec.decode(three) } throws: { ($0 as! DecodeError).code == .tooLarge }
        #expect { _ = try Codec.decode([Frame([0x53, 5, 0x7F, 0])]) } throws: { ($0 as! DecodeError).message.contains("unknown message type 0x7f") }
        #expect { _ = try Codec.decode([Frame([0x41, 1, 1, 0])]) } throws: { ($0 as! DecodeError).message.contains("signature") }
        #expect { _ = try Codec.decode([]) } throws: { ($0 as! DecodeError).message.contains("empty") }
        #expect { _ = try Codec.decode([Frame([0x53, 5, 0x12, 0x80, 0, 0, 0, 0, 0, 0, 0, 0])]) } throws: { ($0 as! DecodeError).message.contains("flag") }
        var trailing = Codec.encode(.status(request: 1))[0].bytes
        trailing.append(0)
        #expect { _ = try Codec.decode([Frame(trailing)]) } throws: { ($0 as! DecodeError).message.contains("trailing") }
        let submitNoPayload = [Codec.encode(.submit(Submit(request: 1, options: [], spec: Self.spec)))[0]]
        #expect { _ = try Codec.decode(submitNoPayload) } throws: { ($0 as! DecodeError).message.contains("missing payload") }
        let compressedNoDecompressor = Frame([0x53, 5, 0x05, 0x01] + Array(Codec.encode(.result(ShardResult(job: 1, shard: 0, attempt: 1, status: .ok)))[0].bytes.dropFirst(4)))
        #expect(throws: DecodeError.self) { _ = try Codec.decode([compressedNoDecompressor, Frame([1, 2, 3, 4, 5])]) }
    }

    /// FILE-DATA that does not describe a file consistently is refused naming the field, with the request echoed
    /// (so the worker's waiting fetch fails at once).
    @Test func inconsistentFileDataIsRejected() {
        func data(index: UInt32 = 0, files: UInt32 = 1, size: UInt64 = 10, sha: String = String(repeating: "a", count: 64),
                  offset: UInt64 = 0, payload: [UInt8] = [1]) -> [Frame] {
            Codec.encode(.fileData(FileData(request: 21, job: 1, index: index, files: files, path: "p", size: size, sha256: sha,
                                            offset: offset, payload: payload.isEmpty ? .empty : Frame(payload))))
        }
        for (frames, field) in [(data(index: 1, files: 1), "index"), (data(sha: "ABC"), "sha256"),
                                (data(sha: String(repeating: "A", count: 64)), "sha256"), (data(size: 10, offset: 11, payload: []), "offset"),
                                (data(size: 10, offset: 8, payload: [1, 2, 3]), "offset")] {
            #expect {
                _ = try Codec.decode(frames)
            } throws: { e in
                let d = e as! DecodeError
                return d.type == .fileData && d.message.contains(field) && d.request == 21
            }
        }
    }

    /// JOB-RESULT whose payload is not its stated size, and RESULT-DATA running past the result's end, are refused
    /// naming the field.
    @Test func inconsistentResultSizesAreRejected() {
        let cases: [([Frame], MessageType, String)] = [
            (Codec.encode(.jobResult(JobOutcome(request: 1, job: 1, state: .completed, payload: Frame([1, 2]), size: 3))), .jobResult, "size"),
            (Codec.encode(.resultData(ResultData(request: 2, job: 1, size: 10, offset: 9, payload: Frame([1, 2])))), .resultData, "offset"),
            (Codec.encode(.resultData(ResultData(request: 3, job: 1, size: 10, offset: 11))), .resultData, "offset"),
        ]
        for (frames, type, field) in cases {
            #expect {
                _ = try Codec.decode(frames)
            } throws: { e in
                let d = e as! DecodeError
                return d.type == type && d.message.contains(field)
            }
        }
    }

    // §3.3 and §5.1: an invalid job spec in SUBMIT earns 422 naming the field: the envelope decodes, and the job's kind refuses
    // the spec when the coordinator's shell prepares it; the ERROR echoes the request id, so the client's call gets it.
    @Test func invalidSpecInSubmitNamesField() throws {
        let bad = JobSpec.mapReduce(MapReduceSpec(input: .uniform(count: 10, seed: 1, low: 1, high: 0), reduce: [.sum]))
        guard case .submit(let s) = try Codec.decode(Codec.encode(.submit(Submit(request: 1, options: [], spec: bad)))) else {
            Issue.record("not a SUBMIT")
            return
        }
        var core = CoordinatorCore(now: 0)
        let client = PeerID([1])
        #expect(core.handle(.received(client, .submit(s)), now: 1).contains { if case .resolveInput = $0 { true } else { false } })
        let prepared: Result<any RoundDriver, JobError>
        do { prepared = .success(try JobKinds.standard.prepare(s.spec, roots: .currentDirectory())) } catch { prepared = .failure(error as! JobError) }
        let actions = core.handle(.inputResolved(client, s, prepared), now: 2)
        #expect(actions.contains { if case .send(_, .error(let e)) = $0 { e.request == 1 && e.code == 422 && e.message.contains("input.high") } else { false } })
        // An envelope that is not a spec (a kind name no kind can have) is refused by the decoder, naming the field.
        let odd = JobSpec(kind: "Not A Kind", name: "x", body: Array("{}".utf8))
        #expect { _ = try Codec.decode(Codec.encode(.submit(Submit(request: 2, options: [], spec: odd)))) } throws: { e in
            let d = e as! DecodeError
            return d.code == .invalidSpec && d.message.contains("spec.kind") && d.request == 2
        }
    }
}

/// A collective ASSIGN whose rank is not among its peers, or with fewer than two peers, is refused naming the field.
@Test func collectiveAssignWithoutItsRankIsRefused() throws {
    func assign(rank: UInt16, peers: UInt16) -> [Frame] {
        var w = ByteWriter()
        w.u8(0x53); w.u8(sigmaProtocolVersion); w.u8(MessageType.assign.rawValue); w.u8(0)
        w.u64(1); w.u32(0); w.u32(1); w.u64(0); w.u64(4); w.u32(0); w.u8(2)
        w.u32(0); w.u16(rank); w.u8(0); w.u16(peers)
        for _ in 0..<peers { w.string("tcp://127.0.0.1:1"); w.string(""); w.u16(0) }
        return [Frame(w.bytes)]
    }
    #expect(decodeError(assign(rank: 2, peers: 2))?.message.contains("collective.peers") == true)
    #expect(decodeError(assign(rank: 0, peers: 1))?.message.contains("collective.peers") == true)
    #expect(decodeError(assign(rank: 1, peers: 2)) == nil)
}

func decodeError(_ frames: [Frame]) -> DecodeError? {
    do {
        _ = try Codec.decode(frames)
        return nil
    } catch {
        return error as? DecodeError
    }
}

/// §3: truncated, oversized, wrong-version and unknown-type frames each earn an ERROR reply from the coordinator.
@Suite struct RejectionReplyTests {
    @Test(arguments: [
        ("truncated", [Frame([0x53, 0x05, 0x12, 0x00, 1, 2, 3])], UInt16(400)),
        ("oversized header", [Frame([0x53, 0x05, 0x12, 0x00] + [UInt8](repeating: 0, count: 70_000))], UInt16(413)),
        ("too many frames", [Frame([0x53, 0x05, 0x12, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]), Frame([1]), Frame([2])], UInt16(413)),
        ("wrong version", [Frame([0x53, 0x07, 0x03, 0x00] + [UInt8](repeating: 0, count: 32))], UInt16(505)),
        ("unknown type", [Frame([0x53, 0x05, 0x66, 0x00])], UInt16(400)),
        ("not Sigma", [Frame(Array("GET / HTTP/1.1".utf8))], UInt16(400)),
    ])
    func coordinatorRepliesWithError(_ name: String, _ frames: [Frame], _ code: UInt16) throws {
        var core = CoordinatorCore(now: 0)
        let peer = PeerID([0, 1, 2, 3, 4])
        let err = try #require(decodeError(frames), "\(name) must not decode")
        let actions = core.handle(.rejected(peer, err), now: 1)
        let replies = actions.compactMap { a -> ErrorReply? in if case .send(peer, .error(let e)) = a { e } else { nil } }
        #expect(replies.count == 1, "\(name)")
        #expect(replies.first?.code == code, "\(name): \(replies.first?.message ?? "")")
    }
}

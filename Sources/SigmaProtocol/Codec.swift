import SigmaModel

/// Size limits every peer enforces on what it receives (docs/protocol.md §5).
public struct ProtocolLimits: Sendable, Equatable {
    /// Largest header frame, bytes.
    public var maxHeader: Int = 64 * 1024
    /// Largest payload frame, bytes, before and after decompression.
    public var maxPayload: Int = 256 * 1024 * 1024
    /// Most frames in one message (header + payloads).
    public var maxFrames: Int = 2
    public init() {}
    public static let standard = ProtocolLimits()
}

/// Why a message was rejected, and what error reply it earns.
public struct DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorReply.Code
    public var type: MessageType?
    public var message: String
    /// The client's request id when it could be read (so the ERROR reply reaches the waiting request), else 0.
    public var request: UInt64 = 0
    public init(_ code: ErrorReply.Code, _ type: MessageType?, _ message: String) {
        self.code = code
        self.type = type
        self.message = message
    }
    public var description: String { (type.map { "\($0.name): " } ?? "") + message }
}

/// Header frame layout: `signature 0x53 ('S') | version u8 | type u8 | flags u8 | body…` (little-endian fields).
public enum Codec {
    public static let signature: UInt8 = 0x53
    /// flags bit 0: payload frames are LZ4 blocks prefixed by their u32 decompressed size.
    public static let flagCompressed: UInt8 = 0x01
    /// flags bit 1: the payload frame is a shared-memory reference (same-host peers that agreed on it; §6).
    public static let flagShared: UInt8 = 0x02
    /// Payloads below this size are never compressed, bytes.
    public static let compressionThreshold = 4096

    // MARK: encode

    public static func encode(_ m: Message, compressor: (any PayloadCompressor)? = nil, carrier: (any PayloadCarrier)? = nil) -> [Frame] {
        var w = ByteWriter(capacity: 64)
        w.u8(signature); w.u8(sigmaProtocolVersion); w.u8(m.type.rawValue); w.u8(0)
        var payload: Frame? = nil
        switch m {
        case .hello(let h):
            w.string(h.build); w.u16(h.cores); w.u32(h.slots); w.u64(h.memory); w.string(h.host); w.string(h.name)
            w.string(h.instance); w.string(h.features)
        case .ready(let r):
            w.string(r.workerID); w.u32(r.heartbeatInterval); w.u16(r.liveness); w.string(r.build); w.string(r.features)
        case .heartbeat(let h):
            w.u64(h.sent); w.u64(h.echo); w.u64(h.held); w.u32(h.running); w.u32(h.queued); w.f64(h.cpu); w.u64(h.rss); w.u64(h.rawOut); w.u64(h.wireOut); w.u64(h.available)
        case .assign(let a):
            w.u64(a.job); w.u32(a.shard); w.u32(a.attempt); w.u64(a.start); w.u64(a.count); w.u32(a.round)
            w.u8((a.withParams ? 1 : 0) | (a.collective != nil ? 2 : 0))
            if let c = a.collective {
                w.u32(c.segment); w.u16(c.rank); w.u8(c.snapshot ? 1 : 0); w.u16(UInt16(c.peers.count))
                for p in c.peers { w.string(p.endpoint); w.string(p.key); w.u16(p.memoryGroup) }
            }
            if let s = a.spec { payload = Frame(s.encoded) }
        case .result(let r):
            w.u64(r.job); w.u32(r.shard); w.u32(r.attempt); w.u8(r.status.rawValue); w.u64(r.computeTime); w.string(r.error)
            if !r.payload.isEmpty { payload = r.payload }
        case .cancel(let c):
            w.u64(c.job); w.u32(c.shard); w.u32(c.attempt)
        case .disconnect(let reason), .drain(let reason):
            w.string(reason)
        case .error(let e):
            w.u16(e.code); w.u64(e.request); w.string(e.message)
        case .params(let p):
            w.u64(p.job); w.u32(p.version)
            if !p.payload.isEmpty { payload = p.payload }
        case .submit(let s):
            w.u64(s.request); w.u8(s.options.rawValue); w.string(s.key)
            payload = Frame(s.spec.encoded)
        case .accept(let a):
            w.u64(a.request); w.u64(a.job); w.u32(a.shards)
        case .status(let req):
            w.u64(req)
        case .statusReply(let req, let st):
            w.u64(req)
            var pw = ByteWriter(capacity: 256)
            st.encode(into: &pw)
            payload = Frame(pw.bytes)
        case .watch(let req, let job), .fetch(let req, let job):
            w.u64(req); w.u64(job)
        case .progress(let p):
            w.u64(p.request); w.u64(p.job); w.u8(p.state.rawValue); w.u32(p.done); w.u32(p.total); w.u32(p.running); w.u32(p.reruns)
            w.u32(p.step); w.u32(p.steps); w.f64(p.loss); w.f64(p.accuracy); w.f64(p.evalLoss); w.u32(p.workers); w.u32(p.stepsPerEpoch)
        case .jobResult(let o):
            w.u64(o.request); w.u64(o.job); w.u8(o.state.rawValue); w.string(o.error); w.u32(o.shards); w.u32(o.duplicates)
            w.u32(o.reruns); w.u64(o.elapsed); w.u64(o.size)
            if !o.payload.isEmpty { payload = o.payload }
        case .cancelJob(let req, let job):
            w.u64(req); w.u64(job)
        case .detail(let req, let job, let from, let attempts):
            w.u64(req); w.u64(job); w.u32(from); w.bool(attempts)
        case .detailReply(let req, let d):
            w.u64(req)
            var pw = ByteWriter(capacity: 256)
            d.encode(into: &pw)
            payload = Frame(pw.bytes)
        case .drainWorker(let req, let worker):
            w.u64(req); w.string(worker)
        case .fileGet(let g):
            w.u64(g.request); w.u64(g.job); w.u32(g.index); w.u64(g.offset); w.u32(g.length)
        case .fileData(let d):
            w.u64(d.request); w.u64(d.job); w.u32(d.index); w.u32(d.files); w.string(d.path); w.u64(d.size); w.string(d.sha256); w.u64(d.offset)
            if !d.payload.isEmpty { payload = d.payload }
        case .resultGet(let g):
            w.u64(g.request); w.u64(g.job); w.u64(g.offset); w.u32(g.length)
        case .resultData(let d):
            w.u64(d.request); w.u64(d.job); w.u64(d.size); w.u64(d.offset)
            if !d.payload.isEmpty { payload = d.payload }
        case .deploy(let req, let spec):
            w.u64(req)
            payload = Frame(spec.encoded)
        case .undeploy(let req, let name):
            w.u64(req); w.string(name)
        case .deploymentsGet(let req):
            w.u64(req)
        case .deployments(let req, let list):
            w.u64(req)
            payload = DeploymentStatus.encodeList(list)
        case .predict(let p):
            w.u64(p.request); w.string(p.name); w.u32(p.timeoutMs)
            payload = p.input.encoded
        case .prediction(let p):
            w.u64(p.request); w.u32(p.rows); w.u32(p.width); w.u64(p.queueNanos); w.u64(p.computeNanos); w.u32(p.batchRows); w.string(p.worker)
            names(p.labels, into: &w)
            if !p.values.isEmpty { payload = Frame(floatValues: p.values) }
        case .load(let l):
            w.u32(l.deployment); w.string(l.name)
            payload = Frame(l.spec.encoded)
        case .loaded(let l):
            w.u32(l.deployment); w.bool(l.ok); w.string(l.error); w.u32(l.width)
            names(l.labels, into: &w)
        case .unload(let d):
            w.u32(d)
        case .batch(let b):
            w.u32(b.deployment); w.u64(b.batch)
            payload = b.input.encoded
        case .batchResult(let b):
            w.u64(b.batch); w.bool(b.ok); w.string(b.error); w.u64(b.computeNanos); w.u32(b.queued); w.u32(b.rows); w.u32(b.width)
            if !b.values.isEmpty { payload = Frame(floatValues: b.values) }
        case .withdraw(let req):
            w.u64(req)
        }
        var header = w.bytes
        guard let p = payload else { return [Frame(header)] }
        if let c = carrier, let ref = c.carry(p) {
            header[3] |= flagShared
            return [Frame(header), ref]
        }
        if let c = compressor, p.count >= compressionThreshold, let z = c.compress(p) {
            header[3] |= flagCompressed
            return [Frame(header), z]
        }
        return [Frame(header), p]
    }

    // MARK: decode

    /// Decodes one message; every rejection is a `DecodeError` naming the problem (never a crash).
    public static func decode(_ frames: [Frame], limits: ProtocolLimits = .standard,
                              compressor: (any PayloadCompressor)? = nil, carrier: (any PayloadCarrier)? = nil) throws -> Message {
        do {
            return try decodeUnchecked(frames, limits: limits, compressor: compressor, carrier: carrier)
        } catch var e as DecodeError {
            // Client requests start with `u64 request` (§3.2): echo it so the client's call gets the error.
            if let first = frames.first, first.count >= 12, e.type.map(isClientRequest) == true {
                e.request = first.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt64.self)) }
            }
            throw e
        }
    }

    static func isClientRequest(_ t: MessageType) -> Bool {
        t == .submit || t == .status || t == .watch || t == .fetch || t == .cancelJob || t == .detail || t == .drainWorker
            || t == .fileGet || t == .fileData || t == .resultGet || t == .resultData
    }

    static func decodeUnchecked(_ frames: [Frame], limits: ProtocolLimits, compressor: (any PayloadCompressor)?,
                                carrier: (any PayloadCarrier)? = nil) throws -> Message {
        guard let first = frames.first, !first.isEmpty else { throw DecodeError(.badRequest, nil, "empty message") }
        guard frames.count <= limits.maxFrames else {
            throw DecodeError(.tooLarge, nil, "\(frames.count) frames; at most \(limits.maxFrames) allowed")
        }
        guard first.count <= limits.maxHeader else {
            throw DecodeError(.tooLarge, nil, "header frame of \(first.count) bytes exceeds the limit of \(limits.maxHeader)")
        }
        for (i, f) in frames.enumerated().dropFirst() where f.count > limits.maxPayload {
            throw DecodeError(.tooLarge, nil, "frame \(i) of \(f.count) bytes exceeds the limit of \(limits.maxPayload)")
        }
        return try first.withUnsafeBytes { buf -> Message in
            var r = ByteReader(buf)
            func field<T>(_ t: MessageType?, _ body: () throws -> T) throws -> T {
                do { return try body() } catch let e as ByteReadError {
                    throw DecodeError(.badRequest, t, "malformed \(e)")
                } catch let e as SpecError {
                    throw DecodeError(.invalidSpec, t, "\(e)")
                }
            }
            let sig = try field(nil) { try r.u8("signature") }
            guard sig == signature else {
                throw DecodeError(.badRequest, nil, "bad signature byte 0x\(String(sig, radix: 16)); not a Sigma message")
            }
            let version = try field(nil) { try r.u8("version") }
            let code = try field(nil) { try r.u8("type") }
            let type = MessageType(rawValue: code)
            guard version == sigmaProtocolVersion else {
                throw DecodeError(.versionNotSupported, type,
                                  "protocol version \(version) is not supported; this peer speaks version \(sigmaProtocolVersion)")
            }
            guard let t = type else {
                throw DecodeError(.badRequest, nil, "unknown message type 0x\(String(code, radix: 16))")
            }
            let flags = try field(t) { try r.u8("flags") }
            guard flags & ~(flagCompressed | flagShared) == 0, flags != flagCompressed | flagShared else {
                throw DecodeError(.badRequest, t, "unknown flag bits 0x\(String(flags, radix: 16))")
            }
            // Payload frame (at most one in v1), decompressed / fetched from shared memory if flagged.
            var payload: Frame? = frames.count > 1 ? frames[1] : nil
            // Each flag turns the payload frame into another through its hook; an error names the flag and the problem.
            func unwrap(_ flag: UInt8, _ what: String, _ hook: ((Frame) throws -> Frame)?, missingHook: String, failed: String) throws {
                guard flags & flag != 0 else { return }
                guard let f = payload else { throw DecodeError(.badRequest, t, "\(what) flag set but no payload frame") }
                guard let hook else { throw DecodeError(.badRequest, t, missingHook) }
                do { payload = try hook(f) } catch { throw DecodeError(.badRequest, t, "\(failed): \(error)") }
            }
            try unwrap(flagCompressed, "compressed", compressor.map { c in { try c.decompress($0, limit: limits.maxPayload) } },
                       missingHook: "compressed payload, but this peer has no decompressor", failed: "payload does not decompress")
            try unwrap(flagShared, "shared-memory", carrier.map { c in { try c.resolve($0, limit: limits.maxPayload) } },
                       missingHook: "shared-memory payload, but this link did not agree to shared memory", failed: "shared-memory payload")
            func noPayload() throws {
                if payload != nil { throw DecodeError(.badRequest, t, "unexpected payload frame") }
            }
            func requirePayload(_ what: String) throws -> Frame {
                guard let p = payload else { throw DecodeError(.badRequest, t, "missing payload frame (\(what))") }
                return p
            }
            let m: Message = try field(t) {
                switch t {
                case .hello:
                    try noPayload()
                    return .hello(Hello(build: try r.string("build"), cores: try r.u16("cores"), slots: try r.u32("slots"),
                                        memory: try r.u64("memory"), host: try r.string("host"), name: try r.string("name"),
                                        instance: try r.string("instance"), features: try r.string("features")))
                case .ready:
                    try noPayload()
                    return .ready(Ready(workerID: try r.string("worker"), heartbeatInterval: try r.u32("interval"),
                                        liveness: try r.u16("liveness"), build: try r.string("build"),
                                        features: try r.string("features")))
                case .heartbeat:
                    try noPayload()
                    var h = Heartbeat(sent: try r.u64("sent"), echo: try r.u64("echo"), held: try r.u64("held"),
                                      running: try r.u32("running"), queued: try r.u32("queued"),
                                      cpu: try r.f64("cpu"), rss: try r.u64("rss"))
                    h.rawOut = try r.u64("raw_out")
                    h.wireOut = try r.u64("wire_out")
                    h.available = try r.u64("available")
                    return .heartbeat(h)
                case .assign:
                    var a = Assign(job: try r.u64("job"), shard: try r.u32("shard"), attempt: try r.u32("attempt"),
                                   start: try r.u64("start"), count: try r.u64("count"), round: try r.u32("round"))
                    let flags = try r.u8("flags")
                    guard flags & ~3 == 0 else { throw ByteReadError(field: "flags", problem: "unknown flags \(flags)") }
                    a.withParams = flags & 1 != 0
                    if flags & 2 != 0 {
                        let segment = try r.u32("collective.segment"), rank = try r.u16("collective.rank")
                        let snapshot = try r.u8("collective.snapshot")
                        guard snapshot <= 1 else { throw ByteReadError(field: "collective.snapshot", problem: "\(snapshot) is not 0 or 1") }
                        let n = try r.u16("collective.peers")
                        guard n >= 2, rank < n else {
                            throw ByteReadError(field: "collective.peers", problem: "rank \(rank) of \(n) peers (a collective step has at least 2, the rank among them)")
                        }
                        var peers: [PeerAddress] = []
                        for _ in 0..<n {
                            peers.append(PeerAddress(endpoint: try r.string("collective.endpoint"), key: try r.string("collective.key"),
                                                     memoryGroup: try r.u16("collective.memory_group")))
                        }
                        a.collective = CollectiveStep(segment: segment, rank: rank, snapshot: snapshot == 1, peers: peers)
                    }
                    if let p = payload { a.spec = try p.withUnsafeBytes { try JobSpec.decode($0) } }
                    return .assign(a)
                case .result:
                    let job = try r.u64("job"), shard = try r.u32("shard"), attempt = try r.u32("attempt")
                    let sv = try r.u8("status")
                    guard let status = ShardResult.Status(rawValue: sv) else {
                        throw ByteReadError(field: "status", problem: "unknown status \(sv)")
                    }
                    return .result(ShardResult(job: job, shard: shard, attempt: attempt, status: status,
                                               computeTime: try r.u64("compute"), error: try r.string("error"),
                                               payload: payload ?? .empty))
                case .cancel:
                    try noPayload()
                    return .cancel(Cancel(job: try r.u64("job"), shard: try r.u32("shard"), attempt: try r.u32("attempt")))
                case .disconnect:
                    try noPayload()
                    return .disconnect(reason: try r.string("reason"))
                case .drain:
                    try noPayload()
                    return .drain(reason: try r.string("reason"))
                case .error:
                    try noPayload()
                    return .error(ErrorReply(rawCode: try r.u16("code"), request: try r.u64("request"), message: try r.string("message")))
                case .params:
                    return .params(Params(job: try r.u64("job"), version: try r.u32("version"), payload: payload ?? .empty))
                case .submit:
                    let req = try r.u64("request"), opts = SubmitOptions(rawValue: try r.u8("options")), key = try r.string("key")
                    let spec = try requirePayload("job spec").withUnsafeBytes { try JobSpec.decode($0) }
                    return .submit(Submit(request: req, options: opts, spec: spec, key: key))
                case .accept:
                    try noPayload()
                    return .accept(Accept(request: try r.u64("request"), job: try r.u64("job"), shards: try r.u32("shards")))
                case .status:
                    try noPayload()
                    return .status(request: try r.u64("request"))
                case .statusReply:
                    let req = try r.u64("request")
                    let st = try requirePayload("status").read { pr in
                        let s = try ClusterStatus.decode(from: &pr)
                        try pr.finish("status")
                        return s
                    }
                    return .statusReply(request: req, st)
                case .watch:
                    try noPayload()
                    return .watch(request: try r.u64("request"), job: try r.u64("job"))
                case .progress:
                    try noPayload()
                    let req = try r.u64("request"), job = try r.u64("job"), sv = try r.u8("state")
                    guard let state = JobState(rawValue: sv) else { throw ByteReadError(field: "state", problem: "unknown state \(sv)") }
                    var p = JobProgress(request: req, job: job, state: state, done: try r.u32("done"), total: try r.u32("total"),
                                        running: try r.u32("running"), reruns: try r.u32("reruns"), step: try r.u32("step"),
                                        steps: try r.u32("steps"), loss: try r.f64("loss"), accuracy: try r.f64("accuracy"))
                    p.evalLoss = try r.f64("eval_loss")
                    (p.workers, p.stepsPerEpoch) = (try r.u32("workers"), try r.u32("steps_per_epoch"))
                    return .progress(p)
                case .fetch:
                    try noPayload()
                    return .fetch(request: try r.u64("request"), job: try r.u64("job"))
                case .jobResult:
                    let req = try r.u64("request"), job = try r.u64("job"), sv = try r.u8("state")
                    guard let state = JobState(rawValue: sv) else { throw ByteReadError(field: "state", problem: "unknown state \(sv)") }
                    let o = JobOutcome(request: req, job: job, state: state, error: try r.string("error"),
                                       shards: try r.u32("shards"), duplicates: try r.u32("duplicates"),
                                       reruns: try r.u32("reruns"), elapsed: try r.u64("elapsed"), payload: payload ?? .empty,
                                       size: try r.u64("size"))
                    guard o.payload.isEmpty || UInt64(o.payload.count) == o.size else {
                        throw ByteReadError(field: "size", problem: "\(o.size), but the payload has \(o.payload.count) bytes")
                    }
                    return .jobResult(o)
                case .cancelJob:
                    try noPayload()
                    return .cancelJob(request: try r.u64("request"), job: try r.u64("job"))
                case .detail:
                    try noPayload()
                    return .detail(request: try r.u64("request"), job: try r.u64("job"), logFrom: try r.u32("log_from"),
                                   attempts: try r.bool("attempts"))
                case .detailReply:
                    let req = try r.u64("request")
                    let d = try requirePayload("detail").read { pr in
                        let d = try JobDetail.decode(from: &pr)
                        try pr.finish("detail")
                        return d
                    }
                    return .detailReply(request: req, d)
                case .drainWorker:
                    try noPayload()
                    return .drainWorker(request: try r.u64("request"), worker: try r.string("worker"))
                case .fileGet:
                    try noPayload()
                    return .fileGet(FileGet(request: try r.u64("request"), job: try r.u64("job"), index: try r.u32("index"),
                                            offset: try r.u64("offset"), length: try r.u32("length")))
                case .fileData:
                    let req = try r.u64("request"), job = try r.u64("job"), index = try r.u32("index"), files = try r.u32("files")
                    let path = try r.string("path"), size = try r.u64("size"), sha = try r.string("sha256"), offset = try r.u64("offset")
                    guard index < files else { throw ByteReadError(field: "index", problem: "file \(index) of \(files)") }
                    guard sha.utf8.count == 64, sha.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
                        throw ByteReadError(field: "sha256", problem: "'\(sha.prefix(80))' is not 64 lowercase hex digits")
                    }
                    let p = payload ?? .empty
                    guard offset <= size, UInt64(p.count) <= size - offset else {
                        throw ByteReadError(field: "offset", problem: "\(p.count) bytes at \(offset) run past the file's \(size)")
                    }
                    return .fileData(FileData(request: req, job: job, index: index, files: files, path: path, size: size, sha256: sha,
                                              offset: offset, payload: p))
                case .resultGet:
                    try noPayload()
                    return .resultGet(ResultGet(request: try r.u64("request"), job: try r.u64("job"), offset: try r.u64("offset"),
                                                length: try r.u32("length")))
                case .resultData:
                    let req = try r.u64("request"), job = try r.u64("job"), size = try r.u64("size"), offset = try r.u64("offset")
                    let p = payload ?? .empty
                    guard offset <= size, UInt64(p.count) <= size - offset else {
                        throw ByteReadError(field: "offset", problem: "\(p.count) bytes at \(offset) run past the result's \(size)")
                    }
                    return .resultData(ResultData(request: req, job: job, size: size, offset: offset, payload: p))
                case .deploy:
                    let req = try r.u64("request")
                    return .deploy(request: req, spec: try requirePayload("serve spec").withUnsafeBytes { try JobSpec.decode($0) })
                case .undeploy:
                    try noPayload()
                    return .undeploy(request: try r.u64("request"), name: try r.string("name"))
                case .deploymentsGet:
                    try noPayload()
                    return .deploymentsGet(request: try r.u64("request"))
                case .deployments:
                    let req = try r.u64("request")
                    return .deployments(request: req, try DeploymentStatus.decodeList(try requirePayload("deployments")))
                case .predict:
                    let req = try r.u64("request"), name = try r.string("name"), timeout = try r.u32("timeout_ms")
                    return .predict(PredictRequest(request: req, name: name, timeoutMs: timeout, input: try ServeInput.decode(try requirePayload("input"))))
                case .prediction:
                    var p = Prediction(request: try r.u64("request"), rows: try r.u32("rows"), width: try r.u32("width"), queueNanos: try r.u64("queue_ns"),
                                       computeNanos: try r.u64("compute_ns"), batchRows: try r.u32("batch_rows"), worker: try r.string("worker"), values: [])
                    p.labels = try names(&r, "labels", atMost: Int(p.rows))
                    p.values = try outputs(payload, rows: p.rows, width: p.width)
                    return .prediction(p)
                case .load:
                    let d = try r.u32("deployment"), name = try r.string("name")
                    return .load(LoadModel(deployment: d, name: name, spec: try requirePayload("serve spec").withUnsafeBytes { try JobSpec.decode($0) }))
                case .loaded:
                    try noPayload()
                    var l = ModelLoaded(deployment: try r.u32("deployment"), ok: try r.bool("ok"), error: try r.string("error"), width: try r.u32("width"))
                    l.labels = try names(&r, "labels", atMost: Int(l.width))
                    return .loaded(l)
                case .unload:
                    try noPayload()
                    return .unload(deployment: try r.u32("deployment"))
                case .batch:
                    let d = try r.u32("deployment"), b = try r.u64("batch")
                    return .batch(ServeBatch(deployment: d, batch: b, input: try ServeInput.decode(try requirePayload("input"))))
                case .batchResult:
                    var b = ServeBatchResult(batch: try r.u64("batch"), ok: try r.bool("ok"), error: try r.string("error"), computeNanos: try r.u64("compute_ns"),
                                             queued: try r.u32("queued"), rows: try r.u32("rows"), width: try r.u32("width"))
                    b.values = try outputs(payload, rows: b.rows, width: b.width)
                    return .batchResult(b)
                case .withdraw:
                    try noPayload()
                    return .withdraw(request: try r.u64("request"))
                }
            }
            try field(t) { try r.finish("header") }
            return m
        }
    }
}

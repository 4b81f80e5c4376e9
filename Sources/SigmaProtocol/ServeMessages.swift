import SigmaModel

/// What a deployed model is asked: rows of features (an MLP) or texts (an embedding model). One request's, or a
/// batch of requests' (concatenated in order), on the wire: `u8 form` then, form 0, `u32 rows, u32 width, f32 ×
/// rows·width`; form 1, `u32 count` then each text as `u32 bytes` + UTF-8 (docs/protocol.md §10).
public enum ServeInput: Sendable, Equatable {
    case rows(width: Int, values: [Float])
    case texts([String])

    /// Rows (texts) asked for.
    public var count: Int {
        switch self {
        case .rows(let w, let v): w > 0 ? v.count / w : 0
        case .texts(let t): t.count
        }
    }

    /// What the input is, for messages ("3 rows of 64 features", "2 texts").
    public var summary: String {
        switch self {
        case .rows(let w, let v): "\(w > 0 ? v.count / w : 0) rows of \(w) features"
        case .texts(let t): "\(t.count) text\(t.count == 1 ? "" : "s")"
        }
    }

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .rows(let width, let values):
            w.u8(0); w.u32(UInt32(width > 0 ? values.count / width : 0)); w.u32(UInt32(width))
            values.withUnsafeBufferPointer { w.floats($0) }
        case .texts(let texts):
            w.u8(1); w.u32(UInt32(texts.count))
            for t in texts { w.blob(Array(t.utf8)) }
        }
    }

    public var encoded: Frame {
        var w = ByteWriter(capacity: 64)
        encode(into: &w)
        return Frame(w.bytes)
    }

    /// Most rows (texts) one input may hold, and most bytes one text may have.
    public static let maxRows = 1 << 20, maxTextBytes = 1 << 20

    public static func decode(from r: inout ByteReader) throws -> ServeInput {
        switch try r.u8("input.form") {
        case 0:
            let rows = Int(try r.u32("input.rows")), width = Int(try r.u32("input.width"))
            guard rows <= maxRows, width <= 1 << 20, rows * width <= r.remaining / 4 else {
                throw ByteReadError(field: "input.rows", problem: "\(rows) rows of \(width) floats do not fit the \(r.remaining) bytes sent")
            }
            guard width > 0 || rows == 0 else { throw ByteReadError(field: "input.width", problem: "0 features per row") }
            return .rows(width: width, values: try r.floats(rows * width, "input.values"))
        case 1:
            let n = Int(try r.u32("input.count"))
            guard n <= maxRows, n <= r.remaining / 4 else { throw ByteReadError(field: "input.count", problem: "\(n) texts do not fit the bytes sent") }
            var texts: [String] = []
            texts.reserveCapacity(n)
            for i in 0..<n {
                let b = try r.blob("input.texts[\(i)]", limit: maxTextBytes)
                guard let s = String(validating: b, as: UTF8.self) else {
                    throw ByteReadError(field: "input.texts[\(i)]", problem: "not valid UTF-8")
                }
                texts.append(s)
            }
            return .texts(texts)
        case let f:
            throw ByteReadError(field: "input.form", problem: "unknown form \(f) (0 rows of floats, 1 texts)")
        }
    }

    public static func decode(_ frame: Frame) throws -> ServeInput {
        try frame.withUnsafeBytes { b in
            var r = ByteReader(b)
            let v = try decode(from: &r)
            try r.finish("input")
            return v
        }
    }

    /// Inputs of several requests as one (same form; rows of one width), in order; nil when they do not mix.
    public static func joined(_ parts: [ServeInput]) -> ServeInput? {
        guard let first = parts.first else { return nil }
        switch first {
        case .rows(let width, _):
            var all: [Float] = []
            for p in parts {
                guard case .rows(let w, let v) = p, w == width else { return nil }
                all += v
            }
            return .rows(width: width, values: all)
        case .texts:
            var all: [String] = []
            for p in parts {
                guard case .texts(let t) = p else { return nil }
                all += t
            }
            return .texts(all)
        }
    }
}

/// PREDICT: a client asks a deployment (by name) for outputs; `timeoutMs` 0: the deployment's own timeout.
public struct PredictRequest: Sendable, Equatable {
    public var request: UInt64
    public var name: String
    public var timeoutMs: UInt32
    public var input: ServeInput
    public init(request: UInt64, name: String, timeoutMs: UInt32 = 0, input: ServeInput) {
        self.request = request
        self.name = name
        self.timeoutMs = timeoutMs
        self.input = input
    }
}

/// PREDICTION: the outputs of one PREDICT, `rows` × `width` floats in input order, and where its time went.
public struct Prediction: Sendable, Equatable {
    public var request: UInt64
    public var rows: UInt32
    public var width: UInt32
    /// Waiting in the coordinator's queue, and computing (the batch's compute on the worker), ns.
    public var queueNanos: UInt64
    public var computeNanos: UInt64
    /// Rows in the batch it was computed in (its own and others').
    public var batchRows: UInt32
    /// The worker that computed it.
    public var worker: String
    /// Each row's class name — its largest output's (the first, on ties) — when the model names its classes; else empty.
    public var labels: [String] = []
    public var values: [Float]
    public init(request: UInt64, rows: UInt32, width: UInt32, queueNanos: UInt64 = 0, computeNanos: UInt64 = 0, batchRows: UInt32 = 0,
                worker: String = "", labels: [String] = [], values: [Float]) {
        self.request = request
        self.rows = rows
        self.width = width
        self.queueNanos = queueNanos
        self.computeNanos = computeNanos
        self.batchRows = batchRows
        self.worker = worker
        self.labels = labels
        self.values = values
    }

    public static func == (a: Prediction, b: Prediction) -> Bool {
        a.request == b.request && a.rows == b.rows && a.width == b.width && a.queueNanos == b.queueNanos && a.computeNanos == b.computeNanos
            && a.batchRows == b.batchRows && a.worker == b.worker && a.labels == b.labels && a.values.map(\.bitPattern) == b.values.map(\.bitPattern)
    }

    /// Class names of `rows` rows of `width` outputs: each row's largest output's name (the first, on ties; a class
    /// past the names is named by its index). None when there are no names, or the values are not whole rows.
    public static func labels(_ values: ArraySlice<Float>, width: Int, names: [String]) -> [String] {
        guard width > 0, !names.isEmpty, values.count % width == 0 else { return [] }
        return stride(from: values.startIndex, to: values.endIndex, by: width).map { start in
            var best = 0
            for k in 1..<width {
                let v = values[start + k], b = values[start + best]
                if v > b || (b.isNaN && !v.isNaN) { best = k }   // (NaN is never the largest)
            }
            return best < names.count ? names[best] : "\(best)"
        }
    }
}

/// LOAD: a worker is to load deployment `deployment`'s model (spec in the payload) and keep it.
public struct LoadModel: Sendable, Equatable {
    public var deployment: UInt32
    public var name: String
    public var spec: JobSpec
    public init(deployment: UInt32, name: String, spec: JobSpec) {
        self.deployment = deployment
        self.name = name
        self.spec = spec
    }
}

/// LOADED: a worker loaded a deployment's model (its output width, and its classes' names when it has them), or
/// could not (why).
public struct ModelLoaded: Sendable, Equatable {
    public var deployment: UInt32
    public var ok: Bool
    public var error: String
    public var width: UInt32
    public var labels: [String]
    public init(deployment: UInt32, ok: Bool, error: String = "", width: UInt32 = 0, labels: [String] = []) {
        self.deployment = deployment
        self.ok = ok
        self.error = error
        self.width = width
        self.labels = labels
    }
}

/// BATCH: requests of one deployment, joined, for a worker that loaded it.
public struct ServeBatch: Sendable, Equatable {
    public var deployment: UInt32
    public var batch: UInt64
    public var input: ServeInput
    public init(deployment: UInt32, batch: UInt64, input: ServeInput) {
        self.deployment = deployment
        self.batch = batch
        self.input = input
    }
}

/// BATCH-RESULT: a batch's outputs (`rows` × `width` floats), or why it failed; `queued`: batches waiting on that
/// worker when it was sent (routing reads it instead of probing).
public struct ServeBatchResult: Sendable, Equatable {
    public var batch: UInt64
    public var ok: Bool
    public var error: String
    public var computeNanos: UInt64
    public var queued: UInt32
    public var rows: UInt32
    public var width: UInt32
    public var values: [Float]
    public init(batch: UInt64, ok: Bool, error: String = "", computeNanos: UInt64 = 0, queued: UInt32 = 0, rows: UInt32 = 0, width: UInt32 = 0,
                values: [Float] = []) {
        self.batch = batch
        self.ok = ok
        self.error = error
        self.computeNanos = computeNanos
        self.queued = queued
        self.rows = rows
        self.width = width
        self.values = values
    }

    public static func == (a: ServeBatchResult, b: ServeBatchResult) -> Bool {
        a.batch == b.batch && a.ok == b.ok && a.error == b.error && a.computeNanos == b.computeNanos && a.queued == b.queued
            && a.rows == b.rows && a.width == b.width && a.values.map(\.bitPattern) == b.values.map(\.bitPattern)
    }
}

/// The kinds of served model, as deployments name them: "embed" (an embedding model) and "encoder" (a fine-tuned
/// text classifier) take texts; "mlp", "cnn" and "transformer" take rows of floats.
public enum ServedModelKind {
    public static func takesTexts(_ model: String) -> Bool { model == "embed" || model == "encoder" }
}

/// DEPLOYMENTS: every deployment, its replicas and its figures (`sigma deployments`, the dashboard, `/metrics`).
public struct DeploymentStatus: Sendable, Equatable {
    public struct Replica: Sendable, Equatable {
        public var worker: String
        public var name: String
        /// loading, ready, failed
        public var state: String
        public var error: String
        public var inFlight: UInt32
        public var batches: UInt64
        public init(worker: String, name: String, state: String, error: String = "", inFlight: UInt32 = 0, batches: UInt64 = 0) {
            self.worker = worker
            self.name = name
            self.state = state
            self.error = error
            self.inFlight = inFlight
            self.batches = batches
        }
    }

    public var name: String
    /// "embed" or "encoder" (texts in), or "mlp", "cnn", "transformer" (rows of `inputs` floats in).
    public var model: String
    /// Replicas asked for (0: one on every worker).
    public var replicasWanted: UInt32
    public var queued: UInt32
    public var queueLimit: UInt32
    public var maxBatch: UInt32
    public var maxWaitMs: Double
    /// Features per input row (0: texts), and floats per output row (0 until a replica loaded the model).
    public var inputs: UInt32 = 0
    public var width: UInt32 = 0
    /// The loaded classifier's class names, class i the i-th (none: not a classifier, or its weights name none).
    public var labels: [String] = []
    public var requests: UInt64 = 0
    public var tooBusy: UInt64 = 0
    public var unavailable: UInt64 = 0
    public var timedOut: UInt64 = 0
    public var failed: UInt64 = 0
    /// Requests answered with outputs (each exactly once, however often its batch was re-sent).
    public var answered: UInt64 = 0
    /// Requests their clients withdrew before the answer (WITHDRAW: an HTTP caller that hung up).
    public var withdrawn: UInt64 = 0
    /// Undeployed: it takes no requests and goes once its batches in flight are answered.
    public var draining = false
    /// Batches sent and their rows, since the deployment started (a mean batch over any interval from two readings).
    public var batches: UInt64 = 0
    public var batchedRows: UInt64 = 0
    /// Over the last requests answered (NaN when none): latency end to end in the coordinator, and its queue and
    /// compute parts, ms.
    public var p50Ms: Double = .nan
    public var p99Ms: Double = .nan
    public var queueP50Ms: Double = .nan
    public var computeP50Ms: Double = .nan
    /// Mean rows per batch sent, and requests answered per second over the last 10 s.
    public var meanBatch: Double = .nan
    public var rate: Double = 0
    public var replicas: [Replica] = []
    public init(name: String, model: String, replicasWanted: UInt32, queued: UInt32, queueLimit: UInt32, maxBatch: UInt32, maxWaitMs: Double) {
        self.name = name
        self.model = model
        self.replicasWanted = replicasWanted
        self.queued = queued
        self.queueLimit = queueLimit
        self.maxBatch = maxBatch
        self.maxWaitMs = maxWaitMs
    }

    /// Replicas loaded and answering.
    public var ready: Int { replicas.filter { $0.state == "ready" }.count }

    /// (by their bytes: figures not measured yet are NaN)
    public static func == (a: DeploymentStatus, b: DeploymentStatus) -> Bool {
        var w1 = ByteWriter(capacity: 128), w2 = ByteWriter(capacity: 128)
        a.encode(into: &w1)
        b.encode(into: &w2)
        return w1.bytes == w2.bytes
    }

    public func encode(into w: inout ByteWriter) {
        w.string(name); w.string(model); w.u32(replicasWanted); w.u32(queued); w.u32(queueLimit); w.u32(maxBatch); w.f64(maxWaitMs)
        w.u32(inputs); w.u32(width)
        Codec.names(labels, into: &w)
        w.u64(requests); w.u64(tooBusy); w.u64(unavailable); w.u64(timedOut); w.u64(failed); w.u64(answered); w.u64(withdrawn); w.bool(draining)
        w.u64(batches); w.u64(batchedRows)
        w.f64(p50Ms); w.f64(p99Ms); w.f64(queueP50Ms); w.f64(computeP50Ms); w.f64(meanBatch); w.f64(rate)
        w.u32(UInt32(replicas.count))
        for r in replicas {
            w.string(r.worker); w.string(r.name); w.string(r.state); w.string(r.error); w.u32(r.inFlight); w.u64(r.batches)
        }
    }

    public static func decode(from r: inout ByteReader) throws -> DeploymentStatus {
        var d = DeploymentStatus(name: try r.string("deployment.name"), model: try r.string("deployment.model"),
                                 replicasWanted: try r.u32("deployment.replicas_wanted"), queued: try r.u32("deployment.queued"),
                                 queueLimit: try r.u32("deployment.queue_limit"), maxBatch: try r.u32("deployment.max_batch"),
                                 maxWaitMs: try r.f64("deployment.max_wait_ms"))
        (d.inputs, d.width) = (try r.u32("deployment.inputs"), try r.u32("deployment.width"))
        d.labels = try Codec.names(&r, "deployment.labels", atMost: Int(d.width))
        (d.requests, d.tooBusy, d.unavailable) = (try r.u64("deployment.requests"), try r.u64("deployment.too_busy"), try r.u64("deployment.unavailable"))
        (d.timedOut, d.failed, d.answered) = (try r.u64("deployment.timed_out"), try r.u64("deployment.failed"), try r.u64("deployment.answered"))
        (d.withdrawn, d.draining) = (try r.u64("deployment.withdrawn"), try r.bool("deployment.draining"))
        (d.batches, d.batchedRows) = (try r.u64("deployment.batches"), try r.u64("deployment.batched_rows"))
        (d.p50Ms, d.p99Ms, d.queueP50Ms) = (try r.f64("deployment.p50_ms"), try r.f64("deployment.p99_ms"), try r.f64("deployment.queue_p50_ms"))
        (d.computeP50Ms, d.meanBatch, d.rate) = (try r.f64("deployment.compute_p50_ms"), try r.f64("deployment.mean_batch"), try r.f64("deployment.rate"))
        let n = Int(try r.u32("deployment.replicas"))
        guard n <= 100_000, n <= r.remaining / 20 else { throw ByteReadError(field: "deployment.replicas", problem: "\(n) replicas do not fit the bytes sent") }
        for _ in 0..<n {
            d.replicas.append(Replica(worker: try r.string("replica.worker"), name: try r.string("replica.name"), state: try r.string("replica.state"),
                                      error: try r.string("replica.error"), inFlight: try r.u32("replica.in_flight"), batches: try r.u64("replica.batches")))
        }
        return d
    }

    public static func encodeList(_ list: [DeploymentStatus]) -> Frame {
        var w = ByteWriter(capacity: 256)
        w.u32(UInt32(list.count))
        for d in list { d.encode(into: &w) }
        return Frame(w.bytes)
    }

    public static func decodeList(_ frame: Frame) throws -> [DeploymentStatus] {
        try frame.withUnsafeBytes { b in
            var r = ByteReader(b)
            let n = Int(try r.u32("deployments"))
            guard n <= 10_000, n <= r.remaining / 64 else { throw ByteReadError(field: "deployments", problem: "\(n) deployments do not fit the bytes sent") }
            var list: [DeploymentStatus] = []
            for _ in 0..<n { list.append(try decode(from: &r)) }
            try r.finish("deployments")
            return list
        }
    }
}

extension Frame {
    /// The floats' bytes (little-endian, as every peer is).
    public init(floatValues v: [Float]) {
        self.init(count: v.count * 4) { dst in v.withUnsafeBytes { dst.copyMemory(from: $0) } }
    }

    /// The frame's bytes as floats; nil unless a whole number of them.
    public var floatValues: [Float]? {
        guard count % 4 == 0 else { return nil }
        return withUnsafeBytes { b in [Float](unsafeUninitializedCapacity: count / 4) { p, n in
            if count > 0 { UnsafeMutableRawBufferPointer(p).copyMemory(from: b) }
            n = count / 4
        } }
    }
}

extension Codec {
    /// A PREDICTION's or BATCH-RESULT's `rows` × `width` floats: the payload must hold exactly that many.
    static func outputs(_ payload: Frame?, rows: UInt32, width: UInt32) throws -> [Float] {
        // (rows × width fits 64 bits; × 4 may not: a peer's numbers are not trusted)
        let (want, overflow) = (UInt64(rows) * UInt64(width)).multipliedReportingOverflow(by: 4)
        let got = UInt64(payload?.count ?? 0)
        guard !overflow, want == got, let v = (payload ?? .empty).floatValues else {
            throw ByteReadError(field: "rows", problem: "\(rows) rows of \(width) floats are \(want) bytes, the payload has \(got)")
        }
        return v
    }

    /// `u32 n`, then n strings: at most `atMost` (a row's or a class's each), and no more than the bytes left can
    /// hold (each string takes at least its 2-byte length) — a peer's count reserves nothing.
    static func names(_ r: inout ByteReader, _ field: String, atMost: Int) throws -> [String] {
        let n = Int(try r.u32(field))
        guard n <= atMost else { throw ByteReadError(field: field, problem: "\(n) names for \(atMost)") }
        guard n <= r.remaining / 2 else { throw ByteReadError(field: field, problem: "\(n) names in \(r.remaining) bytes") }
        var out: [String] = []
        for _ in 0..<n { out.append(try r.string(field)) }
        return out
    }

    /// What `names(_:_:atMost:)` reads.
    static func names(_ names: [String], into w: inout ByteWriter) {
        w.u32(UInt32(names.count)); for n in names { w.string(n) }
    }
}

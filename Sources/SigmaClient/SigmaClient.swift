import Foundation
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

/// What a client call can fail with; every case says what to do next.
public enum ClientError: Error, CustomStringConvertible, Equatable {
    /// `secure`: the client used CURVE keys, so a coordinator without keys, or a wrong coordinator key, also ends here
    /// (those handshakes fail without an event on the client's side).
    case noAnswer(endpoint: String, seconds: Double, request: String, secure: Bool = false)
    case refused(ErrorReply)
    case badReply(String)
    case connection(String)
    /// Following a job: the coordinator was silent past the deadline.
    case lost(job: JobID, endpoint: String, seconds: Double)
    /// The caller cancelled the request (its task was cancelled).
    case cancelled

    public var description: String {
        switch self {
        case .noAnswer(let ep, let s, let what, let secure):
            "no answer to \(what) from the coordinator at \(ep) within \(String(format: "%g", s)) s; is it running? (start one with: sigma coordinator)"
                + (secure ? " — with CURVE keys also check that it runs with --key/--allow and that --coordinator-key is its public key" : "")
        case .refused(let e): e.message
        case .badReply(let s): "unexpected reply from the coordinator: \(s)"
        case .cancelled: "cancelled by the caller"
        case .connection(let s): "cannot reach the coordinator: \(s)"
        case .lost(let job, let ep, let s):
            "the coordinator at \(ep) did not answer for \(Int(s)) s while following job \(job); follow it later with: sigma job \(job), sigma results \(job)"
        }
    }
}

/// Talks to a coordinator from Swift concurrency. The socket lives on its own thread (`BridgedLink`);
/// calls never block the cooperative pool.
public final class SigmaClient: Sendable {
    public let endpoint: String
    /// Whether this client's connection uses CURVE keys.
    public let secure: Bool
    private let link: BridgedLink
    let handlers: Handlers
    private let nextRequest = Atomic<UInt64>(1)
    private let compressor = LZ4Compressor()

    /// Receives every message for one request id; returns true when the request is complete.
    typealias Handler = @Sendable (Result<Message, ClientError>) -> Bool

    /// Pending requests and their answer timers. A timer bounds the wait for a request's *first* reply (the only
    /// one for STATUS/FETCH; ACCEPT or JOB-RESULT for a job) and is cancelled as soon as that reply arrives.
    final class Handlers: Sendable {
        let table = Mutex<[UInt64: Handler]>([:])
        let timers = Mutex<[UInt64: Task<Void, Never>]>([:])
        func withLock<R>(_ body: (inout [UInt64: Handler]) -> R) -> R { table.withLock { body(&$0) } }

        func arm(_ id: UInt64, seconds: Double, onExpiry: @escaping @Sendable () -> Void) {
            let t = Task {
                try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                if !Task.isCancelled { onExpiry() }
            }
            timers.withLock { $0[id] = t }
        }

        func disarm(_ id: UInt64) { timers.withLock { $0.removeValue(forKey: id) }?.cancel() }

        /// The last handshake failure, until a reply shows the connection works: libzmq does not retry a handshake that
        /// failed on the protocol (CURVE on one side only), so a request made after the failure was reported — on a
        /// busy machine the handshake can fail before the first request is even registered — fails with it at once
        /// instead of waiting for its timeout (it is still sent: a reply clears the failure).
        let failure = Mutex<ClientError?>(nil)

        /// Fails every pending request (the connection cannot work, e.g. the coordinator refused our key).
        func failAll(_ error: ClientError) {
            failure.withLock { $0 = error }
            let pending = table.withLock { t in defer { t = [:] }; return t }
            for (id, h) in pending {
                disarm(id)
                _ = h(.failure(error))
            }
        }
    }

    public convenience init(endpoint: String) throws {
        try self.init(factory: .connect(endpoint), endpoint: endpoint)
    }

    public init(factory: LinkFactory, endpoint: String) throws {
        self.endpoint = endpoint
        if case .zmqConnect(_, let o) = factory { secure = o.security != nil } else { secure = false }
        let handlers = Handlers()
        self.handlers = handlers
        var factory = factory
        // A failed handshake (key not enrolled, CURVE on one side only) fails the waiting calls at once, saying why,
        // instead of letting them run into their timeouts.
        if case .zmqConnect(let ep, var o) = factory, o.onHandshakeFailure == nil {
            o.onHandshakeFailure = { reason in handlers.failAll(.connection(reason)) }
            factory = .zmqConnect(ep, o)
        }
        let compressor = LZ4Compressor()
        // Replies are decoded and dispatched on the link's own thread: no extra task hop per reply.
        link = BridgedLink(factory, name: "sigma-client") { e in
            guard let m = try? Codec.decode(e.frames, compressor: compressor) else { return }
            let req: UInt64
            switch m {
            case .accept(let a): req = a.request
            case .progress(let p): req = p.request
            case .jobResult(let o): req = o.request
            case .resultData(let d): req = d.request
            case .statusReply(let r, _): req = r
            case .detailReply(let r, _): req = r
            case .deployments(let r, _): req = r
            case .prediction(let p): req = p.request
            case .error(let err): req = err.request
            default: return
            }
            handlers.failure.withLock { $0 = nil }   // (a reply: the handshake works now)
            handlers.disarm(req)
            let h = handlers.withLock { $0[req] }
            if let h, h(.success(m)) { handlers.withLock { _ = $0.removeValue(forKey: req) } }
        }
        if let e = link.startError { throw ClientError.connection("\(e)") }
    }

    deinit { link.close() }

    public func close() { link.close() }

    /// Runs `body` with its tasks on the client's link thread: requests are sent and replies resumed without any
    /// thread hop (the lowest-latency way to issue many small jobs in a row). `body` must not block.
    public func withLinkExecutor<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        try await withTaskExecutorPreference(link.executor, operation: body)
    }

    func request(_ make: (UInt64) -> Message, timeout: Double, what: String,
                         handler: @escaping Handler) -> UInt64 {
        let id = nextRequest.wrappingAdd(1, ordering: .relaxed).oldValue
        handlers.withLock { $0[id] = handler }
        link.send(Envelope(frames: Codec.encode(make(id), compressor: compressor)))
        // (registered first, then checked: a failure reported meanwhile either finds this request or is seen here.
        // The request is sent all the same: a handshake can fail for a while — a coordinator killed in the middle of
        // one — and work again once it is back; its reply clears the failure, and the next request is answered.)
        if let f = handlers.failure.withLock({ $0 }), let h = handlers.withLock({ $0.removeValue(forKey: id) }) {
            _ = h(.failure(f))
            return id
        }
        if timeout > 0 {
            let handlers = self.handlers, ep = endpoint, secure = self.secure
            handlers.arm(id, seconds: timeout) {
                if let h = handlers.withLock({ $0.removeValue(forKey: id) }) {
                    _ = h(.failure(.noAnswer(endpoint: ep, seconds: timeout, request: what, secure: secure)))
                }
            }
        }
        return id
    }

    /// Withdraws request `id` (WITHDRAW: the coordinator drops it, or does not send its answer); its wait here ends
    /// with `ClientError.cancelled`.
    func withdraw(_ id: UInt64) {
        link.send(Envelope(frames: Codec.encode(.withdraw(request: id), compressor: compressor)))
        handlers.disarm(id)
        if let h = handlers.withLock({ $0.removeValue(forKey: id) }) { _ = h(.failure(.cancelled)) }
    }

    /// Awaits one reply to a request.
    func call(_ make: @escaping (UInt64) -> Message, timeout: Double, what: String) async throws -> Message {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Message, Error>) in
            _ = request(make, timeout: timeout, what: what) { r in
                switch r {
                case .success(.error(let e)): k.resume(throwing: ClientError.refused(e))
                case .success(let m): k.resume(returning: m)
                case .failure(let e): k.resume(throwing: e)
                }
                return true
            }
        }
    }

    public func status(timeout: Double = 5) async throws -> ClusterStatus {
        let m = try await call({ .status(request: $0) }, timeout: timeout, what: "STATUS")
        guard case .statusReply(_, let s) = m else { throw ClientError.badReply("\(m.type.name)") }
        return s
    }

    /// One job in depth: summary, log lines from `logFrom`, and (when `attempts`) every shard attempt.
    public func detail(job: JobID, logFrom: UInt32 = 0, attempts: Bool = false, timeout: Double = 5) async throws -> JobDetail {
        let m = try await call({ .detail(request: $0, job: job, logFrom: logFrom, attempts: attempts) }, timeout: timeout, what: "DETAIL")
        guard case .detailReply(_, let d) = m else { throw ClientError.badReply("\(m.type.name)") }
        return d
    }

    /// Cancels a job; returns its state afterwards (a job already finished keeps its state).
    public func cancel(job: JobID, timeout: Double = 5) async throws -> JobProgress {
        let m = try await call({ .cancelJob(request: $0, job: job) }, timeout: timeout, what: "CANCEL-JOB")
        guard case .progress(let p) = m else { throw ClientError.badReply("\(m.type.name)") }
        return p
    }

    /// Drains a worker (by id or name): it finishes its shards, takes no new ones, and leaves.
    public func drain(worker: String, timeout: Double = 5) async throws -> ClusterStatus {
        let m = try await call({ .drainWorker(request: $0, worker: worker) }, timeout: timeout, what: "DRAIN-WORKER")
        guard case .statusReply(_, let s) = m else { throw ClientError.badReply("\(m.type.name)") }
        return s
    }

    /// Submits a job and returns once it is accepted.
    public func submit(_ spec: JobSpec, timeout: Double = 10, options: SubmitOptions = [], key: String = "") async throws -> Accept {
        let m = try await call({ .submit(Submit(request: $0, options: options, spec: spec, key: key)) }, timeout: timeout, what: "SUBMIT")
        guard case .accept(let a) = m else { throw ClientError.badReply("\(m.type.name)") }
        return a
    }

    /// An ended job's outcome, with its whole result (read in pieces when the coordinator keeps it on disk).
    public func fetch(job: JobID, timeout: Double = 10) async throws -> JobOutcome {
        let m = try await call({ .fetch(request: $0, job: job) }, timeout: timeout, what: "FETCH")
        guard case .jobResult(let o) = m else { throw ClientError.badReply("\(m.type.name)") }
        return try await whole(o, timeout: max(timeout, 30))
    }

    /// `o` with its whole result: a result the coordinator keeps on disk (`o.isStored`) is read with RESULT-GET in
    /// pieces of 16 MiB, four asked at a time; `timeout` bounds the wait for each piece.
    public func whole(_ o: JobOutcome, timeout: Double = 30) async throws -> JobOutcome {
        guard o.isStored else { return o }
        guard o.size <= UInt64(Int.max / 2) else { throw ClientError.badReply("JOB-RESULT of \(o.size) bytes") }
        let size = Int(o.size), piece = Int(ResultGet.maxLength), job = o.job
        var pieces: [Int: Frame] = [:]
        try await withThrowingTaskGroup(of: (Int, Frame).self) { group in
            var next = 0
            func ask() {
                let offset = next
                next += piece
                group.addTask {
                    let m = try await self.call({ .resultGet(ResultGet(request: $0, job: job, offset: UInt64(offset), length: UInt32(piece))) },
                                                timeout: timeout, what: "RESULT-GET")
                    guard case .resultData(let d) = m, d.job == job, d.size == UInt64(size), d.offset == UInt64(offset),
                          d.payload.count == min(piece, size - offset) else {
                        throw ClientError.badReply("\(m.type.name) does not answer RESULT-GET of job \(job) at \(offset)")
                    }
                    return (offset, d.payload)
                }
            }
            for _ in 0..<4 where next < size { ask() }
            while let (offset, frame) = try await group.next() {
                pieces[offset] = frame
                if next < size { ask() }
            }
        }
        var whole = o
        whole.payload = Frame(count: size) { b in
            for (offset, frame) in pieces { frame.withUnsafeBytes { f in (b.baseAddress! + offset).copyMemory(from: f.baseAddress!, byteCount: f.count) } }
        }
        return whole
    }

    /// Events of a running job, as they arrive.
    public enum JobEvent: Sendable {
        case accepted(Accept)
        case progress(JobProgress)
        case finished(JobOutcome)
    }

    /// Submits a job and follows it to the end: ACCEPT, PROGRESS (if `watch`), then JOB-RESULT.
    /// `acceptTimeout` bounds the wait for ACCEPT (seconds); the job itself may run as long as it needs.
    public func run(_ spec: JobSpec, watch: Bool = true, acceptTimeout: Double = 10, options extra: SubmitOptions = [],
                    key: String = "") -> AsyncThrowingStream<JobEvent, Error> {
        AsyncThrowingStream { continuation in
            let id = request({ .submit(Submit(request: $0, options: (watch ? SubmitOptions([.watch, .pushResult]) : SubmitOptions.pushResult).union(extra), spec: spec, key: key)) },
                             timeout: acceptTimeout, what: "SUBMIT") { r in
                switch r {
                case .success(.accept(let a)):
                    continuation.yield(.accepted(a))
                    return false
                case .success(.progress(let p)):
                    continuation.yield(.progress(p))
                    return false
                case .success(.jobResult(let o)):
                    guard o.isStored else {
                        continuation.yield(.finished(o))
                        continuation.finish()
                        return true
                    }
                    Task {
                        do {
                            continuation.yield(.finished(try await self.whole(o)))
                            continuation.finish()
                        } catch { continuation.finish(throwing: error) }
                    }
                    return true
                case .success(.error(let e)):
                    continuation.finish(throwing: ClientError.refused(e))
                    return true
                case .success(let m):
                    continuation.finish(throwing: ClientError.badReply(m.type.name))
                    return true
                case .failure(let e):
                    continuation.finish(throwing: e)
                    return true
                }
            }
            let handlers = self.handlers
            continuation.onTermination = { _ in
                handlers.disarm(id)
                _ = handlers.withLock { $0.removeValue(forKey: id) }
            }
        }
    }

    /// Submits and waits for the outcome (no progress events). One continuation, resumed once, on the link
    /// thread: the cheapest round trip the client offers.
    public func runToEnd(_ spec: JobSpec, acceptTimeout: Double = 10) async throws -> JobOutcome {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<JobOutcome, Error>) in
            _ = request({ .submit(Submit(request: $0, options: [.pushResult, .deferAccept], spec: spec)) },
                        timeout: acceptTimeout, what: "SUBMIT") { r in
                switch r {
                case .success(.accept):
                    return false
                case .success(.jobResult(let o)) where o.isStored:
                    Task {
                        do { k.resume(returning: try await self.whole(o)) } catch { k.resume(throwing: error) }
                    }
                case .success(.jobResult(let o)):
                    k.resume(returning: o)
                case .success(.error(let e)): k.resume(throwing: ClientError.refused(e))
                case .success(let m): k.resume(throwing: ClientError.badReply(m.type.name))
                case .failure(let e): k.resume(throwing: e)
                }
                return true
            }
        }
    }
}

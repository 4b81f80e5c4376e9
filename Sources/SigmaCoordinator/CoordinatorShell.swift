import Foundation
import Logging
import SigmaCoordinatorCore
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

/// Runs a `CoordinatorCore` on one poller thread that owns the coordinator's ROUTER socket: decodes what
/// arrives, feeds the core, carries out its actions, and ticks it on a timer.
public final class CoordinatorShell: Sendable {
    public struct Options: Sendable {
        public var core: CoordinatorConfig = {
            var c = CoordinatorConfig()
            c.build = BuildIdentity.described(sigmaBuild)
            return c
        }()
        /// What peers may send; the core plans within its payload limit (collective segment starts).
        public var limits = ProtocolLimits.standard { didSet { core.maxPayload = limits.maxPayload } }
        /// How often the core is ticked, nanoseconds.
        public var tickInterval: Nanos = 50_000_000
        /// Offer same-host workers shared memory for large payloads (also off when `SIGMA_SHM=0`).
        public var sharedMemory = true
        /// The folders job files are read from and checkpoints written into (`--data-root`; the sizes a spec may ask
        /// for are `core.specLimits`).
        public var dataRoots = DataRoots.currentDirectory()
        /// The job kinds this coordinator runs.
        public var kinds = JobKinds.standard
        /// Where the journal lives (`--state-dir`); nil: no journal, a restart forgets every job.
        public var stateDirectory: String? = nil
        /// With a journal: seconds of training between the checkpoints a train job that asks for none gets
        /// (`coordinator.checkpoint_seconds`).
        public var checkpointSeconds: Double = 30
        public init() {}
    }

    let shared: Shared
    private let thread: Mutex<OSThread?>
    /// The endpoint bound (with the real port when port 0 was asked for).
    public let endpoint: String
    /// Results larger than this are kept on disk (`ResultStore`) and read by clients in pieces (RESULT-GET).
    public static let inlineResultBytes: UInt64 = 64 << 10

    final class Shared: Sendable {
        let stopping = Atomic<Bool>(false)
        let waker = Mutex<Waker?>(nil)
        let started = Mutex<Result<String, TransportError>?>(nil)
        let startedSignal = Waker()
        let snapshot = Mutex<ClusterStatus?>(nil)
        let rejected = Atomic<Int>(0)
        /// Messages the poller thread has received and sent (for `sigma bench coordinator`'s per-message cost).
        let messagesIn = Atomic<Int>(0)
        let messagesOut = Atomic<Int>(0)
        /// Jobs a reader (the web dashboard) asked about, and when; their details are published while asked for.
        let wanted = Mutex<[JobID: Nanos]>([:])
        let details = Mutex<[JobID: (at: Nanos, detail: JobDetail?)]>([:])
        /// Histogram samples the core gathered (shard round trips, reduce times, ns), until a reader takes them.
        let samples = Mutex(CoordinatorSamples())
        /// Submissions the resolver thread has prepared, waiting for the poller thread.
        let resolved = Mutex<[Resolution]>([])
        /// FILE-DATA (or ERROR) read by the file server, for the poller to send.
        let fileReplies = Mutex<[(PeerID, Message)]>([])
        /// Results the store writer wrote (or could not: why), for the core; shard results it filed, for the journal.
        let storedResults = Mutex<[(JobID, String?)]>([])
        let filedShards = Mutex<[(job: JobID, shard: ShardIndex)]>([])
        /// Requests from this process (the HTTP API) for the poller, and their waiting callers by request id.
        let local = LocalRequests()
        /// The deployments as of the last tick (`sigma top`, the dashboard, `/metrics`).
        let deployments = Mutex<[DeploymentStatus]>([])
    }

    /// Binds and starts serving; throws if the endpoint cannot be bound.
    public init(_ factory: LinkFactory, options: Options = Options(), logger: Logger = Logger(label: "sigma.coordinator")) throws {
        // The journal first: a journal that cannot be used stops the start (never a fresh start that forgets jobs).
        var journaled = options
        let journal = try options.stateDirectory.map { try Journal(folder: $0) }
        // Train jobs that ask for no checkpoints get them in the state folder (`checkpoints/`, a root to write into).
        let checkpoints = try journal.map { _ in try AutoCheckpoints(stateFolder: options.stateDirectory!) }
        if let checkpoints { journaled.dataRoots = try DataRoots(options.dataRoots.folders + [checkpoints.folder]) }
        var restored = try journal.map { try CoordinatorShell.restored($0, options: journaled, logger: logger) }
        journaled.core.journal = journal != nil
        // Results over 64 KiB are kept on disk, in the state folder (or a temporary one), never in memory.
        let store = try ResultStore(stateFolder: options.stateDirectory)
        if let jobs = restored?.jobs {
            for (i, r) in jobs.enumerated() where r.storedResult != nil && store.size(r.job.id) != r.storedResult {
                logger.error("job \(r.job.id)'s result file \(store.path(r.job.id)) is missing or damaged (the host lost power since it was written?); the job stays listed without its result")
                restored?.jobs[i].storedResult = nil
                restored?.jobs[i].resultDropped = true
            }
            store.sweep(keeping: Set((restored?.jobs ?? []).filter { $0.storedResult != nil }.map(\.job.id)))
        }
        let journaledJobs = restored
        checkpoints?.restore(restored?.jobs ?? [])
        journaled.core.storeResultsOver = journaled.core.storeResultsOver ?? Self.inlineResultBytes
        let options = journaled
        TensorStorage.tuneHeap()   // before our threads allocate: parameter and gradient buffers are reused, not re-faulted
        // The coordinator's own engine work (a train job's held-out evaluation) runs single-threaded BLAS, as workers
        // and --local runs do: OpenBLAS's multi-threaded products are not always the same bits.
        BLASInfo.setThreads(1)
        // Its element-wise passes over a step's gradient (tree additions, the SGD pass) run on up to 8 of the host's
        // cores (ElementChunks).
        ComputeLanes.shared.configure(total: max(ComputeLanes.shared.total, ProcessInfo.processInfo.activeProcessorCount))
        if options.sharedMemory { SharedMemoryPool.install() }   // PARAMS written once, read by every same-host worker
        let shared = Shared()
        self.shared = shared
        let t = OSThread(name: "sigma-coord") {
            let link: MessageLink
            do {
                link = try factory.make()
            } catch {
                shared.started.withLock { $0 = .failure(error as? TransportError ?? .closed) }
                shared.startedSignal.wake()
                return
            }
            shared.waker.withLock { $0 = link.waker }
            let ep = (link as? ZmqLink)?.endpoint ?? "\(factory)"
            shared.started.withLock { $0 = .success(ep) }
            shared.startedSignal.wake()
            let resolver = Resolver(shared: shared, waker: link.waker, kinds: options.kinds, roots: options.dataRoots, limits: options.core.specLimits)
            let files = FileServer(shared: shared, waker: link.waker)
            var loop = Loop(link: link, options: options, logger: logger, shared: shared, resolver: resolver, files: files, journal: journal,
                            checkpoints: checkpoints, store: store, compressor: AdaptiveCompressor(bandwidth: AdaptiveCompressor.bandwidth(for: ep)))
            if let (next, jobs) = journaledJobs { loop.restore(next: next, jobs) }
            if let journal {
                do { loop.redeploy(try journal.deployments()) } catch { logger.error("\(error): its deployments are not deployed again; deploy them with: sigma deploy SPEC") }
            }
            loop.run()
            resolver.stop()
            files.stop()
            loop.writer.stop()   // (writes asked for finish; a job whose end was not journaled yet runs again after a restart)
            store.removeIfTemporary()
            link.close()
        }
        thread = Mutex(t)
        while shared.started.withLock({ $0 }) == nil {
            var p = pollfd(fd: shared.startedSignal.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
        }
        switch shared.started.withLock({ $0 })! {
        case .success(let ep): endpoint = ep
        case .failure(let e):
            t.join()
            throw e
        }
    }

    /// The latest status snapshot (refreshed every tick).
    public var status: ClusterStatus? { shared.snapshot.withLock { $0 } }

    /// One job with its shard attempts, as of at most ~0.5 s ago; nil if the coordinator has no such job.
    /// Never touches the core: the poller thread publishes details of asked-for jobs between events.
    public func jobDetail(_ id: JobID) async -> JobDetail? {
        let asked = monotonicNanos()
        shared.wanted.withLock { $0[id] = asked }
        for _ in 0..<40 {
            if let d = shared.details.withLock({ $0[id] }), asked &- d.at < 500_000_000 || d.at >= asked { return d.detail }
            try? await Task.sleep(nanoseconds: 25_000_000)
        }
        return nil
    }

    /// Takes the histogram samples gathered since the last call (ns).
    public func takeSamples() -> CoordinatorSamples {
        shared.samples.withLock { s in
            defer { s = CoordinatorSamples() }
            return s
        }
    }

    /// Messages received from and sent to peers (workers and clients) since start.
    public var messageCounts: (received: Int, sent: Int) {
        (shared.messagesIn.load(ordering: .relaxed), shared.messagesOut.load(ordering: .relaxed))
    }

    /// Messages rejected by the decoder so far.
    public var rejectedMessages: Int { shared.rejected.load(ordering: .relaxed) }

    public func stop() {
        shared.local.failAll()
        shared.stopping.store(true, ordering: .releasing)
        shared.waker.withLock { $0 }?.wake()
        let t = thread.withLock { t -> OSThread? in
            defer { t = nil }
            return t
        }
        t?.join()
    }

    deinit { stop() }

    /// The poller thread's state (never leaves that thread).
    struct Loop {
        let link: MessageLink
        let options: Options
        let logger: Logger
        let shared: Shared
        var core: CoordinatorCore
        let compressor: AdaptiveCompressor
        let resolver: Resolver
        let files: FileServer
        var nextTick: Nanos
        /// Same-host shared memory per worker (docs/protocol.md §6): offered in HELLO, accepted in READY.
        var shmOffered: Set<PeerID> = []
        var carriers: [PeerID: SharedMemoryCarrier] = [:]
        /// ZAP user ids seen, parsed (bounded: cleared past 10,000 distinct ids).
        var principals: [String: Principal] = [:]
        var lastUser: (id: String, principal: Principal) = ("\u{0}", .trusted)
        /// Submissions prepared on this thread (`resolveInput` of a spec naming no file), answered after this round.
        var resolvedHere: [Resolution] = []
        /// With a journal: this round's entries, and the actions held until they are written (`flush`).
        let journal: Journal?
        let checkpoints: AutoCheckpoints?
        var journalBatch: [JournalEntry] = []
        var held: [CoordinatorAction] = []
        var endsSinceTrim = 0
        /// Finished jobs' large results, on disk, written by `writer`'s thread.
        let store: ResultStore
        let writer = StoreWriter()
        /// A large result (or shard result) left memory: give the freed pages back to the system at the first tick
        /// after this time (the store writer lets go of what it wrote just after it reports it).
        var trimHeapAfter: Nanos? = nil
        /// When the deployments' figures were last published for readers.
        var deploymentsPublishedAt: Nanos = 0

        init(link: MessageLink, options: Options, logger: Logger, shared: Shared, resolver: Resolver, files: FileServer, journal: Journal?,
             checkpoints: AutoCheckpoints?, store: ResultStore, compressor: AdaptiveCompressor) {
            self.journal = journal
            self.checkpoints = checkpoints
            self.store = store
            self.compressor = compressor
            self.resolver = resolver
            self.files = files
            self.link = link
            self.options = options
            self.logger = logger
            self.shared = shared
            let now = monotonicNanos()
            core = CoordinatorCore(config: options.coreConfig, now: now)
            nextTick = now + options.tickInterval
        }

        mutating func run() {
            defer { carriers = [:] }   // unlinks the coordinator's segments
            while !shared.stopping.load(ordering: .acquiring) {
                let now = monotonicNanos()
                let wake = min(nextTick, core.serveWake ?? .max)
                let timeout = !resolvedHere.isEmpty ? 0 : wake > now ? Int32(min((wake - now + 999_999) / 1_000_000, 1000)) : 0
                do {
                    try link.wait(timeoutMs: timeout)
                    var n = 0
                    while n < 10_000, let e = try link.receive() {
                        handle(e)
                        n += 1
                    }
                } catch {
                    logger.error("coordinator transport failed: \(error)")
                    return
                }
                for m in shared.local.take() { perform(core.handle(.received(LocalRequests.peer, m), now: monotonicNanos())) }
                if let due = core.serveWake, monotonicNanos() >= due { perform(core.handle(.serveDue, now: monotonicNanos())) }
                let resolvedHere = resolvedHere
                self.resolvedHere = []
                let resolved = shared.resolved.withLock { r -> [Resolution] in
                    defer { r.removeAll() }
                    return r
                }
                for (peer, submit, input, digests, who) in resolvedHere + resolved {
                    perform(core.handle(.inputResolved(peer, submit, input, digests: digests, from: who), now: monotonicNanos()))
                }
                for (job, error) in shared.storedResults.withLock({ r in defer { r.removeAll() }; return r }) {
                    perform(core.handle(.resultStored(job: job, error: error), now: monotonicNanos()))
                    trimHeapAfter = monotonicNanos() + 100_000_000
                }
                for (peer, m) in shared.fileReplies.withLock({ r in defer { r.removeAll() }; return r }) {
                    link.send(Envelope(peer: peer, frames: Codec.encode(m, compressor: compressor, carrier: carriers[peer])))
                    shared.messagesOut.add(1, ordering: .relaxed)
                }
                let t = monotonicNanos()
                if t >= nextTick {
                    perform(core.handle(.tick, now: t))
                    if !carriers.isEmpty {
                        let live = core.livePeers
                        carriers = carriers.filter { live.contains($0.key) }   // a dead worker's segments are unlinked
                    }
                    shared.snapshot.withLock { $0 = core.status(now: t) }
                    // (twice a second: each deployment's figures sort its last 2,000 latencies)
                    if t &- deploymentsPublishedAt >= 500_000_000 {
                        deploymentsPublishedAt = t
                        shared.deployments.withLock { $0 = core.deploymentList(now: t) }
                    }
                    publishForReaders(now: t)
                    if let after = trimHeapAfter, t >= after {
                        trimHeapAfter = nil
                        TensorStorage.releaseFreeMemory()
                    }
                    shared.rejected.store(core.rejectedMessages, ordering: .relaxed)
                    nextTick = t + options.tickInterval
                }
                flush()
            }
        }

        /// Samples for the metrics, and details of the jobs a reader asked about in the last 10 s (each at most
        /// every 0.5 s): bounded work, between events, never waiting on a reader.
        mutating func publishForReaders(now: Nanos) {
            let taken = core.takeSamples()
            if !taken.shards.isEmpty || !taken.reduces.isEmpty {
                shared.samples.withLock { s in
                    if s.shards.count < 200_000 { s.shards += taken.shards }
                    if s.reduces.count < 200_000 {
                        s.reduces += taken.reduces
                        s.optimizers += taken.optimizers
                    }
                }
            }
            let wanted = shared.wanted.withLock { w -> [JobID] in
                w = w.filter { now &- $0.value < 10_000_000_000 }
                return Array(w.keys)
            }
            guard !wanted.isEmpty else {
                shared.details.withLock { if !$0.isEmpty { $0 = [:] } }
                return
            }
            let stale = shared.details.withLock { d in wanted.filter { d[$0].map { now &- $0.at >= 500_000_000 } ?? true } }
            var fresh: [JobID: (at: Nanos, detail: JobDetail?)] = [:]
            for id in stale { fresh[id] = (now, core.detail(job: id, attempts: true, now: now)) }
            shared.details.withLock { d in
                d = d.filter { wanted.contains($0.key) }
                d.merge(fresh) { $1 }
            }
        }

        mutating func handle(_ e: Envelope) {
            guard let peer = e.peer else { return }
            let received = monotonicNanos()
            shared.messagesIn.add(1, ordering: .relaxed)
            let event: CoordinatorEvent
            do {
                let m = try Codec.decode(e.frames, limits: options.limits, compressor: compressor, carrier: carriers[peer])
                if case .hello(let h) = m {
                    carriers[peer] = nil
                    if options.sharedMemory, SharedMemory.offered(in: h.features) { shmOffered.insert(peer) } else { shmOffered.remove(peer) }
                }
                // Who the connection was admitted as; a link without authentication (in-process, --insecure) has none.
                var who = Principal.trusted
                if let u = e.user {
                    // (parsed once per distinct user id, not per message; the sender before is checked first)
                    if u == lastUser.id {
                        who = lastUser.principal
                    } else if let known = principals[u] {
                        who = known
                        lastUser = (u, known)
                    } else {
                        guard let p = Principal(userID: u) else {
                            logger.error("message from \(peer) without a readable ZAP user id (\(u.isEmpty ? "none" : "malformed")); dropped")
                            return
                        }
                        if principals.count >= 10_000 { principals.removeAll() }
                        principals[u] = p
                        lastUser = (u, p)
                        who = p
                    }
                }
                if case .deploy(let request, let spec) = m {
                    event = .deploy(peer, request: request, CoordinatorShell.deployment(spec, kinds: options.kinds, limits: options.core.specLimits), from: who)
                } else {
                    event = .received(peer, m, from: who)
                }
            } catch let d as DecodeError {
                event = .rejected(peer, d)
            } catch {
                event = .rejected(peer, DecodeError(.badRequest, nil, "\(error)"))
            }
            let actions = core.handle(event, now: monotonicNanos())
            perform(actions)
            // (a result that started a training step's next round: the coordinator's turnaround on the critical path)
            if case .received(_, .result, _) = event, actions.contains(where: { if case .send(_, .assign(let a)) = $0 { a.round > 0 } else { false } }) {
                let t = monotonicNanos() &- received
                shared.samples.withLock { if $0.turnarounds.count < 200_000 { $0.turnarounds.append(t) } }
            }
        }

        /// Carries out the core's actions; with a journal, holds them until this round's entries are written.
        mutating func perform(_ actions: [CoordinatorAction]) {
            guard journal != nil else { return performNow(actions) }
            for a in actions {
                switch a {
                case .journal(.committed(let job, let shard, let payload)) where payload.count > Journal.inlineShardBytes:
                    // (its file is written off this thread; its row follows when it is there)
                    let (journal, shared, waker) = (journal!, shared, link.waker)
                    writer.push {
                        do { try journal.writeShard(job, shard, payload) } catch { return }   // (it runs again after a restart)
                        shared.filedShards.withLock { $0.append((job, shard)) }
                        waker.wake()
                    }
                case .journal(let e): journalBatch.append(e)
                default: held.append(a)
                }
            }
        }

        mutating func performNow(_ actions: [CoordinatorAction]) {
            // (writeFile runs on this thread: small for the job kinds we have; see docs/architecture.md)
            for a in actions {
                switch a {
                case .send(let peer, let m) where peer == LocalRequests.peer:
                    shared.local.answer(m)
                case .send(let peer, var m):
                    if case .ready(var r) = m, shmOffered.remove(peer) != nil {
                        r.features = r.features.isEmpty ? "shm" : r.features + ",shm"
                        m = .ready(r)
                        carriers[peer] = SharedMemoryCarrier()
                        logger.info("worker \(r.workerID) shares memory with the coordinator: payloads ≥ 1 MiB go through /dev/shm")
                    }
                    link.send(Envelope(peer: peer, frames: Codec.encode(m, compressor: compressor, carrier: carriers[peer])))
                    shared.messagesOut.add(1, ordering: .relaxed)
                case .resolveInput(let peer, var submit, let who):
                    submit.spec = journaled(submit.spec)
                    if let opened = try? options.kinds.open(submit.spec), opened.paths.isEmpty {
                        // (a spec that names no file is prepared here: no disk to wait for, no thread hand-off)
                        let (input, digests) = CoordinatorShell.resolve(opened, kinds: options.kinds, roots: options.dataRoots,
                                                                        limits: options.core.specLimits)
                        resolvedHere.append((peer, submit, input, digests, who))
                    } else {
                        resolver.push(peer, submit, who)
                    }
                case .writeFile(let f):
                    // (checkpoints: never replacing a file, which the train kind's `prepare` found absent at submit time)
                    do { try OutputFiles.write(f, replacing: false) } catch { logger.error("\(error)") }
                case .serveFile(let peer, let g, let file, let count):
                    let roots = options.dataRoots
                    serve(peer, request: g.request, "FILE-GET job \(g.job) file \(g.index)") { CoordinatorShell.fileData(g, file, files: count, roots: roots) }
                case .serveResult(let peer, let g, let size):
                    let store = store
                    serve(peer, request: g.request, "RESULT-GET job \(g.job)") {
                        do {
                            return .resultData(ResultData(request: g.request, job: g.job, size: size, offset: g.offset,
                                                          payload: try store.read(g.job, offset: g.offset, length: g.length, size: size)))
                        } catch {
                            return .error(ErrorReply(.internalError, request: g.request, "RESULT-GET job \(g.job): \(error)"))
                        }
                    }
                case .storeResult(let job, let bytes):
                    let (store, shared, waker) = (store, shared, link.waker)
                    writer.push {
                        var problem: String? = nil
                        do { try store.write(job, bytes) } catch { problem = "\(error)" }
                        shared.storedResults.withLock { $0.append((job, problem)) }
                        waker.wake()
                    }
                case .discardResult(let job):
                    let store = store
                    writer.push { store.discard(job) }   // (after any write of it still queued)
                case .journal(let e):
                    do { try journal?.write([e]) } catch { logger.critical("\(error)") }
                case .log(let level, let text, let job):
                    let metadata: Logger.Metadata? = job.map { ["job": "\($0)"] }
                    switch level {
                    case .debug: logger.debug("\(text)", metadata: metadata)
                    case .info: logger.info("\(text)", metadata: metadata)
                    case .warning: logger.warning("\(text)", metadata: metadata)
                    case .error: logger.error("\(text)", metadata: metadata)
                    }
                }
            }
        }
    }

    /// Reads submissions' inputs on its own thread — a data file's header, an ML job's data and model (a model
    /// load takes seconds on a busy machine) — so the poller thread keeps answering heartbeats meanwhile.
    /// Results go to `Shared.resolved` and wake the poller thread.
    typealias Resolution = (PeerID, Submit, Result<any RoundDriver, JobError>, InputDigests, Principal)

    final class Resolver: @unchecked Sendable {
        private let queue = BlockingQueue<(PeerID, Submit, Principal)>()
        private var thread: OSThread?

        init(shared: Shared, waker: Waker, kinds: JobKinds, roots: DataRoots, limits: SpecLimits) {
            thread = OSThread(name: "sigma-resolve") { [queue] in
                while let (peer, submit, who) = queue.next() {
                    let (input, digests) = CoordinatorShell.resolve(submit.spec, kinds: kinds, roots: roots, limits: limits)
                    shared.resolved.withLock { $0.append((peer, submit, input, digests, who)) }
                    waker.wake()
                }
            }
        }

        func push(_ peer: PeerID, _ submit: Submit, _ who: Principal) { queue.push((peer, submit, who)) }

        /// Ends the thread after the submission being read, if any; those still queued are dropped.
        func stop() {
            queue.close(dropping: true)
            thread?.join()
            thread = nil
        }
    }
}

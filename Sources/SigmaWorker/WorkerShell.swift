import Foundation
import Logging
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import SigmaWorkerCore
import Synchronization

/// Runs a `WorkerCore` on a poller thread that owns the worker's DEALER socket, and shards on separate
/// compute threads, so heartbeats never wait on compute.
public final class WorkerShell: Sendable {
    public struct Options: Sendable {
        public var slots: Int
        public var name: String
        public var limits = ProtocolLimits.standard
        public var tickInterval: Nanos = 50_000_000
        /// Shards of at most this many rows run on the poller thread itself: they take microseconds, and a
        /// hand-off to a compute thread would cost two thread wake-ups (~50 µs each on small VMs).
        public var inlineRows: UInt64 = 4096
        /// An ML shard runs on the poller thread too (two wake-ups saved: a small model's training step is mostly
        /// round trip) when compute thread 0 is idle, nothing is queued, and the job's last shard here took at most
        /// this long — so heartbeats wait at most about that. 0: never.
        public var inlineComputeNanos: UInt64 = 20_000_000
        /// Where input files shipped by the coordinator are kept (`input_transport: coordinator`), by SHA-256.
        public var cacheDirectory: String = InputFetcher.defaultDirectory
        /// Most bytes that cache keeps (0: no limit); least recently used entries go first.
        public var cacheLimit: UInt64 = 20 << 30
        /// The folders this worker reads job files from (`--data-root`); files shipped by the coordinator are read
        /// from the cache instead.
        public var dataRoots = DataRoots.currentDirectory()
        /// Sizes a spec may ask of this worker: a shard of a job beyond them fails (the worker allocates nothing for it).
        public var specLimits = SpecLimits.standard
        /// The job kinds this worker runs.
        public var kinds = JobKinds.standard
        /// The address and port other workers reach this one on for collective training steps (`--peer-address`,
        /// `--peer-port`); nil: the address this host reaches the coordinator from; port 0: any free port.
        public var peerHost: String? = nil
        public var peerPort: Int = 0
        /// How those links authenticate; nil: as the link to the coordinator does (`peerSecurity(of:)`). Spell out
        /// `PeerSecurity.none` for none: a bare `.none` here is nil.
        public var peerSecurity: PeerSecurity? = nil
        public init(slots: Int = max(1, ProcessInfo.processInfo.activeProcessorCount), name: String = "worker") {
            self.slots = slots
            self.name = name
        }
    }

    let shared: Shared
    private let threads: Mutex<[OSThread]>
    let fetcher: InputFetcher
    let serve: ServeHost

    public init(_ factory: LinkFactory, options: Options = Options(), logger: Logger = Logger(label: "sigma.worker")) {
        let kernels = WorkerShell.kernels
        if let warning = kernels.warning {
            logger.warning("\(warning)", metadata: ["blas": "\(kernels.running)", "blas.best": "\(kernels.best)"])
        } else {
            logger.info("OpenBLAS kernels: \(kernels.running) (\(kernels.choice.rawValue): \(kernels.note))")
        }
        TensorStorage.tuneHeap()   // before our threads allocate: parameter and gradient buffers are reused, not re-faulted
        SharedMemoryPool.install()   // gradients written straight into shared memory (no-op when it is off)
        let (mesh, peerFeatures) = WorkerShell.peerMesh(factory, options: options, logger: logger)
        let shared = Shared(kinds: options.kinds, roots: options.dataRoots, limits: options.specLimits, mesh: mesh, logger: logger)
        self.shared = shared
        let fetcher = InputFetcher(directory: options.cacheDirectory, limit: options.cacheLimit, wake: { [shared] in shared.waker.withLock { $0 }?.wake() })
        self.fetcher = fetcher
        let serve = ServeHost(kinds: options.kinds, roots: options.dataRoots, limits: options.specLimits, logger: logger,
                              wake: { [shared] in shared.waker.withLock { $0 }?.wake() })
        self.serve = serve
        let hello = Hello(build: BuildIdentity.described(sigmaBuild), cores: UInt16(ProcessInfo.processInfo.activeProcessorCount), slots: UInt32(options.slots),
                          memory: ProcessInfo.processInfo.physicalMemory, host: ProcessInfo.processInfo.hostName,
                          name: options.name, instance: UUID().uuidString, features: WorkerShell.features(options.kinds) + peerFeatures)
        ComputeLanes.shared.reserve { [shared] in shared.work.count }
        var ts: [OSThread] = []
        for i in 0..<options.slots {
            ts.append(OSThread(name: "sigma-compute-\(i)") { WorkerShell.computeLoop(shared, fetcher: fetcher, index: i) })
        }
        ts.append(OSThread(name: "sigma-worker") {
            var loop = Loop(factory: factory, options: options, hello: hello, logger: logger, shared: shared, fetcher: fetcher, serve: serve)
            loop.run()
            shared.mesh?.close()   // (compute threads waiting for peers get .closed)
            serve.stop()
            shared.work.close()
            shared.stopped.store(true, ordering: .releasing)
        })
        threads = Mutex(ts)
    }

    /// What this worker offers: the job kinds it runs, LZ4, and the BLAS kernel set, how it was chosen and the best this CPU could run
    /// (`blas=…,blas-choice=…,blas-best=…`).
    public static func features(_ kinds: JobKinds = .standard) -> String {
        (kinds.names + ["lz4", kernels.features]).joined(separator: ",") + (SharedMemory.feature.map { "," + $0 } ?? "")
    }

    /// The kernel set `sigma` chose at process start (`BLASKernels.startup`), or, in a process that never ran the
    /// choice (tests embedding a worker), a report of OpenBLAS's own without switching anything.
    static var kernels: BLASKernels.Status { BLASKernels.current ?? BLASKernels.reportOnly() }

    /// The id the coordinator gave this worker, once registered.
    public var workerID: String? { shared.workerID.withLock { $0 } }
    /// Why the worker gave up, if it did (e.g. refused for an incompatible version).
    public var fatalError: String? { shared.fatal.withLock { $0 } }
    public var isStopped: Bool { shared.stopped.load(ordering: .acquiring) }
    public var shardsCompleted: Int { shared.completed.load(ordering: .relaxed) }

    /// Says goodbye to the coordinator, stops the threads and waits for them.
    public func stop() {
        shared.stopping.store(true, ordering: .releasing)
        shared.waker.withLock { $0 }?.wake()
        wait()
    }

    /// Finishes the shards held, takes no new ones, then leaves (the process's SIGTERM). Returns at once.
    public func drain() {
        shared.draining.store(true, ordering: .releasing)
        shared.waker.withLock { $0 }?.wake()
    }

    /// Waits until the worker has stopped (after `stop()` or a fatal refusal).
    public func wait() {
        let ts = threads.withLock { t -> [OSThread] in
            defer { t = [] }
            return t
        }
        for t in ts.reversed() { t.join() }
    }

    /// What a thread computing shards keeps between them: each job's shard worker (data, model, open files) and its
    /// localized spec. Used by one thread at a time (compute thread 0's sits in `Shared.primary`, which the poller
    /// borrows for short shards).
    final class ComputeContext {
        let runner: ShardRunner
        var seen = 0
        /// An ended job this context was running a task of when it heard: forgotten at the next look.
        var endedLater: Set<JobID> = []
        /// Specs of jobs as this thread runs them: reading the cache's copies of files the coordinator shipped, or
        /// the real paths of files under the data roots.
        /// (with the spec as assigned: a restarted coordinator numbers its jobs from 1 again)
        var localized: [JobID: (assigned: JobSpec, local: OpenSpec)] = [:]

        let kinds: JobKinds

        init(kinds: JobKinds, roots: DataRoots, limits: SpecLimits) {
            self.kinds = kinds
            runner = ShardRunner(kinds: kinds, roots: roots, limits: limits)
        }

        /// Runs `task`; nil (nothing done) when its inputs still have to be fetched and `mayFetch` is false — the
        /// poller must not wait for answers only it can receive.
        func run(_ task: ShardTask, shared: Shared, fetcher: InputFetcher, mayFetch: Bool = true) -> ShardResult? {
            if shared.endedVersion.load(ordering: .acquiring) != seen {
                // (the jobs ended since this context last looked — not the whole list again, once per job that ends)
                var ended = shared.ended.withLock { e in
                    defer { seen = e.total }
                    return Set(e.since(seen)).union(endedLater)
                }
                // (a task of an ended job id — a restarted coordinator's new job — keeps its state until it has run)
                endedLater = ended.remove(task.job).map { [$0] } ?? []
                if !ended.isEmpty {
                    runner.forget(ended)
                    localized = localized.filter { !ended.contains($0.key) }
                    fetcher.release(ended)
                }
            }
            let known = localized[task.job].flatMap { $0.assigned == task.spec ? $0.local : nil }
            let opened = known == nil ? try? kinds.open(task.spec) : nil
            let shipped = opened?.inputTransport == .coordinator
            if shipped && !mayFetch { return nil }
            do {
                let spec: OpenSpec
                if let known {
                    spec = known
                } else {
                    // (checked before anything of the job is read or allocated here; a refusal is the shard's failure)
                    let o = try opened ?? kinds.open(task.spec)
                    do { try o.validate(limits: shared.limits) } catch { throw JobError("refused by this worker's limits: \(error)") }
                    spec = try shipped ? fetcher.localize(o, job: task.job) : o.rooted(shared.roots)
                    localized[task.job] = (task.spec, spec)
                }
                return WorkerShell.compute(task, spec: spec, runner: runner, shared: shared)
            } catch {
                return ShardResult(job: task.job, shard: task.shard, attempt: task.attempt, status: .failed, error: "\(error)")
            }
        }
    }

    static func computeLoop(_ shared: Shared, fetcher: InputFetcher, index: Int) {
        let own = ComputeContext(kinds: shared.kinds, roots: shared.roots, limits: shared.limits)
        while let task = shared.work.next() {
            // This thread's core is taken while it computes; a shard may borrow the lanes no other thread holds.
            ComputeLanes.shared.hold()
            defer { ComputeLanes.shared.release(1) }
            // (compute thread 0 holds the shared context while it computes: the poller then does not borrow it)
            // (a job's collective steps run on one context, compute thread 0's: the job's slice and weights live there)
            let result = index == 0 || task.collective != nil ? shared.primary.withLock { $0.run(task, shared: shared, fetcher: fetcher)! }
                                    : own.run(task, shared: shared, fetcher: fetcher)!
            shared.results.withLock { $0.append((result, task.session)) }
            shared.completed.add(1, ordering: .relaxed)
            shared.waker.withLock { $0 }?.wake()
        }
    }

    static func compute(_ task: ShardTask, spec: OpenSpec, runner: ShardRunner, shared: Shared) -> ShardResult {
        let started = monotonicNanos()
        var result: ShardResult
        do {
            let payload = try task.collective.map { try collective(task, $0, spec: spec, runner: runner, shared: shared) }
                ?? runner.run(spec, job: task.job, round: task.round, params: task.params, start: task.start, count: task.count)
            result = ShardResult(job: task.job, shard: task.shard, attempt: task.attempt, status: .ok, payload: payload)
        } catch {
            result = ShardResult(job: task.job, shard: task.shard, attempt: task.attempt, status: .failed, error: "\(error)")
        }
        result.computeTime = monotonicNanos() - started
        return result
    }

    /// The poller thread's state.
    struct Loop {
        let factory: LinkFactory
        let options: Options
        let logger: Logger
        let shared: Shared
        let fetcher: InputFetcher
        let serve: ServeHost
        var core: WorkerCore
        var link: MessageLink?
        let compressor: AdaptiveCompressor
        /// Same-host shared memory with the coordinator, once its READY accepted it (docs/protocol.md §6).
        var carrier: SharedMemoryCarrier? = nil
        var nextTick: Nanos = 0
        var reconnectAt: Nanos? = nil
        var drainAsked = false
        var finished = false
        /// The poller's own context, for short shards of jobs that name no file (map-reduce over generated values).
        let inlineContext: ComputeContext
        var inline: [ShardTask] = []
        /// Whether a job's short shards may run on this thread (`OpenSpec.runsInline`; asked once per job, bounded
        /// like `recentCompute`).
        var runsInline: [JobID: Bool] = [:]
        /// ML shards to run on this thread (see `Options.inlineComputeNanos`), and each job's last compute time.
        var inlineML: [ShardTask] = []
        var recentCompute: [JobID: UInt64] = [:]
        var loadSampler = ProcessLoadSampler()
        var loadSampledAt: Nanos = 0

        init(factory: LinkFactory, options: Options, hello: Hello, logger: Logger, shared: Shared, fetcher: InputFetcher, serve: ServeHost) {
            self.serve = serve
            self.factory = factory
            self.fetcher = fetcher
            inlineContext = ComputeContext(kinds: shared.kinds, roots: shared.roots, limits: shared.limits)
            compressor = AdaptiveCompressor(bandwidth: AdaptiveCompressor.bandwidth(for: factory.endpoint))
            self.options = options
            self.logger = logger
            self.shared = shared
            var config = WorkerCore.Config(hello: hello)
            config.maxResultBytes = options.limits.maxPayload
            core = WorkerCore(config: config)
        }

        mutating func connect() -> Bool {
            fetcher.failAll("the connection to the coordinator was reset")
            serve.reset()
            link?.close()
            link = nil
            carrier = nil
            do {
                let l = try factory.make()
                link = l
                shared.waker.withLock { $0 = l.waker }
                perform(core.handle(.connected, now: monotonicNanos()))
                return true
            } catch {
                logger.error("cannot connect: \(error)")
                return false
            }
        }

        mutating func run() {
            guard connect() else {
                shared.fatal.withLock { $0 = "cannot connect" }
                return
            }
            nextTick = monotonicNanos() + options.tickInterval
            while true {
                if shared.stopping.load(ordering: .acquiring) {
                    perform(core.handle(.stop, now: monotonicNanos()))
                    break
                }
                if shared.fatal.withLock({ $0 }) != nil || finished { break }
                if !drainAsked, shared.draining.load(ordering: .acquiring) {
                    drainAsked = true
                    perform(core.handle(.drain, now: monotonicNanos()))
                }
                if let at = reconnectAt, monotonicNanos() >= at {
                    reconnectAt = nil
                    _ = connect()
                }
                guard let l = link else { break }
                let now = monotonicNanos()
                let timeout = nextTick > now ? Int32(min((nextTick - now) / 1_000_000 + 1, 1000)) : 0
                do {
                    try l.wait(timeoutMs: timeout)
                    while link === l, let e = try l.receive() {
                        let event: WorkerEvent
                        do {
                            let m = try Codec.decode(e.frames, limits: options.limits, compressor: compressor, carrier: carrier)
                            // Answers to a compute thread's FILE-GET go to it, not to the core.
                            if case .fileData(let d) = m, fetcher.deliver(request: d.request, .success(d)) { continue }
                            // Deployments' messages go to the serving thread.
                            if serve.take(m) { continue }
                            if case .error(let x) = m, fetcher.isPending(x.request),
                               fetcher.deliver(request: x.request, .failure(InputFetcher.FetchError(description: "the coordinator refused: \(x)"))) { continue }
                            if case .ready(let r) = m {
                                carrier = r.features.split(separator: ",").contains("shm") ? SharedMemoryCarrier() : nil
                                if carrier != nil { logger.info("the coordinator shares memory with this worker: payloads ≥ 1 MiB go through /dev/shm") }
                            }
                            event = .received(m)
                        } catch let d as DecodeError {
                            if d.type == .fileData, fetcher.deliver(request: d.request, .failure(InputFetcher.FetchError(description: "bad FILE-DATA: \(d)"))) { continue }
                            event = .rejected(d)
                        } catch {
                            event = .rejected(DecodeError(.badRequest, nil, "\(error)"))
                        }
                        perform(core.handle(event, now: monotonicNanos()))
                    }
                } catch {
                    logger.error("worker transport failed: \(error)")
                    break
                }
                let done = shared.results.withLock { r -> [(ShardResult, UInt64)] in
                    defer { r.removeAll(keepingCapacity: true) }
                    return r
                }
                for (r, session) in done { computed(r, session: session) }
                for m in fetcher.outbox() + serve.replies() { link?.send(Envelope(frames: Codec.encode(m, compressor: compressor, carrier: carrier))) }
                if !inlineML.isEmpty {
                    let batch = inlineML
                    inlineML.removeAll()
                    var queued = false
                    for t in batch {
                        // (compute thread 0 busy, or the inputs still to fetch: the compute threads take it after all)
                        let r = queued ? nil : shared.primary.withLockIfAvailable { ctx in
                            // (it stands in for compute thread 0, which is idle: it holds that thread's lane)
                            ComputeLanes.shared.hold()
                            defer { ComputeLanes.shared.release(1) }
                            return ctx.run(t, shared: shared, fetcher: fetcher, mayFetch: false)
                        } ?? nil
                        guard let r else {
                            queued = true
                            shared.work.push(t)
                            continue
                        }
                        shared.completed.add(1, ordering: .relaxed)
                        computed(r, session: t.session)
                    }
                }
                while !inline.isEmpty {
                    let batch = inline
                    inline.removeAll()
                    for t in batch {
                        guard let r = inlineContext.run(t, shared: shared, fetcher: fetcher, mayFetch: false) else {
                            shared.work.push(t)
                            continue
                        }
                        shared.completed.add(1, ordering: .relaxed)
                        computed(r, session: t.session)
                    }
                }
                let t = monotonicNanos()
                if t >= nextTick {
                    if t &- loadSampledAt >= 500_000_000 {   // /proc is read at most twice a second
                        loadSampledAt = t
                        let (cpu, rss) = loadSampler.sample(now: t)
                        let (raw, wire) = compressor.totals
                        core.load = WorkerLoad()
                        core.load.cpu = cpu
                        core.load.rss = rss
                        core.load.rawOut = raw
                        core.load.wireOut = wire
                        core.load.available = ProcessLoadSampler.availableMemory() ?? 0
                    }
                    perform(core.handle(.tick, now: t))
                    nextTick = t + options.tickInterval
                }
            }
            link?.close()
            carrier = nil   // unlinks this worker's segments
        }

        mutating func runsInline(_ task: ShardTask) -> Bool {
            if let known = runsInline[task.job] { return known }
            if runsInline.count >= 256 { runsInline.removeAll() }
            let inline = (try? options.kinds.open(task.spec))?.runsInline == true
            runsInline[task.job] = inline
            return inline
        }

        /// A shard's result goes to the core; its compute time decides whether the job's next shards run here.
        mutating func computed(_ r: ShardResult, session: UInt64) {
            if recentCompute.count >= 256 { recentCompute.removeAll() }
            recentCompute[r.job] = r.status == .ok ? r.computeTime : .max
            perform(core.handle(.computed(r, session: session), now: monotonicNanos()))
        }

        mutating func perform(_ actions: [WorkerAction]) {
            for a in actions {
                switch a {
                case .send(let m):
                    link?.send(Envelope(frames: Codec.encode(m, compressor: compressor, carrier: carrier)))
                    if case .ready = core.state { shared.workerID.withLock { $0 = core.workerID } }
                case .compute(let task):
                    if let c = task.collective { WorkerShell.admitPeers(c, shared: shared) }
                    // Short shards run on this thread (two thread wake-ups saved) when nothing is queued: a few rows
                    // of a map-reduce job naming no file on the poller's own context (microseconds); others on compute thread 0's
                    // context, standing in for that thread while it is idle, once the job's last shard here proved
                    // quick — never a second core beside the compute threads.
                    let idle = shared.work.isEmpty
                    let quick = recentCompute[task.job].map { $0 <= options.inlineComputeNanos } ?? false
                    if idle, task.count <= options.inlineRows, runsInline(task) {
                        inline.append(task)
                    } else if idle, quick, task.collective == nil {
                        inlineML.append(task)
                    } else {
                        shared.work.push(task)
                    }
                case .cancel(let job, let shard, let attempt):
                    shared.collective.cancels.cancel(job: job, shard: shard, attempt: attempt)
                    // (only the attempt named: another attempt of the shard queued here is still wanted)
                    let named = { (t: ShardTask) in t.job == job && (shard == nil || (t.shard == shard && (attempt == nil || t.attempt == attempt))) }
                    shared.work.remove(where: named)
                    inlineML.removeAll(where: named)
                    inline.removeAll(where: named)
                    if shard == nil {
                        shared.ended.withLock { e in
                            e.add(job)
                            shared.endedVersion.store(e.total, ordering: .releasing)
                        }
                    }
                case .cancelAll:
                    shared.collective.cancels.cancelAll()
                    shared.work.remove { _ in true }
                    inlineML.removeAll()
                    inline.removeAll()
                case .reconnect(let reason):
                    logger.warning("reconnecting to \(factory.endpoint): \(reason)\(WorkerShell.whatListens(factory.endpoint))")
                    link?.close()
                    link = nil
                    _ = connect()
                case .fatal(let message):
                    logger.error("\(message)")
                    shared.fatal.withLock { $0 = message }
                case .finished:
                    logger.info("drained; leaving")
                    finished = true
                case .log(let level, let text):
                    shared.workerID.withLock { $0 = core.workerID }
                    switch level {
                    case .debug: logger.debug("\(text)")
                    case .info: logger.info("\(text)")
                    case .warning: logger.warning("\(text)")
                    case .error: logger.error("\(text)")
                    }
                }
            }
        }
    }
}

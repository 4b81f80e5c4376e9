import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

/// The coordinator's whole logic as a state machine: events in, actions out. No sockets, clocks or threads.
public struct CoordinatorCore {
    public let config: CoordinatorConfig
    let startedAt: Nanos
    /// Registered workers in registration order (dead ones are forgotten after a while), and where each peer is.
    var table: [WorkerEntry] = []
    var index: [PeerID: Int] = [:]
    var jobs: [JobID: JobEntry] = [:]
    /// Finished jobs, oldest first (trimmed to `keepFinishedJobs`).
    var finishedOrder: Deque<JobID> = []
    var activeJobs = 0
    var queue: Deque<ShardRef> = []
    var nextJob: JobID = 1
    var kindSlots = JobKindIndex()
    /// Bytes of the results finished jobs keep (bounded by `config.keepResultBytes`).
    var keptResultBytes: UInt64 = 0
    /// Jobs by the client-chosen id they were submitted with.
    var keyed: [String: JobID] = [:]
    /// Client-chosen ids whose first submission's input is being read, with the same-id submissions that arrived
    /// meanwhile (answered once the first is accepted or refused).
    var resolvingKeys: [String: [(PeerID, Submit)]] = [:]
    /// Submissions whose input the shell is reading, per connection (bounded: `maxResolvingPerPeer`, `maxResolving`).
    var resolving: [PeerID: Int] = [:]
    var resolvingTotal = 0
    /// Jobs each connection follows (PROGRESS watchers and pushed JOB-RESULTs of running jobs).
    var watching: [PeerID: Int] = [:]
    var nextWorker = 1
    var roundRobin = 0
    /// Results whose job was unknown or already finished.
    public internal(set) var strayResults = 0
    /// Messages rejected by the decoder.
    public internal(set) var rejectedMessages = 0
    /// Messages refused because the sender's role does not allow them.
    public internal(set) var refused = 0
    /// Shard attempts placed (the simulator reports the core's cost per decision).
    public internal(set) var decisions = 0
    /// Counters since start (STATUS, Prometheus).
    var totals = ClusterStatus.Totals()
    var rerunsOfForgottenJobs: UInt64 = 0
    /// Jobs given a collective segment (`JobEntry.collective`; an id stays until `repairCollectives` finds the job
    /// ended, or neither a segment nor a stop to handle): what that pass, run after every event, walks — it sorted
    /// every job kept (up to `keepFinishedJobs` ended ones) after every message.
    var collectiveJobs: Set<JobID> = []
    var hedgesStarted = 0
    /// Recent samples for the shell's histograms (bounded; the shell takes them): shard round trips (sent to
    /// result, ns), and reduce times of completed rounds (ns).
    var shardSamples: [UInt64] = []
    var reduceSamples: [UInt64] = []
    /// The optimizer's part of each reduce sample (0 where a job has no optimizer), index for index.
    var optimizerSamples: [UInt64] = []
    static let maxSamples = 100_000
    /// Deployments by name, their ids (on the wire to workers), and batches on workers (docs/serving.md).
    var deployments: [String: DeploymentEntry] = [:]
    var deploymentNames: [UInt32: String] = [:]
    var nextDeployment: UInt32 = 1
    var nextBatch: UInt64 = 1
    var servingBatches: [UInt64: InFlightBatch] = [:]
    /// When a queued request is next due (a batch to send behind a busy replica, a timeout): the shell sends
    /// `.serveDue` then, without waiting for its tick.
    public internal(set) var serveWake: Nanos? = nil

    /// Hands the samples gathered since the last call to the shell (metrics).
    public mutating func takeSamples() -> CoordinatorSamples {
        defer {
            shardSamples.removeAll(keepingCapacity: true)
            reduceSamples.removeAll(keepingCapacity: true)
            optimizerSamples.removeAll(keepingCapacity: true)
        }
        return CoordinatorSamples(shards: shardSamples, reduces: reduceSamples, optimizers: optimizerSamples)
    }

    /// One job in depth (nil if unknown).
    public func detail(job id: JobID, logFrom: Int = 0, attempts: Bool, now: Nanos) -> JobDetail? {
        jobs[id].map { detail($0, logFrom: logFrom, attempts: attempts, now: now) }
    }

    public init(config: CoordinatorConfig = CoordinatorConfig(), now: Nanos) {
        self.config = config
        startedAt = now
    }

    // MARK: events

    public mutating func handle(_ event: CoordinatorEvent, now: Nanos) -> [CoordinatorAction] {
        var out: [CoordinatorAction] = []
        switch event {
        case .received(let peer, let message, let who):
            heard(peer, now: now, into: &out)
            if let problem = Self.refusal(message, who) {
                refused += 1
                out.append(.send(peer, .error(ErrorReply(.forbidden, request: message.request ?? 0, problem))))
                out.append(.log(.warning, "refused \(message.type.name) from \(who): \(problem)"))
                return out
            }
            receive(peer, message, who: who, now: now, into: &out)
        case .rejected(let peer, let error):
            rejectedMessages += 1
            heard(peer, now: now, into: &out)
            // Never answer an ERROR with an ERROR (two confused peers would loop).
            if error.type != .error {
                out.append(.send(peer, .error(ErrorReply(error.code, request: error.request, "\(error)"))))
            }
            if error.type == .hello {
                out.append(.log(.warning, "refused worker \(peer): \(error)"))
            }
        case .inputResolved(let peer, let submit, let input, let digests, let who):
            if let n = resolving[peer] {
                resolving[peer] = n > 1 ? n - 1 : nil
                resolvingTotal -= 1
            }
            let before = nextJob
            defer {
                if nextJob > before, let job = jobs[before] {
                    job.inputDigest = digests.input
                    job.modelDigest = digests.model
                    job.inputFiles = digests.files
                }
            }
            switch input {
            case .success(let d): accept(peer, submit, who, driver: d, now: now, into: &out)
            case .failure(let e):
                out.append(.send(peer, .error(ErrorReply(.invalidSpec, request: submit.request, "\(submit.spec.kind) job '\(submit.spec.name)': \(e)"))))
            }
            if !submit.key.isEmpty, let parked = resolvingKeys.removeValue(forKey: Self.scoped(submit.key, who)) {
                for (p, s) in parked { receive(p, .submit(s), who: who, now: now, into: &out) }
            }
        case .tick:
            tick(now: now, into: &out)
            serveTick(now: now, into: &out)
        case .serveDue:
            serveTick(now: now, into: &out)
        case .deploy(let peer, let request, let config, let who):
            heard(peer, now: now, into: &out)
            guard who.maySubmit else {
                refused += 1
                out.append(.send(peer, .error(ErrorReply(.forbidden, request: request, who.refusal("DEPLOY", needs: [.client, .admin])))))
                return out
            }
            switch config {
            case .success(let c): deploy(peer, request: request, c, who: who, now: now, into: &out)
            case .failure(let e): out.append(.send(peer, .error(e)))
            }
        case .resultStored(let job, let error):
            resultStored(job, error: error, now: now, into: &out)
        case .restore(let next, let restored):
            restore(next: next, restored, now: now, into: &out)
        }
        repairCollectives(now: now, into: &out)
        dispatch(now: now, into: &out)
        captureJobLogs(&out, now: now)
        return out
    }

    /// Lines logged about a job (their `job`) go to that job's log too (`sigma logs`).
    /// Job log lines go to their job's log (and, with a journal, into it).
    func captureJobLogs(_ out: inout [CoordinatorAction], now: Nanos) {
        var logged: [CoordinatorAction] = []
        for a in out {
            guard case .log(let level, let text, let id?) = a, let job = jobs[id] else { continue }
            job.log(level, text, now: now)
            if config.journal, let line = job.logs.last { logged.append(.journal(.logged(job: id, line: line))) }
        }
        out += logged
    }

    func summary(_ j: JobEntry, now: Nanos) -> ClusterStatus.Job {
        var s = ClusterStatus.Job(id: j.id, name: j.spec.name, kind: j.spec.kind, state: j.state, done: j.restoredShards ?? UInt32(j.done),
                                  total: UInt32(j.shardCount), running: UInt32(j.running), reruns: UInt32(j.reruns),
                                  duplicates: UInt32(j.duplicates), elapsed: (j.endedAt ?? now) &- j.submittedAt, error: j.error)
        s.key = j.key
        s.hedges = UInt32(j.hedges)
        s.hedgesWon = UInt32(j.hedgesWon)
        s.items = j.itemsDone
        if j.state == .running, let r = j.pace.rate(now: now) {
            s.rate = r.itemsPerSecond
            s.secondsLeft = r.secondsLeft ?? .nan
        }
        if let g = j.trainProgress {
            s.step = UInt32(g.step)
            s.steps = UInt32(clamping: g.steps)
            s.stepsPerEpoch = UInt32(clamping: g.stepsPerEpoch)
            s.loss = g.loss
            s.accuracy = g.accuracy
            s.evalLoss = g.evalLoss
        }
        return s
    }

    func detail(_ j: JobEntry, logFrom: Int, attempts: Bool, now: Nanos) -> JobDetail {
        let first = Swift.max(0, logFrom - j.logsDropped)
        let lines = first < j.logs.count ? Array(j.logs[first...]) : []
        return JobDetail(job: summary(j, now: now), policy: j.policyName, specDigest: j.specDigest, inputDigest: j.inputDigest,
                         modelDigest: j.modelDigest, logFrom: UInt32(j.logsDropped + first), logTotal: UInt32(j.logsDropped + j.logs.count),
                         logs: lines, attemptsDropped: UInt32(j.attemptsDropped), attempts: attempts ? j.attempts : [])
    }

    mutating func receive(_ peer: PeerID, _ message: Message, who: Principal, now: Nanos, into out: inout [CoordinatorAction]) {
        switch message {
        case .hello(let h): hello(peer, h, now: now, into: &out)
        case .heartbeat(let hb):
            guard requireWorker(peer, message, into: &out) else { return }
            let k = index[peer]!
            table[k].observe(hb, now: now)
            // Memory reserve: below it the worker takes no new shards (hysteresis: back above 1.5 × the reserve).
            let reserve = config.memoryReserve(host: table[k].hello.memory)
            if !table[k].lowMemory, hb.available > 0, hb.available < reserve {
                table[k].lowMemory = true
                out.append(.log(.warning, "worker \(table[k].label): only \(hb.available >> 20) MiB of memory left on its host (reserve \(reserve >> 20) MiB); no new shards until it recovers"))
            } else if table[k].lowMemory, hb.available == 0 || hb.available >= reserve + reserve / 2 {
                table[k].lowMemory = false
                out.append(.log(.info, "worker \(table[k].label): \(hb.available >> 20) MiB of memory available again; taking shards"))
            }
        case .drain(let reason):
            guard requireWorker(peer, message, into: &out) else { return }
            drain(peer, reason: reason, now: now, into: &out)
        case .result(let r):
            guard requireWorker(peer, message, into: &out) else { return }
            result(peer, r, now: now, into: &out)
        case .disconnect(let reason):
            if let k = index[peer], table[k].isLive {
                out.append(.log(.info, "worker \(table[k].label) disconnected: \(reason)"))
                retire(peer, reason: "disconnected", now: now, into: &out)
            }
        case .error(let e):
            out.append(.log(.warning, "peer \(index[peer].map { table[$0].id } ?? peer.description) reported \(e)"))
        case .submit(let s):
            let key = Self.scoped(s.key, who)
            if !s.key.isEmpty, let id = keyed[key], let job = jobs[id] {
                resubmitted(peer, s, job, now: now, into: &out)
                return
            }
            if !s.key.isEmpty, resolvingKeys[key] != nil {
                guard resolvingKeys[key]!.count < config.maxParkedPerKey else {
                    out.append(.send(peer, .error(ErrorReply(.tooManyRequests, request: s.request,
                        "\(config.maxParkedPerKey) submissions with id '\(s.key)' already wait for its first one to be read; retry once it is accepted"))))
                    return
                }
                resolvingKeys[key]!.append((peer, s))
                return
            }
            if s.options.contains(.watch) || s.options.contains(.pushResult), let e = watchRefusal(peer, request: s.request) {
                out.append(.send(peer, .error(e)))
                return
            }
            do {
                guard resolving[peer, default: 0] < config.maxResolvingPerPeer, resolvingTotal < config.maxResolving else {
                    out.append(.send(peer, .error(ErrorReply(.tooManyRequests, request: s.request,
                        "\(resolvingTotal) submissions are being read (\(resolving[peer, default: 0]) from this connection; limits \(config.maxResolving) and \(config.maxResolvingPerPeer)); retry once they are accepted"))))
                    return
                }
                resolving[peer, default: 0] += 1
                resolvingTotal += 1
                if !s.key.isEmpty { resolvingKeys[key] = [] }
                out.append(.resolveInput(peer, s, from: who))
            }
        case .status(let req):
            out.append(.send(peer, .statusReply(request: req, status(now: now, visibleTo: who))))
        case .watch(let req, let id):
            guard let job = visibleJob(id, to: who, peer: peer, request: req, into: &out) else { return }
            if !job.state.isFinal {
                if let e = watchRefusal(peer, request: req, job: job) { out.append(.send(peer, .error(e))); return }
                addWatcher(job, peer, request: req)
            }
            out.append(.send(peer, .progress(progress(job, request: req))))
        case .fetch(let req, let job):
            guard let j = visibleJob(job, to: who, peer: peer, request: req, into: &out) else { return }
            if j.resultDropped {
                out.append(.send(peer, .error(resultNotKept(j, request: req))))
            } else if j.resultPending {
                // (its result is being written: answered when it is on disk)
                if let e = watchRefusal(peer, request: req, job: j) { out.append(.send(peer, .error(e))); return }
                j.extraResultTo.append((peer, req))
                watching[peer, default: 0] += 1
            } else if j.state.isFinal {
                out.append(.send(peer, .jobResult(j.outcome(request: req))))
            } else {
                out.append(.send(peer, .error(ErrorReply(.notReady, request: req,
                    "job \(job) is \(j.state) (\(j.done)/\(j.shards.count) shards); try again or watch it"))))
            }
        case .cancelJob(let req, let id):
            guard let job = visibleJob(id, to: who, peer: peer, request: req, into: &out) else { return }
            if !job.state.isFinal {
                let by = job.owner == who.owner ? "a client" : "admin \(who.name)"
                job.log(.warning, "cancelled by \(by)", now: now)
                finish(id, state: .cancelled, error: "cancelled by \(by)", now: now, into: &out)
            }
            out.append(.send(peer, .progress(progress(jobs[id]!, request: req))))
        case .detail(let req, let id, let from, let withAttempts):
            guard let job = visibleJob(id, to: who, peer: peer, request: req, into: &out) else { return }
            out.append(.send(peer, .detailReply(request: req, detail(job, logFrom: Int(from), attempts: withAttempts, now: now))))
        case .drainWorker(let req, let name):
            // An id names one worker; a name may be shared (two processes started with the same --name).
            let byName = table.indices.filter { table[$0].isLive && table[$0].hello.name == name }
            guard let k = table.indices.first(where: { table[$0].isLive && table[$0].id == name }) ?? (byName.count == 1 ? byName[0] : nil) else {
                let live = table.filter(\.isLive).map { "\($0.id) (\($0.hello.name))" }.joined(separator: ", ")
                let problem = byName.count > 1 ? "'\(name)' names \(byName.count) live workers (\(byName.map { table[$0].id }.joined(separator: ", "))); give the id"
                                               : "no live worker '\(name)'; live workers: \(live.isEmpty ? "none" : live)"
                out.append(.send(peer, .error(ErrorReply(.notFound, request: req, problem + " (see: sigma workers)"))))
                return
            }
            let p = table[k].peer
            if table[k].state == .ready {
                out.append(.send(p, .drain(reason: "asked by a client")))
                drain(p, reason: "asked by a client", now: now, into: &out)
            }
            out.append(.send(peer, .statusReply(request: req, status(now: now, visibleTo: who))))
        case .fileGet(let g):
            guard let k = index[peer], table[k].isLive else {
                out.append(.send(peer, .error(ErrorReply(.notReady, request: g.request, "FILE-GET from an unregistered worker; send HELLO first"))))
                return
            }
            fileGet(peer, g, into: &out)
        case .resultGet(let g):
            guard let j = visibleJob(g.job, to: who, peer: peer, request: g.request, into: &out) else { return }
            resultGet(peer, g, j, into: &out)
        case .deploy(let req, _):
            // (the shell reads a DEPLOY's spec and hands the core `.deploy`; a raw one is a shell without that step)
            out.append(.send(peer, .error(ErrorReply(.internalError, request: req, "DEPLOY reached the core unread"))))
        case .undeploy(let req, let name):
            undeploy(peer, request: req, name: name, who: who, now: now, into: &out)
        case .deploymentsGet(let req):
            out.append(.send(peer, .deployments(request: req, deploymentList(now: now))))
        case .predict(let p):
            predict(peer, p, now: now, into: &out)
        case .withdraw(let req):
            withdraw(peer, request: req)
        case .loaded(let l):
            guard requireWorker(peer, message, into: &out) else { return }
            modelLoaded(peer, l, now: now, into: &out)
        case .batchResult(let r):
            guard requireWorker(peer, message, into: &out) else { return }
            batchAnswered(peer, r, now: now, into: &out)
        case .ready, .assign, .params, .cancel, .accept, .statusReply, .progress, .jobResult, .detailReply, .fileData, .resultData,
             .deployments, .prediction, .load, .unload, .batch:
            out.append(.send(peer, .error(ErrorReply(.badRequest, "\(message.type.name) is not accepted by a coordinator"))))
        }
    }

    // MARK: snapshots

    public func status(now: Nanos, visibleTo who: Principal = .trusted) -> ClusterStatus {
        let ws = table.map { w in
            var s = ClusterStatus.Worker(id: w.id, name: w.hello.name, host: w.hello.host, cores: w.hello.cores, slots: w.hello.slots,
                                 state: w.suspect && w.isLive ? "suspect" : w.lowMemory && w.state == .ready ? "low-memory"
                                     : w.state == .ready ? (w.inFlight.isEmpty ? "ready" : "busy") : w.state.rawValue,
                                 inFlight: UInt32(w.inFlight.count), rtt: UInt64(w.rtt), lastSeen: now &- w.lastSeen,
                                 shardsDone: w.shardsDone)
            // (the kind it worked on last, measured within `rateTTL`, for the whole worker: an idle worker, or one
            // that moved on to another kind of job, does not keep showing an old job's rate)
            let latest = w.ratedAt.indices.max { w.ratedAt[$0] < w.ratedAt[$1] }
            s.throughput = w.isLive ? (latest.flatMap { w.rate($0, now: now, ttl: config.rateTTL) } ?? 0) * Double(w.hello.slots) : 0
            s.bandwidth = w.bandwidth
            s.bytesIn = w.bytesIn
            s.bytesOut = w.bytesOut
            s.cpu = w.cpu
            s.rss = w.rss
            s.memory = w.hello.memory
            s.rawBytes = w.rawOut
            s.wireBytes = w.wireOut
            s.joined = now &- w.joinedAt
            s.blas = w.features["blas"] ?? ""
            s.blasChoice = w.features["blas-choice"] ?? ""
            s.blasBest = w.features["blas-best"] ?? ""
            return s
        }
        let ids = who.isAdmin ? jobs.keys.sorted() : jobs.filter { $0.value.owner == who.owner }.keys.sorted()
        let js = ids.suffix(100).compactMap { jobs[$0] }.map { summary($0, now: now) }
        var st = ClusterStatus(build: config.build, uptime: now &- startedAt, workers: ws, jobs: js, queuedShards: UInt32(queue.count))
        st.policy = config.policy.rawValue
        st.totals = totals
        st.totals.reruns = UInt64(jobs.values.reduce(0) { $0 + $1.reruns }) + rerunsOfForgottenJobs
        st.totals.hedges = UInt64(hedgesStarted)
        return st
    }

    /// Live (not dead) workers.
    public var liveWorkers: Int { liveCount }
    /// The peers of live workers.
    public var livePeers: Set<PeerID> { Set(table.lazy.filter(\.isLive).map(\.peer)) }
    var liveCount: Int {
        // (through the buffer: `table[k].isLive` copied the whole WorkerEntry — most of the time at 1,000 workers)
        // (indices, not `reduce`: passing an element by value copies it too)
        table.withUnsafeBufferPointer { ws in
            var n = 0
            for i in ws.indices where ws[i].state != .dead { n += 1 }
            return n
        }
    }
    public func job(_ id: JobID) -> (state: JobState, done: Int, total: Int, duplicates: Int, reruns: Int)? {
        jobs[id].map { ($0.state, $0.done, $0.shards.count, $0.duplicates, $0.reruns) }
    }

    /// Scheduling counts of a job: backup attempts started, and how many of them finished first.
    public func hedges(_ id: JobID) -> (started: Int, won: Int)? { jobs[id].map { ($0.hedges, $0.hedgesWon) } }

    /// Per worker (by its coordinator id): shards completed.
    public var shardsDone: [String: UInt64] { Dictionary(table.map { ($0.id, $0.shardsDone) }, uniquingKeysWith: +) }

}


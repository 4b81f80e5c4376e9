import DequeModule
import SigmaJobCore
import SigmaModel
import SigmaProtocol

// Who may do what (docs/security.md): roles per message, jobs per owner, bounded followers, FILE-GET holders.

extension CoordinatorCore {
    /// Who may send what (docs/security.md): nil when `who` may send `m`, else why not.
    static func refusal(_ m: Message, _ who: Principal) -> String? {
        switch m {
        case .hello, .heartbeat, .drain, .result, .fileGet, .loaded, .batchResult:
            return who.mayWork ? nil : who.refusal(m.type.name, needs: [.worker])
        case .submit, .status, .watch, .fetch, .cancelJob, .detail, .resultGet, .deploy, .undeploy, .deploymentsGet, .predict, .withdraw:
            return who.maySubmit ? nil : who.refusal(m.type.name, needs: [.client, .admin])
        case .drainWorker:
            return who.isAdmin ? nil : who.refusal(m.type.name, needs: [.admin])
        default:
            return nil
        }
    }

    /// A client-chosen job id, as the coordinator keeps it: per owner, so one client's id never names another's job.
    static func scoped(_ key: String, _ who: Principal) -> String { scoped(key, owner: who.owner) }
    static func scoped(_ key: String, owner: String) -> String { owner + "\u{0}" + key }

    /// The job `id` if `who` may see it (its own jobs; every job for admins); else nil, the ERROR answered.
    func visibleJob(_ id: JobID, to who: Principal, peer: PeerID, request: UInt64, into out: inout [CoordinatorAction]) -> JobEntry? {
        guard let job = jobs[id] else {
            out.append(.send(peer, .error(ErrorReply(.notFound, request: request, "no job \(id) on this coordinator; list jobs with: sigma jobs"))))
            return nil
        }
        guard who.isAdmin || job.owner == who.owner else {
            out.append(.send(peer, .error(ErrorReply(.forbidden, request: request,
                "job \(id) was submitted by another client; \(who) sees only its own jobs (an admin key sees all)"))))
            return nil
        }
        return job
    }

    /// A SUBMIT with a key already used: the same job answers (ACCEPT, and PROGRESS / JOB-RESULT as asked).
    mutating func resubmitted(_ peer: PeerID, _ s: Submit, _ job: JobEntry, now: Nanos, into out: inout [CoordinatorAction]) {
        out.append(.send(peer, .accept(Accept(request: s.request, job: job.id, shards: UInt32(job.shards.count)))))
        job.log(.info, "submitted again with id '\(s.key)': the existing job answers", now: now)
        if job.state.isFinal, !job.resultPending {
            if s.options.contains(.watch) { out.append(.send(peer, .progress(progress(job, request: s.request)))) }
            if s.options.contains(.pushResult) { out.append(.send(peer, .jobResult(job.outcome(request: s.request)))) }
            return
        }
        if s.options.contains(.watch) || s.options.contains(.pushResult), let e = watchRefusal(peer, request: s.request, job: job) {
            out.append(.send(peer, .error(e)))
            return
        }
        if s.options.contains(.watch) { addWatcher(job, peer, request: s.request) }
        if s.options.contains(.pushResult) {
            job.extraResultTo.append((peer, s.request))
            watching[peer, default: 0] += 1
        }
    }

    /// Why `peer` may not follow one more job (or `job` take one more follower); nil when it may.
    func watchRefusal(_ peer: PeerID, request: UInt64, job: JobEntry? = nil) -> ErrorReply? {
        if let job, job.watchers.count + job.extraResultTo.count >= config.maxWatchersPerJob {
            return ErrorReply(.tooManyRequests, request: request,
                              "job \(job.id) already has \(config.maxWatchersPerJob) followers (the limit); fetch its result when it ends instead")
        }
        if watching[peer, default: 0] >= config.maxWatchesPerPeer {
            return ErrorReply(.tooManyRequests, request: request,
                              "this connection already follows \(config.maxWatchesPerPeer) running jobs (the limit); fetch results when they end instead")
        }
        return nil
    }

    mutating func addWatcher(_ job: JobEntry, _ peer: PeerID, request: UInt64) {
        job.watchers.append(Watcher(peer: peer, request: request, lastSent: 0))
        watching[peer, default: 0] += 1
    }

    /// A job ended: its followers no longer count against their connections.
    mutating func releaseWatches(_ job: JobEntry) {
        for p in job.watchers.map(\.peer) + job.extraResultTo.map(\.0) {
            if let n = watching[p] { watching[p] = n > 1 ? n - 1 : nil }
        }
    }

    /// A worker asks for a piece of a job's input file: only files the job's own spec names (by index), only while
    /// the job runs, only for jobs that ship their inputs, only from a worker running one of the job's shards.
    func fileGet(_ peer: PeerID, _ g: FileGet, into out: inout [CoordinatorAction]) {
        func refuse(_ code: ErrorReply.Code, _ problem: String) {
            out.append(.send(peer, .error(ErrorReply(code, request: g.request, "FILE-GET job \(g.job) file \(g.index): \(problem)"))))
        }
        guard let job = jobs[g.job] else { return refuse(.notFound, "no such job on this coordinator") }
        guard !job.state.isFinal else { return refuse(.notFound, "the job has ended (\(job.state))") }
        guard !job.inputFiles.isEmpty else {
            return refuse(.notFound, "the job reads its inputs from a shared path (input_transport: shared)")
        }
        guard Int(g.index) < job.inputFiles.count else { return refuse(.notFound, "the job has \(job.inputFiles.count) input files") }
        let f = job.inputFiles[Int(g.index)]
        guard g.offset <= f.size else { return refuse(.badRequest, "offset \(g.offset) is past the end of \(f.path) (\(f.size) bytes)") }
        guard g.length <= FileGet.maxLength else { return refuse(.tooLarge, "\(g.length) bytes asked; at most \(FileGet.maxLength) per request") }
        guard let k = index[peer], table[k].inFlight.keys.contains(where: { $0.job == g.job }) else {
            return refuse(.forbidden, "this worker runs no shard of the job")
        }
        out.append(.serveFile(peer, g, file: f, files: job.inputFiles.count))
    }

    /// A client asks for a piece of an ended job's result (kept in memory, or on disk by the shell).
    func resultGet(_ peer: PeerID, _ g: ResultGet, _ job: JobEntry, into out: inout [CoordinatorAction]) {
        func refuse(_ code: ErrorReply.Code, _ problem: String) {
            out.append(.send(peer, .error(ErrorReply(code, request: g.request, "RESULT-GET job \(g.job): \(problem)"))))
        }
        if job.resultDropped { return out.append(.send(peer, .error(resultNotKept(job, request: g.request)))) }
        guard !job.resultPending else { return refuse(.notReady, "its result is being written; ask again in a moment") }
        guard job.state.isFinal else { return refuse(.notReady, "the job is \(job.state); its result exists once it has completed") }
        guard job.state == .completed else { return refuse(.notFound, "the job \(job.state); it has no result") }
        guard g.offset <= job.resultSize else { return refuse(.badRequest, "offset \(g.offset) is past the result's end (\(job.resultSize) bytes)") }
        guard g.length <= ResultGet.maxLength else { return refuse(.tooLarge, "\(g.length) bytes asked; at most \(ResultGet.maxLength) per request") }
        if job.resultStored { return out.append(.serveResult(peer, g, size: job.resultSize)) }
        let end = Int(min(g.offset + UInt64(g.length), job.resultSize))
        out.append(.send(peer, .resultData(ResultData(request: g.request, job: g.job, size: job.resultSize, offset: g.offset,
                                                      payload: Frame(Array(job.result[Int(g.offset)..<end]))))))
    }

    /// The answer to asking for a result dropped to keep finished results within `keepResultBytes`.
    func resultNotKept(_ job: JobEntry, request: UInt64) -> ErrorReply {
        if let lost = job.resultLost {
            return ErrorReply(.notFound, request: request, "job \(job.id) \(job.state), but its result could not be kept: \(lost)")
        }
        return ErrorReply(.notFound, request: request,
                   "job \(job.id) \(job.state), but its result is no longer kept: finished jobs keep at most \(config.keepResultBytes) bytes of results (cluster.yaml coordinator.keep_result_bytes), the oldest going first")
    }

    func requireWorker(_ peer: PeerID, _ m: Message, into out: inout [CoordinatorAction]) -> Bool {
        if let k = index[peer], table[k].isLive { return true }
        out.append(.send(peer, .error(ErrorReply(.notReady, "\(m.type.name) from an unregistered worker; send HELLO first"))))
        return false
    }
}

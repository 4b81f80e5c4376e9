import DequeModule
import SigmaModel
import SigmaProtocol

// Deployments: models kept loaded on workers, answering PREDICT in batches (docs/serving.md).

extension CoordinatorCore {
    /// Batches a replica may hold at once: one computing, one waiting behind it (hides the round trip).
    static let replicaDepth = 2

    // MARK: client requests

    /// Whether `who` may replace or undeploy `d`: the client that deployed it, or an admin (a deployment restored from
    /// a journal of before owners were kept has none: any client).
    func controls(_ who: Principal, _ d: DeploymentEntry) -> Bool { who.isAdmin || d.owner.isEmpty || d.owner == who.owner }

    mutating func deploy(_ peer: PeerID, request: UInt64, _ config: DeploymentConfig, who: Principal = .trusted, now: Nanos,
                         into out: inout [CoordinatorAction]) {
        if let old = deployments[config.name] {
            guard controls(who, old) else {
                out.append(.send(peer, .error(ErrorReply(.forbidden, request: request,
                    "deployment '\(config.name)' was deployed by another client; \(who) may call it, not replace it (an admin key may)"))))
                return
            }
            guard old.config == config, !old.draining else {
                let why = old.draining ? "is still draining after sigma undeploy; retry once it is gone"
                                       : "already exists with another spec; stop it first with: sigma undeploy \(config.name)"
                out.append(.send(peer, .error(ErrorReply(.invalidSpec, request: request, "deployment '\(config.name)' \(why)"))))
                return
            }
            out.append(.send(peer, .deployments(request: request, deploymentList(now: now))))
            return
        }
        guard deployments.count < self.config.maxDeployments else {
            out.append(.send(peer, .error(ErrorReply(.unavailable, request: request,
                "this coordinator holds \(deployments.count) deployments, its most; undeploy one first (sigma undeploy NAME)"))))
            return
        }
        let d = DeploymentEntry(id: nextDeployment, config: config)
        d.owner = who.owner
        nextDeployment += 1
        deployments[config.name] = d
        deploymentNames[d.id] = config.name
        out.append(.log(.info, "deployment '\(config.name)' (\(config.model)) deployed: \(config.replicas == 0 ? "a replica on every worker" : "\(config.replicas) replica(s)")"))
        if self.config.journal { out.append(.journal(.deployed(name: config.name, spec: config.spec, owner: d.owner))) }
        placeReplicas(d, into: &out)
        out.append(.send(peer, .deployments(request: request, deploymentList(now: now))))
    }

    mutating func undeploy(_ peer: PeerID, request: UInt64, name: String, who: Principal = .trusted, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let d = deployments[name], !d.draining else {
            out.append(.send(peer, .error(ErrorReply(.notFound, request: request, "no deployment '\(name)' on this coordinator; list them with: sigma deployments"))))
            return
        }
        guard controls(who, d) else {
            out.append(.send(peer, .error(ErrorReply(.forbidden, request: request,
                "deployment '\(name)' was deployed by another client; \(who) may call it, not undeploy it (an admin key may)"))))
            return
        }
        d.draining = true
        if config.journal { out.append(.journal(.undeployed(name: name))) }
        while let r = d.queue.popFirst() { unavailable(d, r, "deployment '\(name)' was undeployed", into: &out) }
        out.append(.log(.info, "deployment '\(name)' undeployed; \(d.inFlight) batch(es) in flight finish first"))
        removeIfDrained(d, into: &out)
        out.append(.send(peer, .deployments(request: request, deploymentList(now: now))))
    }

    mutating func predict(_ peer: PeerID, _ p: PredictRequest, now: Nanos, into out: inout [CoordinatorAction]) {
        func refuse(_ code: ErrorReply.Code, _ message: String) {
            out.append(.send(peer, .error(ErrorReply(code, request: p.request, message))))
        }
        guard let d = deployments[p.name], !d.draining else {
            let known = deployments.values.filter { !$0.draining }.map(\.config.name).sorted()
            return refuse(.notFound, "no deployment '\(p.name)' on this coordinator" + (known.isEmpty ? "; deploy one with: sigma deploy SPEC" : " (deployed: \(known.joined(separator: ", ")))"))
        }
        let c = d.config
        if case .rows(let w, let v) = p.input, w < 1 || v.count % w != 0 {
            return refuse(.invalidSpec, "input: \(v.count) values are not whole rows of \(w) features")
        }
        guard p.input.count > 0 else { return refuse(.badRequest, "input: no rows (texts) to predict") }
        let texts = ServedModelKind.takesTexts(c.model)
        switch (texts, p.input) {
        case (true, .texts): break
        case (false, .rows(let w, _)) where w == c.inputs: break
        case (false, .rows(let w, _)):
            return refuse(.invalidSpec, "input: deployment '\(c.name)' takes rows of \(c.inputs) features, got rows of \(w)")
        default:
            return refuse(.invalidSpec, "input: deployment '\(c.name)' takes \(texts ? "texts" : "rows of \(c.inputs) features"), got \(p.input.summary)")
        }
        guard p.input.count <= c.maxBatch * 64 else {
            return refuse(.tooLarge, "input: \(p.input.count) rows in one request; at most \(c.maxBatch * 64) (64 × batching.max_batch)")
        }
        let ready = d.replicas.values.filter { $0.state == .ready }.count
        guard ready > 0 else {
            d.unavailable += 1
            let loading = d.replicas.values.filter { $0.state == .loading }.count
            let failed = d.replicas.values.compactMap { if case .failed(let why) = $0.state { why } else { nil } }
            let why = loading > 0 ? "no replica loaded yet (\(loading) loading); retry in a moment"
                : !failed.isEmpty ? "every replica failed to load: \(failed[0])"
                : "no worker to load it on; start one with: sigma worker --coordinator ENDPOINT"
            return refuse(.unavailable, "deployment '\(c.name)' is not ready: \(why)")
        }
        let bytes: Int = switch p.input {
        case .rows(_, let v): v.count * 4
        case .texts(let t): t.reduce(0) { $0 + $1.utf8.count + 4 }
        }
        guard bytes <= DeploymentConfig.maxQueuedBytes else {
            return refuse(.tooLarge, "input: \(bytes >> 20) MiB in one request; a deployment queues at most \(DeploymentConfig.maxQueuedBytes >> 20) MiB of inputs (split it)")
        }
        guard d.queue.count < c.queueLimit, d.queue.bytes + bytes <= DeploymentConfig.maxQueuedBytes else {
            d.tooBusy += 1
            return refuse(.tooManyRequests, "deployment '\(c.name)' is overloaded: \(d.queue.count) requests queued (queue_limit \(c.queueLimit)); retry later")
        }
        let timeout = p.timeoutMs > 0 ? min(Nanos(p.timeoutMs) * 1_000_000, c.timeout) : c.timeout
        d.queue.append(PendingRequest(peer: peer, request: p.request, input: p.input, rows: p.input.count, tokens: PendingRequest.tokens(p.input),
                                      bytes: bytes, arrived: now, deadline: now &+ timeout))
        d.requests += 1
        d.returning = max(0, d.returning - 1)
        dispatch(d, now: now, into: &out)
    }

    /// WITHDRAW: the client's request leaves its queue, or — already in a batch on a worker — its answer is not sent
    /// (the batch computes on: the other requests in it are still waited for). Only the peer that sent a request can
    /// withdraw it; an unknown or already answered one is ignored. Nothing is answered.
    mutating func withdraw(_ peer: PeerID, request: UInt64) {
        for d in deployments.values where d.queue.withdraw(peer, request: request) {
            d.withdrawn += 1
            return
        }
        for (id, b) in servingBatches {
            guard let i = b.requests.firstIndex(where: { $0.peer == peer && $0.request == request && !$0.settled }) else { continue }
            servingBatches[id]!.requests[i].settled = true
            if let name = deploymentNames[b.deployment] { deployments[name]?.withdrawn += 1 }
            return
        }
    }

    // MARK: workers' answers

    mutating func modelLoaded(_ peer: PeerID, _ l: ModelLoaded, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let name = deploymentNames[l.deployment], let d = deployments[name], d.replicas[peer] != nil else { return }
        let label = index[peer].map { table[$0].label } ?? "\(peer)"
        if l.ok {
            d.replicas[peer]!.state = .ready
            d.width = Int(l.width)
            d.labels = l.labels
            out.append(.log(.info, "deployment '\(name)': replica on worker \(label) ready"))
        } else {
            d.replicas[peer]!.state = .failed(l.error)
            out.append(.log(.error, "deployment '\(name)': worker \(label) could not load the model: \(l.error)"))
        }
        dispatch(d, now: now, into: &out)
    }

    mutating func batchAnswered(_ peer: PeerID, _ r: ServeBatchResult, now: Nanos, into out: inout [CoordinatorAction]) {
        guard let b = servingBatches[r.batch], b.worker == peer else { return }   // (from a worker retired meanwhile: answered elsewhere)
        servingBatches[r.batch] = nil
        guard let name = deploymentNames[b.deployment], let d = deployments[name] else { return }
        if var rep = d.replicas[peer] {
            rep.inFlight -= 1
            rep.inFlightRows -= b.rows
            rep.batches += 1
            rep.reportedQueue = Int(r.queued)
            if r.ok, b.rows > 0 {
                let sample = Double(r.computeNanos) / Double(b.rows)
                rep.nsPerRow = rep.nsPerRow == 0 ? sample : 0.8 * rep.nsPerRow + 0.2 * sample
            }
            d.replicas[peer] = rep
        }
        let worker = index[peer].map { table[$0].id } ?? ""
        let width = Int(r.width)
        if r.ok, r.rows == UInt32(b.rows), r.values.count == b.rows * width {
            var row = 0
            for q in b.requests {
                defer { row += q.rows }
                guard !q.settled else { continue }
                let values = Array(r.values[(row * width)..<((row + q.rows) * width)])
                let queued = q.sent &- q.arrived
                let labels = Prediction.labels(values[...], width: width, names: d.labels)
                out.append(.send(q.peer, .prediction(Prediction(request: q.request, rows: UInt32(q.rows), width: r.width, queueNanos: queued,
                                                                computeNanos: r.computeNanos, batchRows: UInt32(b.rows), worker: worker,
                                                                labels: labels, values: values))))
                d.record(latency: now &- q.arrived, queue: queued, compute: r.computeNanos, now: now)
                d.answered += 1
                d.returning = min(d.returning + 1, 1 << 20)
            }
        } else {
            let why = r.ok ? "answered \(r.rows) rows of \(r.width) for \(b.rows) rows" : r.error
            for q in b.requests where !q.settled {
                d.failed += 1
                out.append(.send(q.peer, .error(ErrorReply(.internalError, request: q.request, "deployment '\(name)': worker \(worker) failed the batch: \(why)"))))
            }
        }
        removeIfDrained(d, into: &out)
        if deployments[name] === d { dispatch(d, now: now, into: &out) }
        if let k = index[peer], table[k].state == .draining { finishDrain(k, now: now, into: &out) }
    }

    // MARK: placement, batching, routing

    /// Workers that take new replicas: live, not draining, not silent.
    var servingWorkers: [PeerID] { table.filter { $0.state == .ready && !$0.suspect }.map(\.peer) }

    /// Whether a replica's worker takes new batches: not draining (it leaves once its batches are answered), not silent.
    func takesBatches(_ peer: PeerID) -> Bool { index[peer].map { table[$0].state == .ready && !table[$0].suspect } ?? false }

    /// Loads `d` on workers until it has the replicas it asks for (every worker for `all`), least-loaded first.
    mutating func placeReplicas(_ d: DeploymentEntry, into out: inout [CoordinatorAction]) {
        guard !d.draining else { return }
        let candidates = servingWorkers.filter { d.replicas[$0] == nil }
        var load: [PeerID: Int] = [:]
        for other in deployments.values { for p in other.replicas.keys { load[p, default: 0] += 1 } }
        let wanted = d.config.replicas == 0 ? Int.max : d.config.replicas
        let have = d.replicas.values.filter { if case .failed = $0.state { false } else { true } }.count
        for peer in candidates.sorted(by: { load[$0, default: 0] < load[$1, default: 0] }).prefix(max(0, wanted - have)) {
            d.replicas[peer] = Replica()
            out.append(.send(peer, .load(LoadModel(deployment: d.id, name: d.config.name, spec: d.config.spec))))
        }
    }

    /// A worker joined: deployments short of replicas (and those on every worker) get one there.
    mutating func placeAllReplicas(into out: inout [CoordinatorAction]) {
        for d in deployments.values.sorted(by: { $0.id < $1.id }) { placeReplicas(d, into: &out) }
    }

    /// A worker left or died: its replicas go, its batches' requests queue again first in line (each still answered
    /// once), and the replicas are placed elsewhere.
    mutating func workerGone(_ peer: PeerID, now: Nanos, into out: inout [CoordinatorAction]) {
        // (newest batch first: each goes to the front of the line, so the oldest ends up first, in the order sent)
        for (id, b) in servingBatches.filter({ $0.value.worker == peer }).sorted(by: { $0.key > $1.key }) {
            servingBatches[id] = nil
            guard let name = deploymentNames[b.deployment], let d = deployments[name] else { continue }
            let open = b.requests.filter { !$0.settled }
            guard !d.draining else {
                // (undeployed: nothing will take them again)
                for q in open { unavailable(d, q, "deployment '\(name)' was undeployed and the worker computing its last batch was lost", into: &out) }
                continue
            }
            for q in open.reversed() { d.queue.prepend(q) }
            out.append(.log(.warning, "deployment '\(name)': \(open.count) request(s) of a batch on a lost worker queued again"))
        }
        for d in deployments.values where d.replicas.removeValue(forKey: peer) != nil {
            placeReplicas(d, into: &out)
            removeIfDrained(d, into: &out)
        }
        for d in deployments.values { dispatch(d, now: now, into: &out) }
    }

    /// Sends batches while a ready replica has room: to an idle replica at once — unless clients just answered are
    /// expected back (`returning`): then it waits for them, at most until the oldest request has waited `maxWait`, so
    /// batches do not fragment under load while a lone request never waits — and a second batch behind a busy
    /// replica's when the queue fills a batch, or when the oldest request has waited `maxWait`, the replica is
    /// expected to finish within a round trip and its batch computes in under two (hiding the round trip is worth a
    /// smaller batch only for models that compute in about that time).
    mutating func dispatch(_ d: DeploymentEntry, now: Nanos, into out: inout [CoordinatorAction]) {
        expire(d, now: now, into: &out)
        var due: Nanos? = nil
        while !d.queue.isEmpty {
            let rows = d.queue.rows
            let full = rows >= d.config.maxBatch || d.queue.tokens >= d.config.maxTokens
            let waited = d.queue.first!.arrived &+ d.config.maxWait
            var best: (peer: PeerID, cost: Double)? = nil
            let holding = !full && d.returning > 0 && now < waited
            for (peer, r) in d.replicas where r.state == .ready && r.inFlight < Self.replicaDepth && takesBatches(peer) {
                let rtt = index[peer].map { table[$0].rtt } ?? 0
                if r.inFlight == 0 && holding {
                    due = min(due ?? .max, waited)
                    continue
                }
                if r.inFlight > 0 && !full {
                    guard Double(r.inFlightRows) * r.nsPerRow <= 2 * rtt else { continue }
                    let when = max(waited, r.expectedFree &- Nanos(rtt))
                    guard now >= when else {
                        due = min(due ?? .max, when)
                        continue
                    }
                }
                let perRow = r.nsPerRow > 0 ? r.nsPerRow : 1
                let cost = Double(r.inFlightRows + min(rows, d.config.maxBatch)) * perRow + rtt + Double(r.reportedQueue) * perRow
                if best == nil || cost < best!.cost || (cost == best!.cost && peer.bytes.lexicographicallyPrecedes(best!.peer.bytes)) {
                    best = (peer, cost)
                }
            }
            guard let target = best?.peer else { break }
            due = nil
            if !full && now >= waited { d.returning = 0 }   // (those not back by now are not coming soon)
            // (several idle replicas share what is queued: one of them taking it all would leave the others idle)
            let idle = d.replicas.values.filter { $0.state == .ready && $0.inFlight == 0 }.count
            let share = d.replicas[target]!.inFlight == 0 && idle > 1 ? (rows + idle - 1) / idle : d.config.maxBatch
            send(d, to: target, limit: share, now: now, into: &out)
        }
        // (the next moment a waiting request is due: a batch behind a busy replica, or a timeout)
        if !d.queue.isEmpty {
            let next = min(due ?? .max, d.queue.earliestDeadline)
            serveWake = serveWake.map { min($0, next) } ?? next
        }
    }

    /// One batch from the front of the queue: whole requests up to `limit` (at most `maxBatch`) rows and `maxTokens`
    /// (a request larger than a batch goes alone).
    mutating func send(_ d: DeploymentEntry, to peer: PeerID, limit: Int, now: Nanos, into out: inout [CoordinatorAction]) {
        var taken: [PendingRequest] = []
        var rows = 0, tokens = 0
        while let q = d.queue.first {
            if !taken.isEmpty, rows + q.rows > min(limit, d.config.maxBatch) || tokens + q.tokens > d.config.maxTokens { break }
            var r = d.queue.popFirst()!
            r.sent = now
            taken.append(r)
            rows += r.rows
            tokens += r.tokens
        }
        guard let input = ServeInput.joined(taken.map(\.input)) else { return }
        let id = nextBatch
        nextBatch += 1
        servingBatches[id] = InFlightBatch(deployment: d.id, worker: peer, requests: taken, rows: rows, sentAt: now)
        d.replicas[peer]!.inFlight += 1
        d.replicas[peer]!.inFlightRows += rows
        let rtt = index[peer].map { table[$0].rtt } ?? 0
        d.replicas[peer]!.expectedFree = max(now &+ Nanos(rtt / 2), d.replicas[peer]!.expectedFree) &+ Nanos(Double(rows) * d.replicas[peer]!.nsPerRow)
        d.batchRows += rows
        d.batchCount += 1
        // (woken at the batch's first deadline: a request on a worker times out on time, not at the next tick)
        serveWake = min(serveWake ?? .max, taken.reduce(Nanos.max) { min($0, $1.deadline) })
        out.append(.send(peer, .batch(ServeBatch(deployment: d.id, batch: id, input: input))))
    }

    /// Requests past their deadline: queued ones are dropped before batching, those in a batch are answered now
    /// (the batch's late answer skips them); 504 either way.
    mutating func expire(_ d: DeploymentEntry, now: Nanos, into out: inout [CoordinatorAction]) {
        for q in d.queue.removeExpired(now: now) {
            d.timedOut += 1
            out.append(.send(q.peer, .error(ErrorReply(.timedOut, request: q.request,
                "deployment '\(d.config.name)': not answered within \(Double(q.deadline &- q.arrived) / 1e6) ms (timeout_ms); queued behind \(d.queue.count) request(s)"))))
        }
    }

    /// Periodic: timeouts of queued requests and of batches in flight, batches due, replicas to place.
    mutating func serveTick(now: Nanos, into out: inout [CoordinatorAction]) {
        serveWake = nil
        var nextLate = Nanos.max
        for (id, b) in servingBatches {
            guard let name = deploymentNames[b.deployment], let d = deployments[name] else { continue }
            let late = b.requests.indices.filter { !b.requests[$0].settled && b.requests[$0].deadline <= now }
            for q in b.requests where !q.settled && q.deadline > now { nextLate = min(nextLate, q.deadline) }
            guard !late.isEmpty else { continue }
            for i in late {
                servingBatches[id]!.requests[i].settled = true
                let q = b.requests[i]
                d.timedOut += 1
                out.append(.send(q.peer, .error(ErrorReply(.timedOut, request: q.request,
                    "deployment '\(name)': not answered within \(Double(q.deadline &- q.arrived) / 1e6) ms (timeout_ms); its batch is still on a worker"))))
            }
        }
        // (a batch whose requests all timed out still counts against its replica until answered or the worker is gone)
        for d in deployments.values.sorted(by: { $0.id < $1.id }) {
            placeReplicas(d, into: &out)
            dispatch(d, now: now, into: &out)
        }
        if nextLate < .max { serveWake = min(serveWake ?? .max, nextLate) }
    }

    /// Answers `q` 503: its deployment will not compute it.
    func unavailable(_ d: DeploymentEntry, _ q: PendingRequest, _ why: String, into out: inout [CoordinatorAction]) {
        d.unavailable += 1
        out.append(.send(q.peer, .error(ErrorReply(.unavailable, request: q.request, why))))
    }

    /// An undeployed deployment with no batch left on a worker goes (nothing is queued on one: undeploying answered
    /// its queue, and a lost worker's batch is answered, not queued again).
    mutating func removeIfDrained(_ d: DeploymentEntry, into out: inout [CoordinatorAction]) {
        guard d.draining, d.inFlight == 0 else { return }
        for peer in d.replicas.keys { out.append(.send(peer, .unload(deployment: d.id))) }
        deployments[d.config.name] = nil
        deploymentNames[d.id] = nil
        out.append(.log(.info, "deployment '\(d.config.name)' stopped"))
    }

    public func deploymentList(now: Nanos) -> [DeploymentStatus] {
        deployments.values.sorted { $0.id < $1.id }.map { d in
            d.status(names: { peer in self.index[peer].map { (self.table[$0].id, self.table[$0].hello.name) } ?? ("?", "?") }, now: now)
        }
    }
}

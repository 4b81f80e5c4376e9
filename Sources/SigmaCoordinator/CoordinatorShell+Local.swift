import Foundation
import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

/// Requests made inside the coordinator's process — the HTTP API's PREDICT and DEPLOYMENTS-GET — fed to the core
/// as from a peer of their own (`peer`: no socket has an empty routing id), answered through a continuation.
final class LocalRequests: Sendable {
    static let peer = PeerID([])
    private let state = Mutex<(next: UInt64, queued: [Message], waiting: [UInt64: CheckedContinuation<Message, Never>], closed: Bool)>((1, [], [:], false))
    let waker = Mutex<Waker?>(nil)

    /// Sends `make(id)` to the core and waits for its answer (an ERROR when the coordinator stops first).
    func call(_ make: (UInt64) -> Message) async -> Message {
        let id = state.withLock { s -> UInt64 in
            defer { s.next += 1 }
            return s.next
        }
        let m = make(id)
        return await withCheckedContinuation { k in
            let accepted = state.withLock { s -> Bool in
                guard !s.closed else { return false }
                s.queued.append(m)
                s.waiting[id] = k
                return true
            }
            guard accepted else { return k.resume(returning: .error(ErrorReply(.unavailable, request: id, "the coordinator is stopping"))) }
            waker.withLock { $0 }?.wake()
        }
    }

    /// Its caller went away (an HTTP client hung up): the request is withdrawn from the core (WITHDRAW) and its wait
    /// ends now. Nothing happens for a request already answered.
    func withdraw(_ id: UInt64) {
        let k = state.withLock { s -> CheckedContinuation<Message, Never>? in
            guard let k = s.waiting.removeValue(forKey: id) else { return nil }
            s.queued.append(.withdraw(request: id))
            return k
        }
        guard let k else { return }
        waker.withLock { $0 }?.wake()
        k.resume(returning: .error(ErrorReply(.unavailable, request: id, "withdrawn: its caller went away")))
    }

    func take() -> [Message] {
        state.withLock { s in
            defer { s.queued.removeAll() }
            return s.queued
        }
    }

    func answer(_ m: Message) {
        let id: UInt64
        switch m {
        case .prediction(let p): id = p.request
        case .deployments(let r, _): id = r
        case .statusReply(let r, _): id = r
        case .error(let e): id = e.request
        default: return
        }
        state.withLock { $0.waiting.removeValue(forKey: id) }?.resume(returning: m)
    }

    func failAll() {
        let waiting = state.withLock { s -> [UInt64: CheckedContinuation<Message, Never>] in
            s.closed = true
            defer { s.waiting = [:] }
            return s.waiting
        }
        for (id, k) in waiting { k.resume(returning: .error(ErrorReply(.unavailable, request: id, "the coordinator stopped"))) }
    }
}

extension CoordinatorShell {
    /// Asks the core as a client of this process would (PREDICT, DEPLOYMENTS-GET); `make` gets the request id.
    public func localCall(_ make: (UInt64) -> Message) async -> Message {
        shared.local.waker.withLock { w in if w == nil { w = shared.waker.withLock { $0 } } }
        return await shared.local.call(make)
    }

    /// Withdraws a request made with `localCall` whose caller went away (see `LocalRequests.withdraw`).
    public func localWithdraw(_ id: UInt64) { shared.local.withdraw(id) }

    /// The deployments as published by the poller (at most ~0.5 s old).
    public var deploymentsSnapshot: [DeploymentStatus] { shared.deployments.withLock { $0 } }

    /// A DEPLOY's spec read for the core: a `kind: serve` spec within `limits`, or the ERROR to answer.
    static func deployment(_ spec: JobSpec, kinds: JobKinds, limits: SpecLimits) -> Result<DeploymentConfig, ErrorReply> {
        guard spec.kind == ServeKind.name else {
            return .failure(ErrorReply(.invalidSpec, "DEPLOY takes a kind: serve spec, got kind: \(spec.kind) (run jobs with sigma submit)"))
        }
        do {
            let open = try kinds.open(spec)
            try open.validate(limits: limits)
            guard let s = ServeKind.spec(in: spec) else { throw SpecError(field: "kind", problem: "not a serve spec") }
            let inputs: Int = if case .mlp(let m) = s.model, m.encoder == nil { m.inputs } else { 0 }
            return .success(DeploymentConfig(name: s.name, model: s.model.kind, inputs: inputs, spec: spec, replicas: s.replicas, maxBatch: s.maxBatch,
                                             maxWait: Nanos(s.maxWaitMs * 1e6), maxTokens: s.maxTokens, queueLimit: s.queueLimit,
                                             timeout: Nanos(s.timeoutMs) * 1_000_000))
        } catch {
            return .failure(ErrorReply(.invalidSpec, "serve spec '\(spec.name)': \(error)"))
        }
    }
}

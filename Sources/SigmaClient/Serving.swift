import Foundation
import Synchronization
import SigmaModel
import SigmaProtocol

extension SigmaClient {
    /// Deploys a `kind: serve` spec; returns every deployment afterwards.
    public func deploy(_ spec: JobSpec, timeout: Double = 10) async throws -> [DeploymentStatus] {
        try deployments(in: try await call({ .deploy(request: $0, spec: spec) }, timeout: timeout, what: "DEPLOY"))
    }

    /// Drains and stops a deployment; returns every deployment afterwards.
    public func undeploy(_ name: String, timeout: Double = 10) async throws -> [DeploymentStatus] {
        try deployments(in: try await call({ .undeploy(request: $0, name: name) }, timeout: timeout, what: "UNDEPLOY"))
    }

    /// Every deployment, with its replicas and figures.
    public func deployments(timeout: Double = 5) async throws -> [DeploymentStatus] {
        try deployments(in: try await call({ .deploymentsGet(request: $0) }, timeout: timeout, what: "DEPLOYMENTS-GET"))
    }

    /// A deployment's outputs for `input` (rows or texts), in order. `timeout`: seconds to wait for the answer (the
    /// deployment's own timeout applies on the coordinator too).
    /// A deployment's outputs for `input`. Cancelling the calling task withdraws the request (the coordinator computes
    /// no answer for it if it is still queued) and throws `CancellationError`.
    public func predict(_ name: String, _ input: ServeInput, timeout: Double = 30) async throws -> Prediction {
        try Task.checkCancellation()
        let ms = UInt32(min(max(timeout * 1000, 1), Double(UInt32.max)))
        let sent = SentRequest()
        let m: Message
        do {
            m = try await withTaskCancellationHandler {
                try await call({ id in
                    sent.id.store(id, ordering: .releasing)
                    return .predict(PredictRequest(request: id, name: name, timeoutMs: ms, input: input))
                }, timeout: timeout + 5, what: "PREDICT")
            } onCancel: {
                let id = sent.id.load(ordering: .acquiring)
                if id != 0 { withdraw(id) }
            }
        } catch ClientError.cancelled {
            throw CancellationError()
        }
        guard case .prediction(let p) = m else { throw ClientError.badReply("\(m.type.name)") }
        return p
    }

    private func deployments(in m: Message) throws -> [DeploymentStatus] {
        guard case .deployments(_, let list) = m else { throw ClientError.badReply("\(m.type.name)") }
        return list
    }
}

/// The id a request was sent with (0 until sent), for a cancellation handler that may run on another thread.
final class SentRequest: Sendable {
    let id = Atomic<UInt64>(0)
}

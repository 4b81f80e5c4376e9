import Foundation
import SigmaModel
import SigmaProtocol
import Synchronization

extension SigmaClient {
    /// Follows job `job` to its end, across coordinator restarts: it WATCHes the job, and WATCHes it again whenever
    /// the coordinator has been silent for `silence` seconds — a coordinator restarted with its journal knows the
    /// job and answers, and the following goes on. `lost(seconds)` is called each time a WATCH went unanswered (the
    /// coordinator is unreachable, and this keeps trying); after `giveUp` seconds without an answer the stream ends
    /// with `ClientError.lost`, naming the job. The last event is the job's outcome (fetched once it has ended).
    public func follow(job: JobID, silence: Double = 3, giveUp: Double = 120,
                       lost: @escaping @Sendable (Double) -> Void = { _ in }) -> AsyncThrowingStream<JobEvent, Error> {
        AsyncThrowingStream { continuation in
            let heard = Mutex<(at: Date, ended: Bool)>((Date(), false))
            let task = Task {
                var watch: UInt64? = nil
                var lastWatch = Date.distantPast
                while !Task.isCancelled {
                    let (at, ended) = heard.withLock { $0 }
                    if ended {
                        if let w = watch { self.handlers.disarm(w); _ = self.handlers.withLock { $0.removeValue(forKey: w) } }
                        do {
                            continuation.yield(.finished(try await self.fetch(job: job, timeout: silence)))
                            continuation.finish()
                        } catch {
                            // (the coordinator went away between the last PROGRESS and FETCH: watch again)
                            heard.withLock { $0 = (Date(), false) }
                            watch = nil
                            continue
                        }
                        return
                    }
                    let quiet = Date().timeIntervalSince(at)
                    // (the last WATCH went unanswered for `silence`: the coordinator is unreachable; a WATCH that was
                    // answered and followed by silence — a long step — is renewed without a word)
                    let unanswered = watch != nil && at < lastWatch && Date().timeIntervalSince(lastWatch) >= silence
                    // Gives up only after a WATCH went unanswered: a follower that could not run for a while (a
                    // starved process) asks once more before it declares the coordinator lost.
                    if unanswered, quiet >= giveUp {
                        lost(Date().timeIntervalSince(lastWatch))
                        continuation.finish(throwing: ClientError.lost(job: job, endpoint: self.endpoint, seconds: quiet))
                        return
                    }
                    if watch == nil || (quiet >= silence && Date().timeIntervalSince(lastWatch) >= silence) {
                        if unanswered { lost(Date().timeIntervalSince(lastWatch)) }
                        if let w = watch { self.handlers.disarm(w); _ = self.handlers.withLock { $0.removeValue(forKey: w) } }
                        lastWatch = Date()
                        if watch == nil { heard.withLock { $0.at = lastWatch } }   // (silence counts from the first WATCH)
                        watch = self.request({ .watch(request: $0, job: job) }, timeout: 0, what: "WATCH") { r in
                            switch r {
                            case .success(.progress(let p)):
                                heard.withLock { $0 = (Date(), p.state.isFinal) }
                                if !p.state.isFinal { continuation.yield(.progress(p)) }
                                return p.state.isFinal
                            case .success(.error(let e)):
                                continuation.finish(throwing: ClientError.refused(e))
                                return true
                            case .success:
                                return false
                            case .failure:
                                return true   // (a link failure: WATCH again after `silence`)
                            }
                        }
                    }
                    try? await Task.sleep(nanoseconds: 100_000_000)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

import Foundation
import Logging
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

/// A worker's deployments: models loaded once and kept (LOAD / UNLOAD), batches answered (BATCH → BATCH-RESULT),
/// on a thread of their own so the poller keeps heartbeating while a model loads or a batch computes.
final class ServeHost: Sendable {
    enum Task {
        case load(LoadModel)
        case unload(UInt32)
        case batch(ServeBatch)
    }

    /// Tasks with the connection (epoch) they came on.
    private let queue = BlockingQueue<(Task, UInt64)>()
    /// Answers with the epoch of their task: one of an earlier connection is never sent on a later one — a restarted
    /// coordinator numbers its batches and deployments from 1 again, and an old BATCH-RESULT would answer its batch.
    final class Outbox: Sendable {
        let messages = Mutex<[(Message, UInt64)]>([])
        let epoch = Atomic<UInt64>(0)
    }
    private let outbox = Outbox()
    private let thread = Mutex<OSThread?>(nil)

    init(kinds: JobKinds, roots: DataRoots, limits: SpecLimits, logger: Logger, wake: @escaping @Sendable () -> Void) {
        let queue = queue, outbox = outbox
        thread.withLock {
            $0 = OSThread(name: "sigma-serve") {
                var models: [UInt32: ServedModel] = [:]
                while let (task, epoch) = queue.next() {
                    let reply: Message?
                    switch task {
                    case .load(let l):
                        do {
                            let open = try kinds.open(l.spec)
                            do { try open.validate(limits: limits) } catch { throw JobError("refused by this worker's limits: \(error)") }
                            guard let spec = ServeKind.spec(in: try open.rooted(roots).encoded) else { throw JobError("not a serve spec") }
                            let model = try ServedModel(spec, limits: limits)
                            models[l.deployment] = model
                            logger.info("deployment '\(l.name)': model loaded (\(model.takes) → \(model.width) floats)")
                            reply = .loaded(ModelLoaded(deployment: l.deployment, ok: true, width: UInt32(model.width), labels: model.labels))
                        } catch {
                            logger.error("deployment '\(l.name)': cannot load the model: \(error)")
                            reply = .loaded(ModelLoaded(deployment: l.deployment, ok: false, error: "\(error)"))
                        }
                    case .unload(let d):
                        if d == .max { models.removeAll() } else { models[d] = nil }
                        reply = nil
                    case .batch(let b):
                        let started = monotonicNanos()
                        var r: ServeBatchResult
                        if let model = models[b.deployment] {
                            do {
                                let values = try model.run(b.input)
                                r = ServeBatchResult(batch: b.batch, ok: true, rows: UInt32(b.input.count), width: UInt32(model.width), values: values)
                            } catch {
                                r = ServeBatchResult(batch: b.batch, ok: false, error: "\(error)")
                            }
                        } else {
                            r = ServeBatchResult(batch: b.batch, ok: false, error: "this worker has not loaded deployment \(b.deployment)")
                        }
                        r.computeNanos = monotonicNanos() - started
                        r.queued = UInt32(queue.count)
                        reply = .batchResult(r)
                    }
                    if let reply, epoch == outbox.epoch.load(ordering: .acquiring) {
                        outbox.messages.withLock { $0.append((reply, epoch)) }
                        wake()
                    }
                }
            }
        }
    }

    /// Takes LOAD, UNLOAD and BATCH (true); other messages are not this host's.
    func take(_ m: Message) -> Bool {
        let epoch = outbox.epoch.load(ordering: .acquiring)
        switch m {
        case .load(let l): queue.push((.load(l), epoch))
        case .unload(let d): queue.push((.unload(d), epoch))
        case .batch(let b): queue.push((.batch(b), epoch))
        default: return false
        }
        return true
    }

    /// Answers ready to send (the poller thread sends them): those of the current connection only.
    func replies() -> [Message] {
        let epoch = outbox.epoch.load(ordering: .acquiring)
        return outbox.messages.withLock { o in
            defer { o.removeAll() }
            return o.filter { $0.1 == epoch }.map(\.0)
        }
    }

    /// The connection was reset: the coordinator forgot this worker's replicas, so are its models; answers not sent
    /// yet, and those of batches still computing, are dropped.
    func reset() {
        let epoch = outbox.epoch.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
        queue.remove { _ in true }
        outbox.messages.withLock { $0.removeAll() }
        queue.push((.unload(.max), epoch))
    }

    func stop() {
        queue.close(dropping: true)
        thread.withLock { t in defer { t = nil }; return t }?.join()
    }
}

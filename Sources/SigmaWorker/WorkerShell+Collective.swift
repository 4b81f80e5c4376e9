import Foundation
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import SigmaWorkerCore
import Synchronization

/// A collective step's way to the other workers of its step, through this worker's peer mesh: sends are queued on
/// the mesh's thread; a receive waits on the compute thread until the peers' messages are in, the coordinator
/// cancels the step (it lost a member), the worker stops, or `timeout` passes. Large payloads to members that share
/// memory with this one (`CollectiveStep.sharesMemory`) go through shared memory.
struct MeshExchange: PeerExchange {
    let mesh: PeerMesh
    let step: CollectiveStep
    let timeout: Double
    let cancelled: @Sendable () -> Bool

    func send(to peer: PeerAddress, tag: [UInt8], frames: [Frame]) {
        mesh.send(to: peer.endpoint, serverKey: peer.key.isEmpty ? nil : peer.key, tag: tag, frames: frames,
                  sharedMemory: step.sharesMemory(with: peer))
    }

    func receive(tag: [UInt8], count: Int) throws -> [[Frame]] {
        do {
            return try mesh.receive(tag: tag, count: count, timeout: timeout, cancelled: cancelled)
        } catch PeerMeshError.timedOut(_, let arrived, let wanted) {
            throw JobError("collective step: heard from \(arrived) of the step's \(wanted) other workers within \(Int(timeout)) s — "
                           + "every worker's peer endpoint must be reachable from the others (this one listens at \(mesh.endpoint); "
                           + "sigma worker --peer-address/--peer-port, and a firewall that lets the port through)")
        } catch PeerMeshError.cancelled {
            throw JobError("collective step cancelled by the coordinator")
        } catch PeerMeshError.closed {
            throw JobError("collective step: the worker is stopping")
        } catch PeerMeshError.unreadable(let why) {
            throw JobError("collective step: \(why)")
        }
    }
}

/// Collective steps' state shared by a worker's threads: cancellations, the peers' CURVE keys admitted so far, and
/// each job's latest segment here.
final class CollectiveShared: Sendable {
    let cancels = CollectiveCancels()
    let admitted = Mutex<Set<String>>([])
    let segments = Mutex<[JobID: UInt32]>([:])
    /// The log has said that payloads to members on this machine go through shared memory (once a process).
    let toldSharedMemory = Atomic<Bool>(false)
}

/// Collective steps the coordinator cancelled (a member was lost), and connections reset: a step waiting for its
/// peers gives up.
final class CollectiveCancels: Sendable {
    private let cancelled = Mutex<[(job: JobID, shard: ShardIndex?, attempt: Attempt?)]>([])
    /// Bumped when every task is cancelled (the connection to the coordinator was reset).
    private let generation = Atomic<Int>(0)

    func cancel(job: JobID, shard: ShardIndex?, attempt: Attempt?) {
        cancelled.withLock { c in
            c.append((job, shard, attempt))
            if c.count > 256 { c.removeFirst(c.count - 256) }
        }
    }

    func cancelAll() {
        cancelled.withLock { $0.removeAll() }   // (tasks from before check the generation)
        generation.add(1, ordering: .releasing)
    }

    /// Whether `task`, started at generation `since`, has been cancelled.
    func check(_ task: ShardTask, since: Int) -> Bool {
        if generation.load(ordering: .acquiring) != since { return true }
        return cancelled.withLock { c in
            c.contains { $0.job == task.job && ($0.shard == nil || ($0.shard == task.shard && ($0.attempt == nil || $0.attempt == task.attempt))) }
        }
    }

    var current: Int { generation.load(ordering: .acquiring) }
}

extension WorkerShell {
    /// How long a collective step waits for its peers before it fails (the coordinator notices a dead member
    /// sooner, through its heartbeats, and cancels the step).
    static let peerTimeout = 120.0

    /// A collective step's result, through `runner` (the job's worker state lives there: compute thread 0's).
    static func collective(_ task: ShardTask, _ step: CollectiveStep, spec: OpenSpec, runner: ShardRunner, shared: Shared) throws -> Frame {
        guard let mesh = shared.mesh else {
            throw JobError("collective step: this worker offers no peer endpoint (it could not listen for other workers; see its log)")
        }
        if task.params != nil {
            // (a new segment: messages of the job's segment before it here, buffered or late, are stale)
            let job = task.job
            if let old = shared.collective.segments.withLock({ $0.updateValue(step.segment, forKey: job) }), old != step.segment {
                mesh.discard { tag in Collective.jobAndSegment(ofTag: tag).map { $0.job == job && $0.segment == old } ?? false }
            }
        }
        let since = shared.collective.cancels.current
        let exchange = MeshExchange(mesh: mesh, step: step, timeout: peerTimeout) { [shared] in
            shared.stopping.load(ordering: .acquiring) || shared.collective.cancels.check(task, since: since)
        }
        let result = try runner.runCollective(spec, job: task.job, round: task.round, params: task.params, start: task.start, count: task.count,
                                              step, exchange: exchange)
        let local = step.peers.enumerated().filter { $0.offset != Int(step.rank) && step.sharesMemory(with: $0.element) }.count
        if local > 0, !shared.collective.toldSharedMemory.load(ordering: .relaxed), mesh.sharedMemoryCounts.carried > 0,
           shared.collective.toldSharedMemory.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            shared.logger.info("collective steps: payloads of \(SharedMemory.meshThreshold >> 10) KiB or more to the \(local) other member(s) on this machine go through /dev/shm")
        }
        return result
    }

    /// Whether a peer message's tag (`Collective.tag`: u64 job, u32 segment, u32 step, u8 phase) is of `job`.
    /// Admits the CURVE keys of a collective step's peers on this worker's mesh as soon as its ASSIGN arrives (the
    /// peers connect when they have their partial sums; one refused waits before it tries again).
    static func admitPeers(_ step: CollectiveStep, shared: Shared) {
        guard let mesh = shared.mesh else { return }
        let keys = Set(step.peers.map(\.key).filter { !$0.isEmpty })
        guard !keys.isEmpty else { return }
        let all = shared.collective.admitted.withLock { a in
            a.formUnion(keys)
            return a
        }
        mesh.admit(keys: all)
    }
}

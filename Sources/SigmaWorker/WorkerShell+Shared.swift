import Foundation
import Logging
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import SigmaWorkerCore
import Synchronization

extension WorkerShell {
    /// What the worker's poller and compute threads share.
    final class Shared: Sendable {
        let stopping = Atomic<Bool>(false)
        let draining = Atomic<Bool>(false)
        let stopped = Atomic<Bool>(false)
        let waker = Mutex<Waker?>(nil)
        let work = BlockingQueue<ShardTask>()
        /// Results of the compute threads, each with its task's session.
        let results = Mutex<[(ShardResult, UInt64)]>([])
        let fatal = Mutex<String?>(nil)
        let workerID = Mutex<String?>(nil)
        let completed = Atomic<Int>(0)
        /// Jobs the coordinator ended or cancelled: compute threads drop their state.
        let ended = Mutex(EndedJobs())
        /// `ended.total`, stored while its lock is held, so a compute thread takes the lock only when it changed.
        let endedVersion = Atomic<Int>(0)
        /// Compute thread 0's context; the poller borrows it to run a short ML shard itself when that thread is idle.
        let primary: Mutex<ComputeContext>
        let kinds: JobKinds
        let roots: DataRoots
        let limits: SpecLimits
        /// Links to other workers (collective training steps), for compute threads.
        let mesh: PeerMesh?
        /// What compute threads and the poller share about collective steps.
        let collective = CollectiveShared()

        /// For what compute threads report themselves (the mesh's first payload through shared memory).
        let logger: Logger

        init(kinds: JobKinds, roots: DataRoots, limits: SpecLimits, mesh: PeerMesh?, logger: Logger) {
            self.kinds = kinds
            self.roots = roots
            self.limits = limits
            self.mesh = mesh
            self.logger = logger
            primary = Mutex(ComputeContext(kinds: kinds, roots: roots, limits: limits))
        }
    }
}

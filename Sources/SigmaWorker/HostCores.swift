import Foundation
import Glibc

/// How many compute threads a worker runs, given what it was asked for and the host's cores that no other worker
/// on this host holds. Pure: the claim below supplies `free`.
public struct CoreBudget: Sendable, Equatable {
    public let threads: Int
    /// Why the worker runs other than what it was asked for (nil when it runs what it was asked).
    public let warning: String?

    public init(requested: Int?, cores: Int, free: Int) {
        let cores = max(1, cores), free = max(0, min(free, cores))
        let want = requested ?? free
        if let r = requested, r > cores {
            threads = max(1, free)
            warning = "--threads \(r) is more than this host's \(cores) cores; running \(threads) compute thread(s)"
                + (free < cores ? " (other sigma workers on this host hold \(cores - free))" : "")
        } else if free == 0 {
            threads = 1
            warning = "all \(cores) cores of this host are held by other sigma workers; this worker runs 1 compute thread "
                + "and shares a core with them (start fewer workers, or give each fewer --threads)"
        } else if want > free {
            threads = free
            warning = "--threads \(want): only \(free) of this host's \(cores) cores are free (other sigma workers hold the rest); "
                + "running \(free) compute thread(s)"
        } else {
            threads = max(1, want)
            warning = nil
        }
    }
}

/// The cores this worker process holds on its host: one lock file per core in a per-user folder (on `/dev/shm`),
/// `flock`ed for the life of the process, so several workers started on one host share its cores instead of each
/// taking all of them. The kernel drops the locks when the process exits, however it exits.
/// `SIGMA_CORE_CLAIMS=off` turns this off (each worker then takes what `--threads` says); another value names
/// the folder.
public final class HostCoreClaim: @unchecked Sendable {
    public let budget: CoreBudget
    private var fds: [Int32] = []

    public static var defaultDirectory: String? {
        let env = ProcessInfo.processInfo.environment["SIGMA_CORE_CLAIMS"]
        if env == "off" { return nil }
        if let e = env, !e.isEmpty { return e }
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return base + "/sigma-cores-\(getuid())"
    }

    /// Claims cores for a worker that asked for `requested` threads (nil: every free core).
    public init(requested: Int?, cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                directory: String? = HostCoreClaim.defaultDirectory) {
        guard let dir = directory, mkdir(dir, 0o700) == 0 || errno == EEXIST else {
            budget = CoreBudget(requested: requested, cores: cores, free: cores)
            return
        }
        // Take free cores one by one, up to what is wanted (all of them when nothing was asked).
        let want = min(requested ?? cores, cores)
        for c in 0..<max(1, cores) where fds.count < want {
            let fd = open(dir + "/core-\(c).lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { continue }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { fds.append(fd) } else { close(fd) }
        }
        // (fewer taken than wanted means every core was tried: exactly that many were free; otherwise enough were)
        budget = CoreBudget(requested: requested, cores: cores, free: fds.count)
    }

    /// Lets go of the cores (also done by the kernel at exit).
    public func release() {
        for fd in fds { close(fd) }
        fds = []
    }

    deinit { release() }
}

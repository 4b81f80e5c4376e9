import Glibc
import SigmaModel

/// The shells' clock: monotonic nanoseconds (cores never read clocks; shells pass `now` in).
public func monotonicNanos() -> Nanos {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Nanos(ts.tv_sec) * 1_000_000_000 + Nanos(ts.tv_nsec)
}

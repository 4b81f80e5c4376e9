import CSysShims
import Foundation

/// A userspace delay line between pairs of TUN devices, for kernels built without `sch_netem`: every IP packet
/// read from one device is written to its partner a fixed time later, first in first out per direction — what
/// `tc qdisc … netem delay D` does on a link. One thread polls all devices; packets are never dropped or reordered.
final class DelayLine: @unchecked Sendable {
    private struct Direction {
        let from: Int32, to: Int32, delayNs: UInt64
        var due: [UInt64] = [], packets: [[UInt8]] = [], head = 0
    }
    private var directions: [Direction] = []
    private var descriptors: [Int32] = []
    private var stop = csys_eventfd_nonblock()
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    /// Creates a TUN device named `name`; the device lives as long as this delay line.
    func device(_ name: String) throws -> Int32 {
        let fd = csys_tun_create(name)
        if fd < 0 { throw SigmaTestError("TUN device \(name): \(String(cString: strerror(-fd)))") }
        descriptors.append(fd)
        return fd
    }

    /// Packets read from `a` reach `b`, and from `b` reach `a`, `oneWayMs` later. Call before `start`.
    func join(_ a: Int32, _ b: Int32, oneWayMs: Double) {
        let ns = UInt64(oneWayMs * 1e6)
        directions.append(Direction(from: a, to: b, delayNs: ns))
        directions.append(Direction(from: b, to: a, delayNs: ns))
    }

    func start() {
        let t = Thread { [self] in run(); done.signal() }
        t.name = "delay-line"
        thread = t
        t.start()
    }

    /// Stops the thread and closes every device (the kernel removes them, also inside namespaces).
    func close() {
        if thread != nil { _ = csys_eventfd_signal(stop); done.wait(); thread = nil }
        for fd in descriptors { Glibc.close(fd) }
        descriptors = []
        if stop >= 0 { Glibc.close(stop); stop = -1 }
    }

    private static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var fds = [pollfd(fd: stop, events: Int16(POLLIN), revents: 0)]
            + directions.map { pollfd(fd: $0.from, events: Int16(POLLIN), revents: 0) }
        while true {
            let t = Self.now()
            var wait: UInt64 = .max
            for i in directions.indices {
                while directions[i].head < directions[i].due.count, directions[i].due[directions[i].head] <= t {
                    let p = directions[i].packets[directions[i].head]
                    _ = p.withUnsafeBytes { write(directions[i].to, $0.baseAddress, $0.count) }
                    directions[i].packets[directions[i].head] = []
                    directions[i].head += 1
                }
                if directions[i].head == directions[i].due.count {
                    directions[i].due.removeAll(keepingCapacity: true)
                    directions[i].packets.removeAll(keepingCapacity: true)
                    directions[i].head = 0
                } else {
                    wait = min(wait, directions[i].due[directions[i].head] - t)
                }
            }
            // poll(2) counts milliseconds: round up, so a packet is never written early.
            let timeout: Int32 = wait == .max ? -1 : Int32(min((wait + 999_999) / 1_000_000, 1_000))
            for i in fds.indices { fds[i].revents = 0 }
            if poll(&fds, nfds_t(fds.count), timeout) < 0, errno != EINTR { return }
            if fds[0].revents != 0 { return }
            let arrived = Self.now()
            for i in directions.indices where fds[i + 1].revents != 0 {
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(directions[i].from, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                    directions[i].due.append(arrived + directions[i].delayNs)
                    directions[i].packets.append(Array(buffer[0..<n]))
                }
            }
        }
    }

    deinit { close() }
}

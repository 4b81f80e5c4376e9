#if canImport(Glibc)
import Glibc
#endif

/// This process's CPU time and resident memory, read from /proc (Linux). Sampled once per heartbeat interval.
public struct ProcessLoadSampler: Sendable {
    var lastCPU: UInt64 = 0
    var lastAt: UInt64 = 0
    static let ticksPerSecond = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
    static let pageSize = UInt64(max(1, sysconf(Int32(_SC_PAGESIZE))))

    public init() {}

    /// (CPU use since the previous call, percent of one core; resident bytes). 0 where /proc cannot be read.
    public mutating func sample(now: UInt64 = monotonicNanos()) -> (cpu: Double, rss: UInt64) {
        var cpu = 0.0
        if let ticks = ProcessLoadSampler.cpuTicks() {
            let ns = ticks * 1_000_000_000 / ProcessLoadSampler.ticksPerSecond
            if lastAt != 0, now > lastAt, ns >= lastCPU {
                cpu = Double(ns - lastCPU) / Double(now - lastAt) * 100
            }
            lastCPU = ns
            lastAt = now
        }
        return (cpu, ProcessLoadSampler.residentBytes() ?? 0)
    }

    /// utime + stime of this process, clock ticks (fields 14 and 15 of /proc/self/stat, after the `(comm)` field).
    static func cpuTicks() -> UInt64? {
        guard let text = readSmallFile("/proc/self/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); utime is field 14 → index 11, stime index 12.
        guard fields.count > 12, let u = UInt64(fields[11]), let s = UInt64(fields[12]) else { return nil }
        return u + s
    }

    static func residentBytes() -> UInt64? {
        guard let text = readSmallFile("/proc/self/statm") else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = UInt64(fields[1]) else { return nil }
        return pages * pageSize
    }

    /// The host's MemAvailable (/proc/meminfo), bytes: what can still be allocated without swapping.
    public static func availableMemory() -> UInt64? {
        guard let text = readSmallFile("/proc/meminfo"),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }) else { return nil }
        let fields = line.split(separator: " ")
        guard fields.count >= 2, let kb = UInt64(fields[1]) else { return nil }
        return kb * 1024
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }
}

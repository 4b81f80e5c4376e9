import Foundation
import Glibc

/// A TCP port on 127.0.0.1 that is free now, for benches and tests that must name a port before a process binds it
/// (a README's literal commands, an sshd configuration). It is drawn at random *below* the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), so nothing that binds port 0 or connects out — a worker's peer port,
/// any client socket — can be handed it by the kernel meanwhile; only another caller of this function could take it,
/// and each draw checks the port binds. Nil when no port in that range binds after 200 draws.
public func freeLoopbackPort() -> Int? {
    let low = ephemeralPortFloor()
    let range = 10_000..<max(low, 10_001)
    for _ in 0..<200 {
        let port = Int.random(in: range)
        if bindsOnLoopback(port) { return port }
    }
    return nil
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
private func ephemeralPortFloor() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
          let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
          let low = Int(first), low > 10_001 else { return 32_768 }
    return low
}

private func bindsOnLoopback(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let length = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 }
    }
}

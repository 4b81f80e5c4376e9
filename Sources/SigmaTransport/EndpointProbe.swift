import Foundation

/// What listens at a TCP endpoint, found with a plain socket: ZeroMQ hides a closed port (it retries forever) and a
/// peer that speaks another protocol (it drops the connection and retries), so a client that gets no answer asks
/// this to say which mistake it was.
public enum EndpointProbe {
    public enum Finding: Equatable, Sendable {
        /// Nothing listens there (connection refused).
        case refused
        /// The host could not be reached or named (`why`).
        case unreachable(String)
        /// A ZeroMQ peer (it sent the ZMTP greeting): a coordinator, or another ZeroMQ service.
        case zeromq
        /// A web server (it answered an HTTP request): the dashboard's port, perhaps.
        case http
        /// Something else, or nothing said within the time allowed.
        case other
    }

    /// Connects to `host:port` within `timeoutMs`; with `identify`, also waits for the peer's first bytes (a ZeroMQ
    /// peer greets at once) and otherwise asks it for HTTP. Without `identify`, a connection made is `.zeromq` (not
    /// checked further).
    public static func probe(host: String, port: Int, timeoutMs: Int32 = 1000, identify: Bool = false) -> Finding {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let target = host == "*" ? "127.0.0.1" : host
        guard getaddrinfo(target, String(port), &hints, &list) == 0, let first = list else {
            return .unreachable("cannot resolve host '\(host)'")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return .unreachable(String(cString: strerror(errno))) }
        defer { close(fd) }
        if connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
            return errno == ECONNREFUSED ? .refused : .unreachable(String(cString: strerror(errno)))
        }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, timeoutMs) == 1 else { return .unreachable("no connection within \(timeoutMs) ms") }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err == ECONNREFUSED { return .refused }
        if err != 0 { return .unreachable(String(cString: strerror(err))) }
        guard identify else { return .zeromq }
        func read(within ms: Int32) -> [UInt8] {
            var r = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&r, 1, ms) == 1 else { return [] }
            var buf = [UInt8](repeating: 0, count: 64)
            let n = recv(fd, &buf, buf.count, 0)
            return n > 0 ? Array(buf.prefix(n)) : []
        }
        let greeting = read(within: timeoutMs / 2)
        if greeting.first == 0xFF { return .zeromq }   // (ZMTP 3 greeting: 0xFF, 8 padding bytes, 0x7F)
        if !greeting.isEmpty { return greeting.starts(with: Array("HTTP/".utf8)) ? .http : .other }
        let ask = Array("HEAD / HTTP/1.0\r\n\r\n".utf8)
        _ = send(fd, ask, ask.count, Int32(MSG_NOSIGNAL))
        return read(within: timeoutMs / 2).starts(with: Array("HTTP/".utf8)) ? .http : .other
    }
}

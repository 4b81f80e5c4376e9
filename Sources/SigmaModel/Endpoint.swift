import Foundation

/// A coordinator's ZeroMQ endpoint, `tcp://HOST:PORT`: the one form every command shows and takes. What a user
/// types is accepted as the endpoint itself, `HOST:PORT`, `HOST` (port 7700), or `:PORT` / `PORT` (this host's
/// loopback); IPv6 addresses go in brackets (`tcp://[::1]:7700`). A web address (the dashboard's) and other schemes
/// are refused saying what the endpoint looks like.
public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public static let defaultPort = 7700

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `tcp://HOST:PORT`.
    public var description: String { "tcp://\(host.contains(":") ? "[\(host)]" : host):\(port)" }

    /// The endpoint `text` names; `field` is what the user gave it as (for errors), `bind`: an address to listen on
    /// (port 0 picks a free port).
    public static func parse(_ text: String, field: String = "--coordinator", bind: Bool = false) throws -> Endpoint {
        let (host, port) = try components(text, field: field, bind: bind)
        return Endpoint(host: host, port: port ?? defaultPort)
    }

    /// The host (loopback when none is given) and the port, if `text` gives one.
    public static func components(_ text: String, field: String, bind: Bool = false) throws -> (host: String, port: Int?) {
        let form = bind ? "tcp://ADDRESS:PORT (e.g. tcp://0.0.0.0:7700), an address, or a port"
                        : "tcp://HOST:PORT (e.g. tcp://10.0.0.5:7700), HOST:PORT, or HOST (port 7700)"
        func fail(_ problem: String) -> SpecError { SpecError(field: field, problem: "'\(text)': \(problem); give \(form)") }
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        guard !rest.isEmpty else { throw fail("empty") }
        if let scheme = rest.range(of: "://") {
            let name = rest[..<scheme.lowerBound].lowercased()
            if name == "http" || name == "https" {
                throw fail("a web address (the dashboard's?); the coordinator's endpoint is tcp://, on the dashboard's port minus one (7700 by default)")
            }
            guard name == "tcp" else { throw fail("only tcp:// endpoints are supported") }
            rest = rest[scheme.upperBound...]
        }
        guard !rest.contains("://") else { throw fail("two schemes") }
        guard !rest.contains("/") else { throw fail("a path after the address") }
        var host = "", portText: Substring? = nil
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw fail("an IPv6 address without its closing ]") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail("something after the IPv6 address") }
                portText = after.dropFirst()
            }
        } else if rest.allSatisfy(\.isNumber) {
            portText = rest   // (a port alone)
        } else if let colon = rest.lastIndex(of: ":") {
            guard rest.firstIndex(of: ":") == colon else { throw fail("an IPv6 address goes in brackets: tcp://[::1]:7700") }
            host = String(rest[..<colon])
            portText = rest[rest.index(after: colon)...]
        } else {
            host = String(rest)
        }
        if host.isEmpty { host = "127.0.0.1" }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" || $0 == "*" }) else {
            throw fail("'\(host)' is not a host name or address")
        }
        var port: Int? = nil
        if let p = portText {
            guard let n = Int(p), (bind ? 0 : 1)...65535 ~= n else { throw fail("port '\(p)' is not \(bind ? 0 : 1)…65535") }
            port = n
        }
        return (host, port)
    }
}

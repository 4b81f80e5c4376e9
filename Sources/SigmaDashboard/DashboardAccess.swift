import Foundation
import SigmaModel

/// Who may read the web dashboard and `/metrics`: checked on every request before any route runs. Pure: the HTTP
/// shell (`Dashboard.run`) hands it the request's Host header, path, query, `Authorization` and `Cookie`.
///
/// - The Host name must be a loopback name (`localhost`, `127.x.x.x`, `[::1]`), an IP literal, or one of `hosts`
///   (any port). A page on another name whose DNS answer was switched to this machine (DNS rebinding) sends that
///   name, and is refused; an IP literal cannot be rebound (the page's origin would be this server itself).
/// - With a `token`, every request must carry it: `Authorization: Bearer TOKEN`, or the `sigma_token` cookie that
///   opening any page once with `?token=TOKEN` sets (HttpOnly, SameSite=Strict). Compared in constant time.
public struct DashboardAccess: Sendable, Equatable {
    /// Host names allowed besides loopback names and IP literals: lowercase, without port.
    public var hosts: Set<String>
    /// The bearer token every request must carry (nil: none asked).
    public var token: String?

    public static let cookieName = "sigma_token"

    public init(hosts: [String] = [], token: String? = nil) {
        self.hosts = Set(hosts.compactMap { DashboardAccess.hostName($0) })
        self.token = token
    }

    public enum Verdict: Sendable, Equatable {
        case allow
        /// The right token came as `?token=`: answer 303 to `location` (the path without the query), setting the cookie.
        case setCookie(location: String)
        /// 403 (Host not allowed) or 401 (no or wrong token), with a short text saying what to do.
        case refuse(status: Int, message: String)
    }

    public func check(host: String?, path: String, query: String?, authorization: String?, cookie: String?) -> Verdict {
        guard let header = host, let name = DashboardAccess.hostName(header),
              DashboardAccess.isLoopback(name) || DashboardAccess.isIPLiteral(name) || hosts.contains(name) else {
            let shown = host.map { "'\(String($0.prefix(100)))'" } ?? "(none)"
            return .refuse(status: 403, message: "host name \(shown) is not allowed here (a guard against DNS rebinding): "
                + "allow it with `sigma coordinator --http-host NAME` or coordinator.http_hosts in cluster.yaml; "
                + "loopback names and IP addresses are always allowed\n")
        }
        guard let token else { return .allow }
        if let given = DashboardAccess.queryValue("token", in: query) {
            guard DashboardAccess.same(given, token) else { return .refuse(status: 401, message: DashboardAccess.tokenHelp) }
            // (one leading slash and no backslash: browsers read `//host` and `/\host` as another site)
            return .setCookie(location: "/" + path.drop { $0 == "/" || $0 == "\\" }.replacingOccurrences(of: "\\", with: "/"))
        }
        if let a = authorization, a.count > 7, a.prefix(7).lowercased() == "bearer " {
            return DashboardAccess.same(String(a.dropFirst(7)).trimmingCharacters(in: .whitespaces), token)
                ? .allow : .refuse(status: 401, message: DashboardAccess.tokenHelp)
        }
        if let c = DashboardAccess.cookieValue(DashboardAccess.cookieName, in: cookie), DashboardAccess.same(c, token) { return .allow }
        return .refuse(status: 401, message: DashboardAccess.tokenHelp)
    }

    static let tokenHelp = "this dashboard asks for its token (the --http-token-file file): send `Authorization: Bearer TOKEN`, "
        + "or open /?token=TOKEN once in the browser (it sets a cookie)\n"

    /// The `Set-Cookie` value that carries the token for later requests from the browser.
    public func cookie() -> String {
        "\(DashboardAccess.cookieName)=\(token ?? ""); Path=/; HttpOnly; SameSite=Strict"
    }

    /// Where the dashboard may listen: loopback always; any other address only with a token, or when told `--insecure`.
    public static func bindProblem(address: String, token: Bool, insecure: Bool) -> String? {
        if isLoopback(address.lowercased()) || token || insecure { return nil }
        return "refusing to serve the web dashboard and /metrics on \(address) without a token: pass --http-token-file FILE "
            + "(a secret of 16+ characters, mode 0600; e.g. openssl rand -hex 32 > FILE), or --insecure on a trusted network "
            + "(or keep --http-listen on 127.0.0.1 and use an SSH tunnel)"
    }

    /// The name part of a Host header, lowercase, without port or trailing dot: `Example.COM.:7701` → `example.com`,
    /// `[::1]:80` → `::1`. Nil for an empty or malformed one.
    public static func hostName(_ header: String) -> String? {
        var s = header.trimmingCharacters(in: .whitespaces).lowercased()
        if s.hasPrefix("[") {
            guard let end = s.firstIndex(of: "]") else { return nil }
            let rest = s[s.index(after: end)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return nil }
            s = String(s[s.index(after: s.startIndex)..<end])
            return s.isEmpty ? nil : s
        }
        if let colon = s.firstIndex(of: ":") {
            guard s[s.index(after: colon)...].allSatisfy(\.isNumber) else { return nil }
            s = String(s[..<colon])
        }
        if s.hasSuffix(".") { s.removeLast() }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }) else { return nil }
        return s
    }

    /// `localhost`, `127.x.x.x` and `::1` (as `hostName` gives them).
    public static func isLoopback(_ name: String) -> Bool {
        name == "localhost" || name == "::1" || (name.hasPrefix("127.") && isIPLiteral(name))
    }

    /// A numeric IPv4 or IPv6 address (what a browser sends for a URL such as `http://10.0.0.5:7701/`).
    static func isIPLiteral(_ name: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, name, &v4) == 1 || inet_pton(AF_INET6, name, &v6) == 1
    }

    /// Equal strings, in time that does not depend on where they differ (or on the token's length): their SHA-256
    /// digests are compared byte by byte without stopping early.
    static func same(_ a: String, _ b: String) -> Bool {
        var ha = SHA256(), hb = SHA256()
        ha.update(Array(a.utf8))
        hb.update(Array(b.utf8))
        let da = ha.finish(), db = hb.finish()
        var diff: UInt8 = 0
        for i in 0..<min(da.count, db.count) { diff |= da[i] ^ db[i] }
        return diff == 0 && da.count == db.count
    }

    static func queryValue(_ key: String, in query: String?) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv.count == 2, kv[0] == key { return String(kv[1]).removingPercentEncoding ?? String(kv[1]) }
        }
        return nil
    }

    static func cookieValue(_ name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv.count == 2, kv[0] == name { return String(kv[1]) }
        }
        return nil
    }
}

extension DashboardAccess {
    /// The token from `--http-token-file`: its first line, trimmed. Refused, naming the fix, when group or others may
    /// read the file (as key files are), or when it is shorter than 16 characters. (I/O: reads the file.)
    public static func token(file path: String) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { throw DashboardError.tokenFile(path, "cannot be read (\(String(cString: strerror(errno))))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw DashboardError.tokenFile(path, "is not a regular file") }
        let mode = st.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw DashboardError.tokenFile(path, "is readable by others (mode \(String(mode, radix: 8))); run: chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw DashboardError.tokenFile(path, "cannot be read") }
        let token = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard token.count >= 16 else {
            throw DashboardError.tokenFile(path, "holds \(token.count) characters, fewer than 16; make one with: openssl rand -hex 32 > \(path)")
        }
        guard token.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != ";" && $0 != "&" && $0 != "%" }) else {
            throw DashboardError.tokenFile(path, "holds spaces, ';', '&', '%' or non-ASCII characters; make one with: openssl rand -hex 32 > \(path)")
        }
        return token
    }
}

/// What went wrong setting up the dashboard.
public enum DashboardError: Error, CustomStringConvertible, Equatable {
    /// A `--http-token-file` that cannot serve: the path and why.
    case tokenFile(String, String)

    public var description: String {
        switch self {
        case .tokenFile(let path, let problem): "token file \(path) \(problem)"
        }
    }
}

/// What an enrolled key may do (docs/security.md). Written by `sigma keygen --role` into NAME.pub; the copy in the
/// coordinator's allow folder is what counts.
public enum Role: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Joins as a worker: HELLO, HEARTBEAT, RESULT, FILE-GET for the shards it was given.
    case worker
    /// Submits jobs and sees, follows, fetches and cancels its own.
    case client
    /// A client that sees and cancels every job and drains workers.
    case admin

    public var description: String { rawValue }

    public static func parse(_ text: String) -> Role? { Role(rawValue: text.lowercased()) }
}

/// Who sent a message to the coordinator: the name and public key its connection was admitted with, and what it
/// may do. `trusted` peers (the coordinator's own user on loopback, or anyone on an `--insecure` network, or the
/// process itself) may do everything.
public struct Principal: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    /// Z85 public key ("" where the connection has none: the local token, or no security at all).
    public var key: String
    /// nil: trusted (every role).
    public var role: Role?

    public init(name: String, key: String = "", role: Role?) {
        self.name = name
        self.key = key
        self.role = role
    }

    /// Everything allowed: the coordinator's own user (loopback token) or a peer of an unauthenticated link.
    public static let trusted = Principal(name: "local", role: nil)

    public var mayWork: Bool { role == nil || role == .worker }
    public var maySubmit: Bool { role == nil || role == .client || role == .admin }
    /// Sees and cancels every job, drains workers.
    public var isAdmin: Bool { role == nil || role == .admin }
    /// Who owns the jobs this principal submits: its key (names are chosen by whoever enrols, keys are unique).
    public var owner: String { key.isEmpty ? "name:" + name : key }

    public var description: String { role.map { "key '\(name)' (role \($0))" } ?? "'\(name)'" }

    /// The ZAP user id this principal is admitted with (`zmq_msg_gets(…, "User-Id")` on each message): `role name key`
    /// (no field holds a space: names are checked, Z85 has none). The trusted principal is `trusted local -`.
    public var userID: String { "\(role?.rawValue ?? "trusted") \(name) \(key.isEmpty ? "-" : key)" }

    /// The principal of a ZAP user id; nil for text that is not one (a connection without ZAP has none at all).
    public init?(userID text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, !parts[1].isEmpty else { return nil }
        if parts[0] == "trusted" {
            role = nil
        } else {
            guard let r = Role(rawValue: parts[0]) else { return nil }
            role = r
        }
        name = parts[1]
        key = parts[2] == "-" ? "" : parts[2]
    }

    /// Why `role` is refused `what`, and how to get a key that may.
    public func refusal(_ what: String, needs roles: [Role]) -> String {
        let list = roles.map(\.rawValue).joined(separator: " or ")
        return "\(what) needs the \(list) role; \(self) may not (make a key with: sigma keygen NAME --role \(roles[0]), and enrol its .pub in the coordinator's allow folder)"
    }
}

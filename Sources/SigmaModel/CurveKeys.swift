import Foundation

/// Z85 (ZeroMQ RFC 32): 4 bytes ↔ 5 printable characters. CURVE keys are 32 bytes, 40 characters.
public enum Z85 {
    static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
    static let decodeTable: [Int16] = {
        var t = [Int16](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = Int16(i) }
        return t
    }()

    /// `bytes.count` must be a multiple of 4.
    public static func encode(_ bytes: [UInt8]) -> String? {
        guard bytes.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count / 4 * 5)
        for i in stride(from: 0, to: bytes.count, by: 4) {
            var v = UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
            var chunk = [UInt8](repeating: 0, count: 5)
            for j in stride(from: 4, through: 0, by: -1) {
                chunk[j] = alphabet[Int(v % 85)]
                v /= 85
            }
            out += chunk
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil unless `text` is a multiple of 5 characters from the Z85 alphabet, each group at most 2³² − 1.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 5 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 5 * 4)
        for i in stride(from: 0, to: chars.count, by: 5) {
            var v: UInt64 = 0
            for j in 0..<5 {
                let d = decodeTable[Int(chars[i + j])]
                guard d >= 0 else { return nil }
                v = v * 85 + UInt64(d)
            }
            guard v <= UInt64(UInt32.max) else { return nil }
            out += [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
        }
        return out
    }

    /// Whether `text` is a CURVE key: 40 Z85 characters decoding to 32 bytes.
    public static func isKey(_ text: String) -> Bool { text.utf8.count == 40 && decode(text)?.count == 32 }
}

/// A key file problem, naming the file and what is wrong.
public struct KeyFileError: Error, CustomStringConvertible, Equatable {
    public let file: String, problem: String
    public init(file: String, problem: String) { self.file = file; self.problem = problem }
    public var description: String { "\(file): \(problem)" }
}

/// A CURVE key file written by `sigma keygen`: `NAME.key` holds the key pair (and, for workers and clients, the
/// coordinator's public key), `NAME.pub` the public key alone. Lines `field = value`; lines starting with `#` are
/// comments.
public struct CurveKeyFile: Equatable, Sendable {
    public var name: String
    /// Z85, 40 characters each.
    public var publicKey: String
    public var secretKey: String?
    /// The coordinator's public key, for a worker or client key pair made with `--coordinator`.
    public var coordinatorKey: String?
    /// What the key may do once enrolled (`role = …`); nil in files from before roles (enrolled as `client`).
    public var role: Role?

    public init(name: String, publicKey: String, secretKey: String? = nil, coordinatorKey: String? = nil, role: Role? = nil) {
        self.name = name
        self.publicKey = publicKey
        self.secretKey = secretKey
        self.coordinatorKey = coordinatorKey
        self.role = role
    }

    /// The role an enrolled public key gets: its `role` line, else `client` (the least a key file can ask for).
    public var enrolledRole: Role { role ?? .client }

    /// Names are what logs and the dashboard show for an enrolled key: letters, digits, `-`, `_`, `.`, 1…64.
    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && !s.hasPrefix(".")
            && s.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "-_.".unicodeScalars.contains($0) }
    }

    /// The text of the secret `NAME.key` file (nil for a public key alone).
    public var secretFileText: String? {
        guard let secret = secretKey else { return nil }
        var s = "# Sigma CURVE key pair \"\(name)\". SECRET: keep this file on its own host only (mode 0600).\n"
        s += "# Enrol it by copying \(name).pub into the coordinator's allow folder (see docs/operations.md).\n"
        s += "name = \(name)\n"
        if let r = role { s += "role = \(r)\n" }
        s += "public = \(publicKey)\nsecret = \(secret)\n"
        if let c = coordinatorKey { s += "coordinator = \(c)\n" }
        return s
    }

    /// The text of the public `NAME.pub` file.
    public var publicFileText: String {
        "# Sigma CURVE public key \"\(name)\": safe to share; the coordinator admits it when it is in its allow folder,\n"
            + "# with the role below (worker, client or admin; docs/security.md).\n"
            + "name = \(name)\n" + (role.map { "role = \($0)\n" } ?? "") + "public = \(publicKey)\n"
    }

    public static func parse(_ text: String, file: String) throws -> CurveKeyFile {
        var fields: [String: String] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // Only whole lines are comments: '#' is a Z85 character, so keys may contain it.
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isLetter || $0 == "_" }) else {
                throw KeyFileError(file: file, problem: "line \(i + 1): expected 'field = value' (name, role, public, secret or coordinator)")
            }
            guard ["name", "role", "public", "secret", "coordinator"].contains(parts[0]) else {
                throw KeyFileError(file: file, problem: "line \(i + 1): unknown field (name, role, public, secret, coordinator)")
            }
            guard fields[parts[0]] == nil else { throw KeyFileError(file: file, problem: "line \(i + 1): '\(parts[0])' given twice") }
            fields[parts[0]] = parts[1]
        }
        guard let pub = fields["public"] else { throw KeyFileError(file: file, problem: "no 'public' key; is this a file written by sigma keygen?") }
        for f in ["public", "secret", "coordinator"] {
            if let v = fields[f], !Z85.isKey(v) {
                throw KeyFileError(file: file, problem: "'\(f)' is not a CURVE key (40 Z85 characters), got \(v.utf8.count) characters")
            }
        }
        let name = fields["name"] ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        guard isValidName(name) else { throw KeyFileError(file: file, problem: "'name' must be 1…64 letters, digits, '-', '_' or '.'") }
        var role: Role? = nil
        if let r = fields["role"] {
            guard let parsed = Role.parse(r) else {
                throw KeyFileError(file: file, problem: "'role' must be worker, client or admin")
            }
            role = parsed
        }
        return CurveKeyFile(name: name, publicKey: pub, secretKey: fields["secret"], coordinatorKey: fields["coordinator"], role: role)
    }

}

/// ZeroMQ's authentication protocol (ZAP, RFC 27): one request in, one reply out. Pure: the caller passes the
/// lookup from a ZAP domain and a credential to the principal it admits. CURVE carries a public key (enrolled keys);
/// PLAIN carries the coordinator user's local token (loopback without keys, docs/security.md). The reply's user id
/// is the principal (`Principal.userID`), which libzmq attaches to every message of that connection.
public enum ZAP {
    public struct Decision: Equatable, Sendable {
        public var reply: [[UInt8]]
        /// What to log: who was admitted or refused, and why.
        public var admitted: Bool
        public var note: String
    }

    public enum Credential: Sendable, Equatable {
        case curve(key: String)
        case plain(user: String, password: String)
    }

    /// `frames`: [version, request id, domain, address, identity, mechanism, credentials…].
    public static func decide(_ frames: [[UInt8]], lookup: (_ domain: String, _ credential: Credential) -> Principal?) -> Decision {
        func reply(_ id: [UInt8], _ code: String, _ text: String, user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), id, Array(code.utf8), Array(text.utf8), Array(user.utf8), []]
        }
        guard frames.count >= 6, String(decoding: frames[0], as: UTF8.self) == "1.0" else {
            let id = frames.count > 1 ? frames[1] : []
            return Decision(reply: reply(id, "500", "malformed ZAP request"), admitted: false, note: "malformed ZAP request (\(frames.count) frames)")
        }
        let id = frames[1], domain = String(decoding: frames[2], as: UTF8.self), address = String(decoding: frames[3], as: UTF8.self)
        let mechanism = String(decoding: frames[5], as: UTF8.self)
        let credential: Credential
        if mechanism == "CURVE", frames.count == 7, frames[6].count == 32, let key = Z85.encode(frames[6]) {
            credential = .curve(key: key)
        } else if mechanism == "PLAIN", frames.count == 8 {
            credential = .plain(user: String(decoding: frames[6], as: UTF8.self), password: String(decoding: frames[7], as: UTF8.self))
        } else {
            return Decision(reply: reply(id, "400", "CURVE required"), admitted: false,
                            note: "refused a \(mechanism) connection from \(address): CURVE keys required")
        }
        guard let who = lookup(domain, credential) else {
            switch credential {
            case .curve(let key):
                return Decision(reply: reply(id, "400", "key not enrolled"), admitted: false,
                                note: "refused CURVE key \(key) from \(address): not enrolled (copy its .pub file into the allow folder to admit it)")
            case .plain:
                return Decision(reply: reply(id, "400", "wrong local token"), admitted: false,
                                note: "refused a loopback connection from \(address) without this user's local token (another local user, or a token from another state folder)")
            }
        }
        let what = who.role.map { "key \"\(who.name)\" (role \($0))" } ?? "the local user's token"
        return Decision(reply: reply(id, "200", "OK", user: who.userID), admitted: true, note: "admitted \(what) from \(address)")
    }
}


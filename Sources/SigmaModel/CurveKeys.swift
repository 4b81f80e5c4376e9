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

    /// Reads a key file. `secret`: the file must hold a secret key and be readable by its owner only.
    public static func load(path: String, secret: Bool) throws -> CurveKeyFile {
        var st = stat()
        guard stat(path, &st) == 0, let data = FileManager.default.contents(atPath: path) else {
            throw KeyFileError(file: path, problem: "cannot read it (make one with: sigma keygen NAME)")
        }
        guard data.count <= 64 * 1024 else { throw KeyFileError(file: path, problem: "\(data.count) bytes is too large for a key file") }
        let k = try parse(String(decoding: data, as: UTF8.self), file: path)
        if secret {
            guard k.secretKey != nil else {
                throw KeyFileError(file: path, problem: "holds no 'secret' key: pass the NAME.key file, not NAME.pub")
            }
            let mode = st.st_mode & 0o777
            guard mode & 0o077 == 0 else {
                throw KeyFileError(file: path, problem: "holds a secret key but is readable by others (mode \(String(mode, radix: 8))); run: chmod 600 \(path)")
            }
        }
        return k
    }
}

/// The coordinator's allow list: the public keys (`*.pub`) in one folder, with the role each file grants, read again
/// whenever the folder changes, so enrolling (copying a key in) or revoking (deleting it) needs no restart — for new
/// connections. Whoever can write the folder decides who gets in and with which role, so a folder (or key file)
/// that others may write is refused: nothing is admitted from it.
public final class AllowList: @unchecked Sendable {
    public let folder: String
    private let lock = NSLock()
    private var keys: [String: (name: String, role: Role)] = [:]     // Z85 public key → name, role
    /// The folder's and its `.pub` files' modification times and sizes at the last read.
    private var stamp: [String] = []
    /// When the folder was last read (wall clock, seconds).
    private var readAt = 0.0
    /// Files skipped at the last read, with why (shown in the coordinator's log).
    public private(set) var skipped: [String] = []

    public init(folder: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw KeyFileError(file: folder, problem: "no such folder (the allow folder holds the enrolled *.pub keys)")
        }
        if let problem = Self.unsafe(folder, folder: true) { throw KeyFileError(file: folder, problem: problem) }
        self.folder = folder
        _ = refresh()
    }

    /// Why a path others could rewrite may not decide who gets in (nil: it is safe): it must belong to this user
    /// (or root) and be writable by its owner only.
    public static func unsafe(_ path: String, folder: Bool) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return "cannot be read" }
        let mode = st.st_mode & 0o777
        if st.st_uid != geteuid() && st.st_uid != 0 {
            return "belongs to another user (uid \(st.st_uid)); the allow \(folder ? "folder" : "file") must be this user's"
        }
        if mode & 0o022 != 0 {
            return "is writable by others (mode \(String(mode, radix: 8))), so anyone could enrol a key; run: chmod go-w \(path)"
        }
        return nil
    }

    /// Re-reads the folder if it or one of its `.pub` files changed (added, removed, rewritten in place); returns the
    /// number of enrolled keys.
    @discardableResult
    public func refresh() -> Int {
        lock.lock()
        defer { lock.unlock() }
        var st = stat()
        guard stat(folder, &st) == 0 else { keys = [:]; stamp = []; return 0 }
        var latest = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        var now = ["\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_mode) \(st.st_uid)"]
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".pub") }.sorted()
        for n in names {
            var fs = stat()
            guard lstat(folder + "/" + n, &fs) == 0 else { continue }
            now.append("\(n) \(fs.st_mtim.tv_sec).\(fs.st_mtim.tv_nsec) \(fs.st_size) \(fs.st_mode) \(fs.st_uid)")
            latest = max(latest, Double(fs.st_mtim.tv_sec) + Double(fs.st_mtim.tv_nsec) / 1e9)
        }
        // File times are coarse (a clock tick): a change made in the tick of the last read can leave every time as it
        // was, so times within 2 s of that read do not prove the folder unchanged — read it again.
        if now == stamp && readAt - latest > 2 { return keys.count }
        stamp = now
        readAt = Date().timeIntervalSince1970
        if let problem = Self.unsafe(folder, folder: true) {
            keys = [:]
            skipped = ["\(folder): \(problem); no key is admitted until it is fixed"]
            return 0
        }
        var found: [String: (name: String, role: Role)] = [:], bad: [String] = []
        for n in names {
            let path = folder + "/" + n
            if let problem = Self.unsafe(path, folder: false) {
                bad.append("\(path): \(problem)")
                continue
            }
            do {
                let k = try CurveKeyFile.load(path: path, secret: false)
                found[k.publicKey] = (k.name, k.enrolledRole)
                if k.role == nil { bad.append("\(path): no 'role' line; enrolled as a client (add 'role = worker' or 'role = admin' to grant more)") }
            } catch {
                bad.append("\(error)")
            }
        }
        keys = found
        skipped = bad
        return found.count
    }

    /// Who an enrolled Z85 public key is, nil if it is not enrolled.
    public func principal(of key: String) -> Principal? {
        refresh()
        lock.lock()
        defer { lock.unlock() }
        return keys[key].map { Principal(name: $0.name, key: key, role: $0.role) }
    }

    /// The enrolled name of a Z85 public key, nil if it is not enrolled.
    public func name(of key: String) -> String? { principal(of: key)?.name }
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

/// The coordinator user's local token: without keys, a coordinator on loopback admits only connections that
/// present it (ZeroMQ PLAIN over loopback), and only this user can read it — so other local users do not get in.
/// It lives in the user's state folder (`$XDG_STATE_HOME/sigma`, else `~/.local/state/sigma`), created 0700, the
/// token 0600; the first coordinator makes it, every `sigma` command of the same user finds it.
public enum LocalToken {
    /// `$SIGMA_STATE_DIR`, else `$XDG_STATE_HOME/sigma`, else `$HOME/.local/state/sigma`.
    public static func folder(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let d = env["SIGMA_STATE_DIR"], !d.isEmpty { return d }
        if let x = env["XDG_STATE_HOME"], !x.isEmpty { return x + "/sigma" }
        if let h = env["HOME"], !h.isEmpty { return h + "/.local/state/sigma" }
        return "/tmp/sigma-state-\(geteuid())"
    }

    public static func path(in folder: String) -> String { folder + "/local.token" }

    /// The token, made on first use (`create`); throws naming the file when it cannot be made or read safely.
    public static func load(folder: String = folder(), create: Bool) throws -> String {
        let file = path(in: folder)
        if create {
            try makeFolder(folder)
            if access(file, F_OK) != 0 {
                var bytes = [UInt8](repeating: 0, count: 24)
                let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
                guard fd >= 0, read(fd, &bytes, bytes.count) == bytes.count else { throw KeyFileError(file: "/dev/urandom", problem: "cannot read random bytes") }
                close(fd)
                let text = Array((Z85.encode(bytes)! + "\n").utf8)
                // Written under a temporary name, then linked into place: two coordinators starting at once agree.
                let tmp = file + ".\(getpid()).tmp"
                unlink(tmp)
                let w = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
                guard w >= 0 else { throw KeyFileError(file: tmp, problem: "cannot create it: \(String(cString: strerror(errno)))") }
                let n = text.withUnsafeBytes { write(w, $0.baseAddress, $0.count) }
                close(w)
                guard n == text.count else { unlink(tmp); throw KeyFileError(file: tmp, problem: "cannot write it") }
                if link(tmp, file) != 0 && errno != EEXIST {
                    let e = errno
                    unlink(tmp)
                    throw KeyFileError(file: file, problem: "cannot create it: \(String(cString: strerror(e)))")
                }
                unlink(tmp)
            }
        }
        var st = stat()
        guard lstat(file, &st) == 0 else {
            if errno == EACCES {
                throw KeyFileError(file: file, problem: "cannot be read by this user: a loopback coordinator without keys admits only processes of the user that started it (use CURVE keys to share a coordinator)")
            }
            throw KeyFileError(file: file, problem: "no local token: no coordinator of this user has run on this host with this state folder (start one with: sigma coordinator), or pass --key for a coordinator with keys")
        }
        guard st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(), st.st_mode & 0o077 == 0 else {
            throw KeyFileError(file: file, problem: "must be a file of this user readable by its owner only (mode 0600); remove it and start the coordinator again")
        }
        let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw KeyFileError(file: file, problem: "cannot read it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 128)
        let n = read(fd, &buf, buf.count)
        let token = String(decoding: buf.prefix(max(0, n)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard token.utf8.count == 30, Z85.decode(token) != nil else {
            throw KeyFileError(file: file, problem: "is not a Sigma local token; remove it and start the coordinator again")
        }
        return token
    }

    /// Creates the state folder 0700 (and its parents), then checks it is this user's and not writable by others.
    public static func makeFolder(_ folder: String) throws {
        if access(folder, F_OK) != 0 {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw KeyFileError(file: folder, problem: "cannot create the state folder: \(error.localizedDescription)")
            }
        }
        var st = stat()
        guard lstat(folder, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { throw KeyFileError(file: folder, problem: "is not a folder") }
        guard st.st_uid == geteuid() else { throw KeyFileError(file: folder, problem: "belongs to another user (uid \(st.st_uid)); set SIGMA_STATE_DIR to a folder of yours") }
        // (readable by others is harmless — the token file itself is 0600 — but writable would let them replace it)
        guard st.st_mode & 0o022 == 0 else {
            throw KeyFileError(file: folder, problem: "is writable by others (mode \(String(st.st_mode & 0o777, radix: 8))); run: chmod 700 \(folder)")
        }
    }

    /// Whether an endpoint (tcp://HOST:PORT) names a loopback address.
    public static func isLoopback(endpoint: String) -> Bool {
        var host = endpoint.hasPrefix("tcp://") ? String(endpoint.dropFirst(6)) : endpoint
        if host.hasPrefix("[") { host = String(host.dropFirst().prefix { $0 != "]" }) } else if let c = host.lastIndex(of: ":") { host = String(host[..<c]) }
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

import Foundation
import Glibc
import SigmaModel

// The file side of Sigma's authentication (the pure parts — key file text, Z85, ZAP decisions, principals — are in
// SigmaModel): reading key files, the coordinator's allow folder, the local token.

extension CurveKeyFile {
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
        // (stat, not lstat: what counts is the file a name leads to — Kubernetes mounts a ConfigMap's files as
        // symlinks into a root-owned folder — and that file must be closed to others too)
        guard stat(path, &st) == 0 else { return "cannot be read" }
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
            guard stat(folder + "/" + n, &fs) == 0 else { continue }
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

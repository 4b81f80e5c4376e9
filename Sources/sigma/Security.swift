import ArgumentParser
import Foundation
import SigmaClient
import SigmaModel
import SigmaTransport

/// CURVE flags of every command that connects to a coordinator (workers and clients).
struct KeyOptions: ParsableArguments {
    @Option(help: "This host's CURVE key pair file from `sigma keygen` (default: $SIGMA_KEY, else cluster.yaml security.key; none: no encryption).")
    var key: String?

    @Option(help: "The coordinator's public key file (default: security.coordinator_key, else the one named in --key's file).")
    var coordinatorKey: String?

    @Flag(help: "Connect without keys or local token, to a coordinator started with --insecure.")
    var insecure = false

    /// A worker's or client's security for `endpoint` from --key / --coordinator-key or cluster.yaml: CURVE with a
    /// key; without one, this user's local token for a loopback coordinator (docs/security.md); nil: plain
    /// (`--insecure`, or a coordinator elsewhere started with --insecure).
    func clientSecurity(_ cfg: ClusterConfig, endpoint: String) throws -> LinkSecurity? {
        let keyPath = key ?? ProcessInfo.processInfo.environment["SIGMA_KEY"].flatMap { $0.isEmpty ? nil : $0 } ?? cfg.keyFile
        let serverPath = coordinatorKey ?? cfg.coordinatorKeyFile
        guard let keyPath else {
            if let s = serverPath { throw CLIError.usage("\(s) (the coordinator's key) is given but this host has no key pair: pass --key NAME.key (make one with: sigma keygen NAME)") }
            if insecure || cfg.insecure || !LocalToken.isLoopback(endpoint: endpoint) { return nil }
            do { return .localClient(token: try LocalToken.load(create: false)) } catch let e as KeyFileError {
                throw CLIError.usage("\(e)")
            }
        }
        do {
            guard ZContext.hasCurve else { throw CLIError.usage("this libzmq has no CURVE support; install Debian's libzmq3-dev/libzmq5 (built with libsodium)") }
            let k = try CurveKeyFile.load(path: keyPath, secret: true)
            let (pub, secret) = try Curve.verified(k, file: keyPath)
            let server: String
            if let p = serverPath {
                server = try CurveKeyFile.load(path: p, secret: false).publicKey
            } else if let c = k.coordinatorKey {
                server = c
            } else {
                throw CLIError.usage("\(keyPath) does not name the coordinator's key: pass --coordinator-key coordinator.pub (or make the key with: sigma keygen \(k.name) --coordinator-key coordinator.pub)")
            }
            return .client(serverKey: server, publicKey: pub, secretKey: secret)
        } catch let e as KeyFileError {
            throw CLIError.usage("\(e)")
        }
    }

    /// A client for `endpoint` with this host's CURVE settings.
    /// A client of the coordinator `given` names (`--coordinator`; see `coordinatorEndpoint`).
    func client(given: String?, _ cfg: ClusterConfig, flag: String = "--coordinator") throws -> SigmaClient {
        try client(try coordinatorEndpoint(given, cfg, flag: flag), cfg)
    }

    /// `probe`: first make sure something listens there — a closed port is told within 2 s (a coordinator started
    /// just before gets that long to listen), not after the request's timeout.
    func client(_ endpoint: String, _ cfg: ClusterConfig, probe: Bool = true) throws -> SigmaClient {
        var o = LinkOptions()
        o.maxFrame = cfg.maxFrame
        o.security = try clientSecurity(cfg, endpoint: endpoint)
        let client: SigmaClient
        do { client = try SigmaClient(factory: .zmqConnect(endpoint, o), endpoint: endpoint) } catch {
            throw CLIError.unreachable("\(error)")
        }
        if probe, let e = try? Endpoint.parse(endpoint) {
            var finding = EndpointProbe.probe(host: e.host, port: e.port)
            let until = Date().addingTimeInterval(2)
            while finding == .refused, Date() < until {
                usleep(100_000)
                finding = EndpointProbe.probe(host: e.host, port: e.port)
            }
            switch finding {
            case .refused:
                client.close()
                throw CLIError.unreachable("nothing listens at \(endpoint) (connection refused): is the coordinator running there? (start one with: sigma coordinator; its port is 7700 unless --port says otherwise)")
            case .unreachable(let why):
                client.close()
                throw CLIError.unreachable("cannot reach \(endpoint): \(why)")
            default:
                break
            }
        }
        return client
    }
}

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (to enrol with the coordinator).",
        discussion: """
        Example:
          sigma keygen coordinator -o keys/            # the coordinator's pair
          sigma keygen worker-b --role worker -o keys/ \\
                       --coordinator-key keys/coordinator.pub
          sigma keygen alice -o keys/ \\
                       --coordinator-key keys/coordinator.pub   # a client
          cp keys/worker-b.pub keys/alice.pub allowed/ # enrol them (no restart)
          sigma coordinator --listen 0.0.0.0 --key keys/coordinator.key \\
                            --allow allowed/
          sigma worker --coordinator tcp://hostA:7700 --key keys/worker-b.key
        A key made with --coordinator-key carries the coordinator's public key,
        so a worker or client needs only --key. Only NAME.pub leaves its host.
        Roles: a worker key may only join as a worker; a client key submits
        jobs and sees, follows, fetches and cancels its own; an admin key sees
        and cancels every job and drains workers. The role is written in
        NAME.pub: the copy in the allow folder is what counts.
        """)

    @Argument(help: "Name of the key (letters, digits, '-', '_', '.'); shown in the coordinator's log for this peer.") var name: String
    @Option(name: [.customShort("o"), .long], help: "Folder to write NAME.key and NAME.pub into.") var output: String = "."
    @Option(help: "The coordinator's public key file (its .pub): written into NAME.key, so workers and clients need only --key.") var coordinatorKey: String?
    @Option(help: "What the key may do once enrolled: worker, client or admin.") var role: String = "client"
    @Flag(help: "Replace existing files.") var force = false

    func run() throws {
        do {
            guard CurveKeyFile.isValidName(name) else { throw CLIError.usage("key name '\(name)' must be 1…64 letters, digits, '-', '_' or '.'") }
            guard let r = Role.parse(role) else { throw CLIError.usage("--role must be worker, client or admin, got '\(role)'") }
            let server = try coordinatorKey.map { try CurveKeyFile.load(path: $0, secret: false).publicKey }
            let (pub, secret) = try Curve.newKeyPair()
            // (the coordinator's own pair has no role: it is not enrolled anywhere)
            let k = CurveKeyFile(name: name, publicKey: pub, secretKey: secret, coordinatorKey: server, role: r)
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            let folder = output.count > 1 && output.hasSuffix("/") ? String(output.dropLast()) : output   // (keys/ → keys/NAME.key)
            let keyPath = folder + "/" + name + ".key", pubPath = folder + "/" + name + ".pub"
            for p in [keyPath, pubPath] where !force && FileManager.default.fileExists(atPath: p) {
                throw CLIError.usage("\(p) exists; pass --force to replace it (peers enrolled with the old key are then refused)")
            }
            // The secret file is created 0600 before any byte is written.
            unlink(keyPath)
            let fd = open(keyPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw CLIError.usage("cannot create \(keyPath): \(String(cString: strerror(errno)))") }
            let text = Array(k.secretFileText!.utf8)
            let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            guard written == text.count else { throw CLIError.usage("cannot write \(keyPath)") }
            try k.publicFileText.write(toFile: pubPath, atomically: true, encoding: .utf8)
            print("wrote \(keyPath) (secret) and \(pubPath) (public key \(pub), role \(r))")
            if server == nil {
                print("a worker or client using this key also needs --coordinator-key coordinator.pub (or make the key with it)")
            }
        } catch let e as KeyFileError {
            exitWith(CLIError.usage("\(e)"))
        } catch {
            exitWith(error)
        }
    }
}

/// The coordinator a command talks to, as `tcp://HOST:PORT`: `given` (`--coordinator`, or a worker's `--join`), else
/// `SIGMA_COORDINATOR`, else cluster.yaml's (`worker.join`, or its coordinator address), else tcp://127.0.0.1:7700.
/// `HOST:PORT`, `HOST` and a port alone are accepted and normalised (`Endpoint`); a mistake names where it came from.
func coordinatorEndpoint(_ given: String?, _ cfg: ClusterConfig, flag: String = "--coordinator",
                         environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
    let env = environment["SIGMA_COORDINATOR"].flatMap { $0.isEmpty ? nil : $0 }
    let (text, field) = given.map { ($0, flag) } ?? env.map { ($0, "SIGMA_COORDINATOR") } ?? (cfg.coordinator, "the config's coordinator endpoint")
    let endpoint: String
    do { endpoint = try Endpoint.parse(text, field: field).description } catch let e as SpecError {
        throw CLIError.usage("\(e.field): \(e.problem)")
    }
    if given != nil, endpoint != "tcp://127.0.0.1:\(Endpoint.defaultPort)" { givenEndpoint.withLock { $0 = endpoint } }
    return endpoint
}

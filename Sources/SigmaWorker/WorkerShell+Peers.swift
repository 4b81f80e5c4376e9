import Logging
import SigmaModel
import SigmaTransport

extension WorkerShell {
    /// This worker's links to other workers for collective training steps (exchanging gradient slices directly);
    /// nil when it has none (an in-process link to the coordinator, or the address could not be bound). Compute
    /// threads reach it through `Shared`; it is closed when the worker stops.
    public var mesh: PeerMesh? { shared.mesh }

    /// The peer mesh and what HELLO says of it (`,peer=tcp://HOST:PORT`, and `,peer-key=KEY` under CURVE: Z85 has no
    /// commas); nil and "" when there is none — a warning then names the address and the flag that fixes it.
    static func peerMesh(_ factory: LinkFactory, options: Options, logger: Logger) -> (mesh: PeerMesh?, features: String) {
        guard let security = options.peerSecurity ?? peerSecurity(of: factory) else { return (nil, "") }
        let coordinator = factory.endpoint
        guard let host = options.peerHost ?? PeerMesh.localAddress(reaching: coordinator) else {
            logger.warning("cannot tell which address of this host reaches the coordinator at \(coordinator), so other workers cannot reach this one: pass --peer-address ADDRESS; collective training steps will not run here")
            return (nil, "")
        }
        do {
            let mesh = try PeerMesh(host: host, port: options.peerPort, security: security) { peer, reason in
                logger.warning("\(reason)", metadata: ["peer": "\(peer)"])
            }
            logger.info("other workers reach this one at \(mesh.endpoint) (collective training steps)")
            var features = ",peer=" + mesh.endpoint
            if case .curve(let publicKey, _) = security { features += ",peer-key=" + publicKey }
            return (mesh, features)
        } catch {
            logger.warning("cannot listen for other workers at tcp://\(host):\(options.peerPort): \(error); collective training steps will not run here (choose the address and port with --peer-address and --peer-port)")
            return (nil, "")
        }
    }

    /// The mesh authenticates as the worker's link to the coordinator does: its CURVE key pair, this user's local
    /// token, or nothing (`--insecure`); nil for an in-process link (no mesh).
    static func peerSecurity(of factory: LinkFactory) -> PeerSecurity? {
        guard case .zmqConnect(_, let link) = factory else { return nil }
        switch link.security {
        case .client(_, let publicKey, let secretKey)?: return .curve(publicKey: publicKey, secretKey: secretKey)
        case .localClient(let token)?: return .local(token: token)
        case nil: return PeerSecurity.none
        case .server?, .localServer?: return nil
        }
    }
}

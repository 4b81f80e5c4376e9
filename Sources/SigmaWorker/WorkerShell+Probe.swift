import SigmaModel
import SigmaTransport

extension WorkerShell {
    /// Why a worker hears nothing from `endpoint`, when a plain look at the port says (appended to its reconnect
    /// warning): nothing listens, a web server (the dashboard's port?) or another service answers; "" for a ZeroMQ
    /// peer (a coordinator that is busy, or refuses this worker's key: its own log says which).
    static func whatListens(_ endpoint: String) -> String {
        guard let e = try? Endpoint.parse(endpoint) else { return "" }
        switch EndpointProbe.probe(host: e.host, port: e.port, timeoutMs: 500, identify: true) {
        case .refused: return " (nothing listens there: is the coordinator running? start one with: sigma coordinator)"
        case .http: return " (a web server answers there, not the coordinator: the dashboard listens on the coordinator's port + 1)"
        case .other: return " (another service listens there, not a Sigma coordinator)"
        case .unreachable(let why): return " (\(why))"
        case .zeromq: return ""
        }
    }
}

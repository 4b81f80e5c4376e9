import Foundation
import Hummingbird
import Synchronization
import SigmaModel
import SigmaProtocol

/// Where the dashboard reads: coordinator snapshots (never the scheduling loop itself).
public protocol DashboardSource: Sendable {
    func snapshot() -> ClusterStatus?
    func jobDetail(_ id: JobID) async -> JobDetail?
    func takeSamples() -> CoordinatorSamples
    /// CURVE handshakes admitted and refused so far; nil without CURVE keys.
    func handshakes() -> (admitted: UInt64, refused: UInt64)?
    /// The deployments (docs/serving.md), as of a moment ago.
    func deployments() -> [DeploymentStatus]
    /// Asks the coordinator's core as a client in this process would (PREDICT, DEPLOYMENTS-GET): `make` gets the
    /// request id; the answer, or an ERROR.
    func call(_ make: (UInt64) -> Message) async -> Message
    /// The caller of a `call` (by its request id) went away: withdraw the request and end its wait.
    func withdraw(request: UInt64)
}

extension DashboardSource {
    public func handshakes() -> (admitted: UInt64, refused: UInt64)? { nil }
    public func deployments() -> [DeploymentStatus] { [] }
    public func call(_ make: (UInt64) -> Message) async -> Message {
        .error(ErrorReply(.unavailable, request: 0, "this server answers no model requests"))
    }
    public func withdraw(request: UInt64) {}
}

/// The coordinator's HTTP side: the web dashboard (`/`, `/job/ID`), its JSON API (`/api/status`,
/// `/api/jobs/ID`, `/api/history`, `/api/events` as server-sent events) and Prometheus `/metrics`. No external assets. Every request
/// passes `access` first (Host name, token); job ids pass a `JobDetailGate` before they reach the source.
public struct Dashboard: Sendable {
    let source: any DashboardSource
    let access: DashboardAccess
    let metrics = SigmaMetrics()
    /// Seconds between server-sent events.
    public var eventInterval: Double = 1
    /// Seconds between the history's points (an hour of them at 1 s, `History.capacity`).
    public var historyInterval: Double = 1
    /// How many different jobs' details may be asked for, per window (the defaults; tests lengthen the window).
    public var detailGate = JobDetailGate()
    /// The charts' past, sampled from `source` while the dashboard runs (`/api/history`).
    public let history: HistoryRecorder

    /// `history`: what the charts start from (a test's known past); empty by default.
    public init(source: any DashboardSource, access: DashboardAccess = DashboardAccess(), history: History = History()) {
        self.source = source
        self.access = access
        self.history = HistoryRecorder(history)
    }

    /// Serves until the surrounding task is cancelled. `onRunning` gets the bound port (useful with port 0).
    public func run(host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void) async throws {
        let router = Router(context: ServeRequestContext.self)
        let source = self.source, metrics = self.metrics, interval = eventInterval, history = self.history, every = historyInterval
        let recorder = Task {
            while !Task.isCancelled {
                if let s = source.snapshot() { history.record(s, at: Date().timeIntervalSince1970) }
                try? await Task.sleep(nanoseconds: UInt64(every * 1e9))
            }
        }
        defer { recorder.cancel() }
        let gate = Mutex(detailGate)
        router.add(middleware: AccessMiddleware(access: access))
        router.get("/") { _, _ in
            // The first frame and the charts' past are in the page itself (it shows them without waiting for a
            // request); events update it.
            let embed = { (text: String) in text.replacingOccurrences(of: "</", with: "<\\/") }
            let initial = source.snapshot().map { embed(jsonText($0.jsonObject)) } ?? "null"
            return Dashboard.html(DashboardPage.overview.replacingOccurrences(of: "__INITIAL__", with: initial)
                .replacingOccurrences(of: "__HISTORY__", with: embed(jsonText(history.read { $0.jsonObject }))))
        }
        router.get("/job/:id") { _, ctx in
            guard JobDetailGate.parse(ctx.parameters.get("id") ?? "") != nil else { throw HTTPError(.badRequest, message: "job id must be a number") }
            return Dashboard.html(DashboardPage.job)
        }
        router.get("/api/status") { _, _ in
            guard let s = source.snapshot() else { throw HTTPError(.serviceUnavailable, message: "coordinator starting") }
            var o = s.jsonObject
            o["deployments"] = source.deployments().map(\.jsonObject)
            return Dashboard.json(jsonText(o))
        }
        router.get("/api/jobs/:id") { _, ctx in
            let newest = source.snapshot()?.jobs.map(\.id).max()
            switch gate.withLock({ $0.admit(ctx.parameters.get("id") ?? "", newest: newest, now: DispatchTime.now().uptimeNanoseconds) }) {
            case .refuse(let status, let message):
                return Dashboard.text(status, message + "\n")
            case .ask(let id):
                guard let d = await source.jobDetail(id) else { throw HTTPError(.notFound, message: "no job \(id) on this coordinator") }
                var o = d.jsonObject(attempts: true)
                o["curve"] = history.read { $0.curveJSON(id) }
                o["log"] = d.logs.suffix(200).map { ["at_s": Double($0.at) / 1e9, "level": "\($0.level)", "text": $0.text] as [String: Any] }
                return Dashboard.json(jsonText(o))
            }
        }
        router.get("/api/events") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                while !Task.isCancelled {
                    if let s = source.snapshot() {
                        // (the status, and the history's newest point for the charts to append)
                        var o = s.jsonObject
                        o["history_point"] = history.read { $0.ordered.last?.jsonObject }
                        o["deployments"] = source.deployments().map(\.jsonObject)
                        try await writer.write(ByteBuffer(string: "data: \(jsonText(o))\n\n"))
                    }
                    try await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                }
                try await writer.finish(nil)
            })
        }
        router.get("/api/history") { _, _ in
            Dashboard.json(jsonText(history.read { $0.jsonObject }))
        }
        let calls = OpenRequests(source: source)
        ServeRoutes.add(to: router, source: source, calls: calls)
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers,
                            body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.scrape(source.snapshot(), samples: source.takeSamples(), handshakes: source.handshakes(), deployments: source.deployments()))))
        }
        let app = Application(router: router, server: .http1(configuration: .init(additionalChannelHandlers: [HangUpHandler(calls)])),
                              configuration: .init(address: .hostname(host, port: port), serverName: "sigma"),
                              onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) })
        try await app.run()
    }

    static func html(_ page: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
    }

    static func text(_ status: Int, _ text: String, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .init(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(_ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

/// The dashboard's `History`, shared by its sampling task and its routes.
public final class HistoryRecorder: Sendable {
    private let state: Mutex<History>
    init(_ history: History) { state = Mutex(history) }
    public func record(_ s: ClusterStatus, at t: Double) { state.withLock { $0.record(s, at: t) } }
    public func read<T>(_ body: (History) -> T) -> T { state.withLock { body($0) } }
}

/// Applies `DashboardAccess` to every request, before any route.
struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let access: DashboardAccess

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let cookies = request.headers[values: .cookie]
        switch access.check(host: request.head.authority, path: request.uri.path, query: request.uri.query,
                            authorization: request.headers[.authorization], cookie: cookies.isEmpty ? nil : cookies.joined(separator: "; ")) {
        case .allow:
            return try await next(request, context)
        case .setCookie(let location):
            var headers = HTTPFields()
            headers[.location] = location
            headers[.setCookie] = access.cookie()
            headers[.cacheControl] = "no-store"
            return Response(status: .seeOther, headers: headers)
        case .refuse(let status, let message):
            var headers = HTTPFields()
            if status == 401 { headers[.wwwAuthenticate] = "Bearer realm=\"sigma\"" }
            return Dashboard.text(status, message, headers: headers)
        }
    }
}

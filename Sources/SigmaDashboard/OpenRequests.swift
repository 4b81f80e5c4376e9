import Hummingbird
import NIOCore
import SigmaProtocol
import Synchronization

/// The dashboard's request context: Hummingbird's basic one plus the connection the request came on, so a model
/// request can be withdrawn when its caller hangs up (`OpenRequests`).
public struct ServeRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Model requests waiting for their answers, per HTTP connection. A connection that closes first — a client that
/// timed out, gave up or went elsewhere — withdraws them (WITHDRAW), so the coordinator does not spend batch rows on
/// answers no one reads: under overload, clients that time out and retry would otherwise fill the queue with work
/// for callers already gone. One close callback per connection, registered at its first model request.
final class OpenRequests: Sendable {
    private let open = Mutex<[ObjectIdentifier: Set<UInt64>]>([:])
    let source: any DashboardSource

    init(source: any DashboardSource) { self.source = source }

    /// Asks the core for `make(id)` as the request of `connection`; withdrawn if the connection closes first.
    func call(on connection: any Channel, _ make: (UInt64) -> Message) async -> Message {
        let key = ObjectIdentifier(connection)
        var id: UInt64? = nil
        let answer = await source.call { request in
            id = request
            let first = open.withLock { o -> Bool in
                defer { o[key, default: []].insert(request) }
                return o[key] == nil
            }
            if first {
                // (a connection already closed runs this at once, before the request is queued: that one is answered
                // to no one, as before; its input's end, seen first, is what withdraws requests)
                connection.closeFuture.whenComplete { [self] _ in
                    for r in open.withLock({ $0.removeValue(forKey: key) }) ?? [] { source.withdraw(request: r) }
                }
            }
            return make(request)
        }
        // (the entry stays while the connection is open: its close callback is registered once)
        if let id { open.withLock { o in _ = o[key]?.remove(id) } }
        return answer
    }

    /// The client's side of `connection` ended (it closed, or shut down its sending side): its requests waiting for
    /// answers are withdrawn. (NIOAsyncChannel lets the input end alone, keeping the channel open for an answer, so
    /// the close callback would run only once the answers were written.)
    func hungUp(_ connection: any Channel) {
        let ids = open.withLock { o -> Set<UInt64> in
            defer { o[ObjectIdentifier(connection)]?.removeAll() }
            return o[ObjectIdentifier(connection)] ?? []
        }
        for r in ids.sorted() { source.withdraw(request: r) }
    }
}

/// Tells `OpenRequests` when a connection's input ends — the event a client's hang-up arrives as.
final class HangUpHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let calls: OpenRequests

    init(_ calls: OpenRequests) { self.calls = calls }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent { calls.hungUp(context.channel) }
        context.fireUserInboundEventTriggered(event)
    }
}

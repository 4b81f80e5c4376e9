import Foundation
import Glibc
import SigmaDashboard
import SigmaModel
import SigmaProtocol
import Synchronization
import Testing

/// A coordinator stand-in for the HTTP API: a model request whose first input value is 7 is answered at once (42),
/// any other never — until it is withdrawn. It records every request id and every withdrawal.
final class HangingSource: DashboardSource {
    let state = Mutex<(calls: [UInt64], withdrawn: [UInt64], waiting: [UInt64: CheckedContinuation<Message, Never>])>(([], [], [:]))

    func snapshot() -> ClusterStatus? { nil }
    func jobDetail(_ id: JobID) async -> JobDetail? { nil }
    func takeSamples() -> CoordinatorSamples { CoordinatorSamples() }

    func call(_ make: (UInt64) -> Message) async -> Message {
        let id = state.withLock { s in UInt64(s.calls.count + 1) }
        let m = make(id)
        state.withLock { $0.calls.append(id) }
        if case .predict(let p) = m, case .rows(_, let v) = p.input, v.first == 7 {
            return .prediction(Prediction(request: id, rows: 1, width: 1, values: [42]))
        }
        return await withCheckedContinuation { k in state.withLock { $0.waiting[id] = k } }
    }

    func withdraw(request: UInt64) {
        let k = state.withLock { s in
            s.withdrawn.append(request)
            return s.waiting.removeValue(forKey: request)
        }
        k?.resume(returning: .error(ErrorReply(.unavailable, request: request, "withdrawn")))
    }

    var calls: [UInt64] { state.withLock { $0.calls } }
    var withdrawn: [UInt64] { state.withLock { $0.withdrawn } }
}

/// A plain TCP connection to 127.0.0.1 (blocking calls: run on threads of their own, not the cooperative pool).
struct RawConnection {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`; reads wait at most `timeout` seconds.
    init(port: Int, timeout: Int = 60) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = UInt16(port).bigEndian
        let ok = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard ok else { close(fd); throw SigmaTestError("cannot connect to 127.0.0.1:\(port)") }
    }

    /// Sends a POST of `body` to `path`, keeping the connection open.
    func post(_ path: String, _ body: String) {
        let request = "POST \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        _ = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, 0) }
    }

    /// Reads one response (head and a Content-Length body): its status code and body.
    func response() async throws -> (status: Int, body: String) {
        let fd = fd
        return try await withCheckedThrowingContinuation { k in
            Thread {
                var data = [UInt8]()
                var buf = [UInt8](repeating: 0, count: 4096)
                while true {
                    let text = String(decoding: data, as: UTF8.self)
                    if let end = text.range(of: "\r\n\r\n") {
                        let head = text[..<end.lowerBound].lowercased()
                        let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                        let body = text[end.upperBound...]
                        if body.utf8.count >= length {
                            let code = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
                            return k.resume(returning: (code, String(body)))
                        }
                    }
                    let n = recv(fd, &buf, buf.count, 0)
                    if n <= 0 { return k.resume(throwing: SigmaTestError("connection ended before a whole response: '\(text)'")) }
                    data += buf[0..<n]
                }
            }.start()
        }
    }

    func hangUp() { close(fd) }
}

/// A caller that hangs up before its answer withdraws its model request (docs/serving.md, "Callers that hang up"):
/// the HTTP API notices the connection close and tells the coordinator, which then spends no batch rows on it.
@Suite(.serialized, .timeLimit(.minutes(2))) struct WithdrawTests {
    func serving(_ body: (Int, HangingSource) async throws -> Void) async throws {
        let source = HangingSource()
        let port = Mutex<Int?>(nil)
        let server = Task { try await Dashboard(source: source, access: DashboardAccess()).run(host: "127.0.0.1", port: 0) { p in port.withLock { $0 = p } } }
        defer { server.cancel() }
        for _ in 0..<200 where port.withLock({ $0 }) == nil { try await Task.sleep(nanoseconds: 20_000_000) }
        try await body(try #require(port.withLock { $0 }, "the dashboard did not start"), source)
    }

    /// Waits up to 30 s for `done` (a loaded machine's cooperative threads can be held by other tests for seconds).
    func eventually(_ done: () -> Bool) async throws {
        for _ in 0..<1500 where !done() { try await Task.sleep(nanoseconds: 20_000_000) }
    }

    @Test func aCallerThatHangsUpWithdrawsItsRequestAndOnlyThatOne() async throws {
        try await serving { port, source in
            // One connection, kept alive: a request answered at once, then one that waits; the caller hangs up.
            let c = try RawConnection(port: port)
            c.post("/predict/m", "{\"inputs\": [[7, 1]]}")
            let first = try await c.response()
            #expect(first.status == 200 && first.body.contains("42"), "\(first)")
            c.post("/predict/m", "{\"inputs\": [[1, 2]]}")
            try await eventually { source.calls.count == 2 }
            #expect(source.calls == [1, 2] && source.withdrawn.isEmpty)
            c.hangUp()
            try await eventually { !source.withdrawn.isEmpty }
            #expect(source.withdrawn == [2], "the waiting request is withdrawn, the answered one is not")

            // Other routes that ask a model (OpenAI embeddings, Open Inference Protocol), each on its own connection.
            let a = try RawConnection(port: port), b = try RawConnection(port: port)
            a.post("/v1/embeddings", "{\"model\": \"m\", \"input\": [\"hello\"]}")
            b.post("/v2/models/m/infer", "{\"inputs\": [{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [1, 2], \"data\": [1, 2]}]}")
            try await eventually { source.calls.count == 4 }
            a.hangUp()
            try await eventually { source.withdrawn.count == 2 }
            #expect(source.withdrawn == [2, 3], "only the connection that closed")
            b.hangUp()
            try await eventually { source.withdrawn.count == 3 }
            #expect(source.withdrawn == [2, 3, 4])
        }
    }
}

import Foundation
@testable import SigmaDashboard
import SigmaProtocol
import Synchronization
import Testing

/// The HTTP API's reading of bodies and writing of answers (docs/serving.md, "Requests over HTTP"): whatever a
/// caller sends gets a clear 4xx, never a crash or a malformed batch; every answer is valid JSON.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ServeRoutesTests {
    static func parsed(_ text: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) }

    /// JSON has no NaN or infinity: a model output that overflowed is written as null, and the answer stays JSON.
    @Test func nonFiniteOutputsStillMakeValidJSON() throws {
        let text = ServeRoutes.floats([Float.nan, .infinity, -.infinity, 1, 0.1][...])
        let list = try #require(Self.parsed(text) as? [Any], "not JSON: \(text)")
        #expect(list.count == 5 && list[0] is NSNull && list[2] is NSNull && (list[4] as? NSNumber)?.floatValue == 0.1)
    }

    /// A number finite as a double but not as a float32 (1e39) is refused, not turned into infinity.
    @Test func aNumberPastFloat32IsRefused() throws {
        let list = try #require(Self.parsed("[1e39, -1e39]") as? [Any])
        #expect(throws: ServeRoutes.APIError.self) { try ServeRoutes.numbers(list, field: "data") }
        #expect(try ServeRoutes.numbers([1, [2, 3]] as [Any], field: "data") == [1, 2, 3], "nested lists flatten in row-major order")
    }

    /// `/predict`'s rows must be flat lists of one length: `[[[1, 2], 3]]` is not two features of one row.
    @Test func nestedRowsAreRefused() throws {
        for body in ["[[[1, 2], 3]]", "[[1, 2], [3, [4]]]", "[[1, 2], 3]"] {
            let value = try #require(Self.parsed(body))
            #expect(throws: ServeRoutes.APIError.self, "\(body)") { try ServeRoutes.input(value, field: "inputs") }
        }
        #expect(try ServeRoutes.input(try #require(Self.parsed("[[1, 2], [3, 4]]")), field: "inputs") == .rows(width: 2, values: [1, 2, 3, 4]))
    }

    /// A shape whose product overflows (or is 0) is 422 and the server answers on: it trapped, killing the coordinator.
    @Test func aHugeShapeIs422NotACrash() async throws {
        let source = HangingSource()
        let port = Mutex<Int?>(nil)
        let server = Task { try await Dashboard(source: source, access: DashboardAccess()).run(host: "127.0.0.1", port: 0) { p in port.withLock { $0 = p } } }
        defer { server.cancel() }
        for _ in 0..<200 where port.withLock({ $0 }) == nil { try await Task.sleep(nanoseconds: 20_000_000) }
        let p = try #require(port.withLock { $0 }, "the dashboard did not start")
        for shape in ["[4611686018427387904, 2]", "[0, 2]", "[-1, 2]"] {
            let c = try RawConnection(port: p)
            defer { c.hangUp() }
            c.post("/v2/models/any/infer", "{\"inputs\": [{\"name\": \"x\", \"shape\": \(shape), \"datatype\": \"FP32\", \"data\": [1]}]}")
            let r = try await c.response()
            #expect(r.status == 422 && r.body.contains("inputs[0]"), "\(shape): \(r)")
        }
        let again = try RawConnection(port: p)
        defer { again.hangUp() }
        again.post("/predict/m", "{\"inputs\": [[7, 1]]}")
        #expect(try await again.response().status == 200, "the server answers on")
        #expect(source.calls.count == 1, "no malformed request reached the coordinator")
    }
}

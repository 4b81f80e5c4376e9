import Foundation
import Hummingbird
import SigmaModel
import SigmaProtocol

/// The HTTP API of deployments (docs/serving.md), on the dashboard's listener and behind its access rules:
/// OpenAI `POST /v1/embeddings`, TEI `POST /embed`, the Open Inference Protocol v2 (`POST /v2/models/NAME/infer`,
/// health, readiness and metadata) and `POST /predict/NAME`. Each request becomes one PREDICT to the coordinator's
/// core, batched with the others; errors keep their status (400, 404, 413, 422, 429 with Retry-After, 503, 504).
enum ServeRoutes {
    /// Largest request body read, bytes.
    static let maxBody = 64 << 20

    static func add(to router: Router<BasicRequestContext>, source: any DashboardSource) {
        router.post("/v1/embeddings") { request, _ in
            await answer {
                let body = try await json(request)
                guard let name = body["model"] as? String else { throw APIError(422, "model: missing; the deployment's name (sigma deployments lists them)") }
                let texts = try textList(body["input"], field: "input")
                let p = try await predict(source, name, .texts(texts))
                let data = rows(p).enumerated().map { i, v in ["object": "embedding", "embedding": v, "index": i] as [String: Any] }
                return ["object": "list", "data": data, "model": name, "usage": ["prompt_tokens": 0, "total_tokens": 0]]
            }
        }
        router.post("/embed") { request, _ in
            await answer(bare: true) {
                let body = try await json(request)
                let texts = try textList(body["inputs"], field: "inputs")
                let embeds = source.deployments().filter { $0.model == "embed" }
                guard let name = (body["model"] as? String) ?? (embeds.count == 1 ? embeds[0].name : nil) else {
                    throw APIError(422, "model: missing; \(embeds.count) embedding deployments (\(embeds.map(\.name).joined(separator: ", "))): name one")
                }
                return rows(try await predict(source, name, .texts(texts)))
            }
        }
        router.post("/predict/:name") { request, ctx in
            await answer {
                let name = ctx.parameters.get("name") ?? ""
                let body = try await json(request)
                guard let inputs = body["inputs"] else { throw APIError(422, "inputs: missing; rows of numbers ([[...], ...]) or texts") }
                let p = try await predict(source, name, try input(inputs, field: "inputs"))
                return ["model": name, "outputs": rows(p)]
            }
        }
        router.get("/v2/health/live") { _, _ in Dashboard.json("{\"live\":true}") }
        router.get("/v2/health/ready") { _, _ in Dashboard.json("{\"ready\":true}") }
        router.get("/v2/models/:name") { _, ctx in
            await answer {
                let d = try deployment(source, ctx.parameters.get("name") ?? "")
                let input: [String: Any] = d.model == "embed" ? ["name": "input", "datatype": "BYTES", "shape": [-1]]
                                                              : ["name": "input", "datatype": "FP32", "shape": [-1, Int(d.inputs)]]
                return ["name": d.name, "versions": ["1"], "platform": "sigma-\(d.model)", "inputs": [input],
                        "outputs": [["name": "output", "datatype": "FP32", "shape": [-1, Int(d.width)]] as [String: Any]]]
            }
        }
        router.get("/v2/models/:name/ready") { _, ctx in
            await answer {
                let d = try deployment(source, ctx.parameters.get("name") ?? "")
                guard d.ready > 0 else {
                    let loading = d.replicas.filter { $0.state == "loading" }.count
                    throw APIError(503, "deployment '\(d.name)' is not ready: " + (loading > 0 ? "no replica loaded yet (\(loading) loading)" : "no worker to load it on"))
                }
                return ["name": d.name, "ready": true]
            }
        }
        router.post("/v2/models/:name/infer") { request, ctx in
            await answer {
                let name = ctx.parameters.get("name") ?? ""
                let body = try await json(request)
                guard let inputs = body["inputs"] as? [Any], inputs.count == 1, let first = inputs[0] as? [String: Any] else {
                    throw APIError(422, "inputs: expected one input tensor, {\"name\", \"shape\", \"datatype\", \"data\"}")
                }
                let x: ServeInput
                switch first["datatype"] as? String {
                case "BYTES": x = .texts(try textList(first["data"], field: "inputs[0].data"))
                case "FP32", "FP64":
                    guard let shape = first["shape"] as? [Any], shape.count == 2, let r = (shape[0] as? NSNumber)?.intValue,
                          let c = (shape[1] as? NSNumber)?.intValue, r >= 0, c >= 1 else {
                        throw APIError(422, "inputs[0].shape: expected [rows, features]")
                    }
                    let flat = try numbers(first["data"], field: "inputs[0].data")
                    guard flat.count == r * c else { throw APIError(422, "inputs[0].data: \(flat.count) numbers for shape [\(r), \(c)]") }
                    x = .rows(width: c, values: flat)
                default:
                    throw APIError(422, "inputs[0].datatype: expected FP32 (rows of features) or BYTES (texts)")
                }
                let p = try await predict(source, name, x)
                var o: [String: Any] = ["model_name": name, "model_version": "1",
                                        "outputs": [["name": "output", "shape": [Int(p.rows), Int(p.width)], "datatype": "FP32",
                                                     "data": p.values.map(Double.init)] as [String: Any]]]
                if let id = body["id"] as? String { o["id"] = id }
                return o
            }
        }
    }

    struct APIError: Error {
        let status: Int
        let message: String
        var retryAfter = false
        init(_ status: Int, _ message: String) {
            self.status = status
            self.message = message
        }
    }

    /// Runs `body` and writes its JSON, or the error as `{"error": …}` with its status.
    static func answer(bare: Bool = false, _ body: () async throws -> Any) async -> Response {
        do {
            return Dashboard.json(jsonText(try await body()))
        } catch let e as APIError {
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            if e.status == 429 { headers[.retryAfter] = "1" }
            return Response(status: .init(code: e.status), headers: headers,
                            body: ResponseBody(byteBuffer: ByteBuffer(string: jsonText(["error": e.message, "error_type": errorType(e.status)]))))
        } catch {
            return Response(status: .internalServerError, body: ResponseBody(byteBuffer: ByteBuffer(string: jsonText(["error": "\(error)"]))))
        }
    }

    static func errorType(_ status: Int) -> String {
        switch status {
        case 429: "Overloaded"
        case 503: "Unhealthy"
        case 504: "Timeout"
        case 400, 413, 422: "Validation"
        case 404: "NotFound"
        default: "Backend"
        }
    }

    static func json(_ request: Request) async throws -> [String: Any] {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: maxBody) } catch { throw APIError(413, "body: larger than \(maxBody >> 20) MiB") }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) else {
            throw APIError(400, "body: not valid JSON")
        }
        guard let map = object as? [String: Any] else { throw APIError(422, "body: expected a JSON object") }
        return map
    }

    static func textList(_ value: Any?, field: String) throws -> [String] {
        if let s = value as? String { return [s] }
        guard let list = value as? [Any], !list.isEmpty else { throw APIError(422, "\(field): expected a string or a non-empty list of strings") }
        return try list.enumerated().map { i, v in
            guard let s = v as? String else { throw APIError(422, "\(field)[\(i)]: expected a string") }
            return s
        }
    }

    static func numbers(_ value: Any?, field: String) throws -> [Float] {
        guard let list = value as? [Any] else { throw APIError(422, "\(field): expected a list of numbers") }
        var out: [Float] = []
        out.reserveCapacity(list.count)
        for (i, v) in list.enumerated() {
            if let row = v as? [Any] {
                out += try numbers(row, field: "\(field)[\(i)]")
                continue
            }
            // (true and false are NSNumbers too, of objCType "c")
            guard let n = v as? NSNumber, String(cString: n.objCType) != "c", n.doubleValue.isFinite else { throw APIError(422, "\(field)[\(i)]: expected a finite number") }
            out.append(n.floatValue)
        }
        return out
    }

    /// `{"inputs": …}` of `/predict`: texts (a string, a list of strings) or rows of numbers (a list of lists).
    static func input(_ value: Any, field: String) throws -> ServeInput {
        if value is String || (value as? [Any])?.first is String { return .texts(try textList(value, field: field)) }
        guard let rows = value as? [Any], !rows.isEmpty else { throw APIError(422, "\(field): expected rows of numbers or texts") }
        let first = (rows[0] as? [Any])?.count ?? 0
        guard first > 0 else { throw APIError(422, "\(field)[0]: expected a non-empty list of numbers") }
        for (i, r) in rows.enumerated() where (r as? [Any])?.count != first {
            throw APIError(422, "\(field)[\(i)]: expected \(first) numbers, as row 0 has")
        }
        return .rows(width: first, values: try numbers(rows, field: field))
    }

    static func deployment(_ source: any DashboardSource, _ name: String) throws -> DeploymentStatus {
        guard let d = source.deployments().first(where: { $0.name == name }) else {
            throw APIError(404, "no deployment '\(name.prefix(100))' on this coordinator (sigma deployments lists them)")
        }
        return d
    }

    static func predict(_ source: any DashboardSource, _ name: String, _ input: ServeInput) async throws -> Prediction {
        let m = await source.call { .predict(PredictRequest(request: $0, name: name, input: input)) }
        switch m {
        case .prediction(let p): return p
        case .error(let e): throw APIError(Int(e.code), e.message)
        default: throw APIError(500, "unexpected answer \(m.type.name)")
        }
    }

    static func rows(_ p: Prediction) -> [[Double]] {
        let w = Int(p.width)
        return (0..<Int(p.rows)).map { r in p.values[(r * w)..<((r + 1) * w)].map(Double.init) }
    }
}

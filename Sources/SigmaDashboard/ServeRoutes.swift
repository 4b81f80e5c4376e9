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

    static func add(to router: Router<ServeRequestContext>, source: any DashboardSource, calls: OpenRequests) {
        router.post("/v1/embeddings") { request, ctx in
            await answer {
                let body = try await json(request)
                guard let name = body["model"] as? String else { throw APIError(422, "model: missing; the deployment's name (sigma deployments lists them)") }
                let texts = try textList(body["input"], field: "input")
                let p = try await predict(calls, ctx, name, .texts(texts))
                let data = (0..<Int(p.rows)).map { i in "{\"object\":\"embedding\",\"index\":\(i),\"embedding\":" + floats(p, row: i) + "}" }
                return RawJSON("{\"object\":\"list\",\"model\":" + quoted(name) + ",\"data\":[" + data.joined(separator: ",")
                               + "],\"usage\":{\"prompt_tokens\":0,\"total_tokens\":0}}")
            }
        }
        router.post("/embed") { request, ctx in
            await answer(bare: true) {
                let body = try await json(request)
                let texts = try textList(body["inputs"], field: "inputs")
                let embeds = try await current(source).filter { $0.model == "embed" && !$0.draining }
                guard let name = (body["model"] as? String) ?? (embeds.count == 1 ? embeds[0].name : nil) else {
                    throw APIError(422, "model: missing; \(embeds.count) embedding deployments (\(embeds.map(\.name).joined(separator: ", "))): name one")
                }
                return RawJSON(matrix(try await predict(calls, ctx, name, .texts(texts))))
            }
        }
        router.post("/predict/:name") { request, ctx in
            await answer {
                let name = ctx.parameters.get("name") ?? ""
                let body = try await json(request)
                guard let inputs = body["inputs"] else { throw APIError(422, "inputs: missing; rows of numbers ([[...], ...]) or texts") }
                let p = try await predict(calls, ctx, name, try input(inputs, field: "inputs"))
                return RawJSON("{\"model\":" + quoted(name) + ",\"outputs\":" + matrix(p)
                               + (p.labels.isEmpty ? "" : ",\"labels\":" + strings(p.labels)) + "}")
            }
        }
        router.get("/v2/health/live") { _, _ in Dashboard.json("{\"live\":true}") }
        router.get("/v2/health/ready") { _, _ in Dashboard.json("{\"ready\":true}") }
        router.get("/v2/models/:name") { _, ctx in
            await answer {
                let d = try await deployment(source, ctx.parameters.get("name") ?? "")
                let input: [String: Any] = ServedModelKind.takesTexts(d.model) ? ["name": "input", "datatype": "BYTES", "shape": [-1]]
                                                              : ["name": "input", "datatype": "FP32", "shape": [-1, Int(d.inputs)]]
                // (a classifier whose weights name its classes also answers each row's class name: output `label`)
                let label: [[String: Any]] = d.labels.isEmpty ? [] : [["name": "label", "datatype": "BYTES", "shape": [-1]]]
                return ["name": d.name, "versions": ["1"], "platform": "sigma-\(d.model)", "inputs": [input],
                        "outputs": [["name": "output", "datatype": "FP32", "shape": [-1, Int(d.width)]] as [String: Any]] + label]
            }
        }
        router.get("/v2/models/:name/ready") { _, ctx in
            await answer {
                let d = try await deployment(source, ctx.parameters.get("name") ?? "")
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
                          let c = (shape[1] as? NSNumber)?.intValue, r >= 1, c >= 1 else {
                        throw APIError(422, "inputs[0].shape: expected [rows, features], each at least 1")
                    }
                    let flat = try numbers(first["data"], field: "inputs[0].data")
                    let (n, overflow) = r.multipliedReportingOverflow(by: c)
                    guard !overflow, flat.count == n else { throw APIError(422, "inputs[0].data: \(flat.count) numbers for shape [\(r), \(c)]") }
                    x = .rows(width: c, values: flat)
                default:
                    throw APIError(422, "inputs[0].datatype: expected FP32 (rows of features) or BYTES (texts)")
                }
                let p = try await predict(calls, ctx, name, x)
                return RawJSON("{\"model_name\":" + quoted(name) + ",\"model_version\":\"1\"" + ((body["id"] as? String).map { ",\"id\":" + quoted($0) } ?? "")
                               + ",\"outputs\":[{\"name\":\"output\",\"datatype\":\"FP32\",\"shape\":[\(p.rows),\(p.width)],\"data\":"
                               + floats(p.values[...]) + "}"
                               + (p.labels.isEmpty ? "" : ",{\"name\":\"label\",\"datatype\":\"BYTES\",\"shape\":[\(p.labels.count)],\"data\":"
                                                          + strings(p.labels) + "}")
                               + "]}")
            }
        }
    }

    /// A JSON text built by hand: outputs are written straight from their floats (JSONSerialization boxes each one).
    struct RawJSON {
        let text: String
        init(_ text: String) { self.text = text }
    }

    /// Floats as a JSON array; each as the shortest decimal of its Float64 value, which parses back to the same
    /// float32 whether read as a double or a float. JSON has no NaN or infinity: such an output (a model that
    /// overflowed) is `null`.
    static func floats(_ v: ArraySlice<Float>) -> String {
        var s = "["
        s.reserveCapacity(v.count * 12 + 2)
        var first = true
        for x in v {
            if !first { s += "," }
            first = false
            s += x.isFinite ? Double(x).description : "null"
        }
        return s + "]"
    }

    /// Strings as a JSON array.
    static func strings(_ xs: [String]) -> String { "[" + xs.map(quoted).joined(separator: ",") + "]" }

    /// A string as a JSON string literal.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    static func floats(_ p: Prediction, row: Int) -> String {
        let w = Int(p.width)
        return floats(p.values[(row * w)..<((row + 1) * w)])
    }

    /// The outputs as rows: `[[...], ...]`.
    static func matrix(_ p: Prediction) -> String {
        "[" + (0..<Int(p.rows)).map { floats(p, row: $0) }.joined(separator: ",") + "]"
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
            let result = try await body()
            return Dashboard.json((result as? RawJSON)?.text ?? jsonText(result))
        } catch {
            let e = error as? APIError ?? APIError(500, "\(error)")
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            if e.status == 429 { headers[.retryAfter] = "1" }
            return Response(status: .init(code: e.status), headers: headers,
                            body: ResponseBody(byteBuffer: ByteBuffer(string: jsonText(["error": e.message, "error_type": errorType(e.status)]))))
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

    /// A list of numbers as float32, nested lists flattened in row-major order unless `nested` is false (then a list
    /// inside is refused). Each must be finite as a float32 (1e39 is not).
    static func numbers(_ value: Any?, field: String, nested: Bool = true) throws -> [Float] {
        guard let list = value as? [Any] else { throw APIError(422, "\(field): expected a list of numbers") }
        var out: [Float] = []
        out.reserveCapacity(list.count)
        for (i, v) in list.enumerated() {
            if let row = v as? [Any], nested {
                out += try numbers(row, field: "\(field)[\(i)]")
                continue
            }
            // (true and false are NSNumbers too, of objCType "c")
            guard let n = v as? NSNumber, String(cString: n.objCType) != "c", n.floatValue.isFinite else {
                throw APIError(422, "\(field)[\(i)]: expected a number finite as float32 (within ±3.4e38)")
            }
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
        var values: [Float] = []
        values.reserveCapacity(rows.count * first)
        for (i, r) in rows.enumerated() {
            guard let row = r as? [Any], row.count == first else { throw APIError(422, "\(field)[\(i)]: expected \(first) numbers, as row 0 has") }
            values += try numbers(row, field: "\(field)[\(i)]", nested: false)
        }
        return .rows(width: first, values: values)
    }

    /// The deployments as the core has them now (readiness must not lag the published figures).
    static func current(_ source: any DashboardSource) async throws -> [DeploymentStatus] {
        let m = await source.call { .deploymentsGet(request: $0) }
        switch m {
        case .deployments(_, let list): return list
        case .error(let e): throw APIError(Int(e.code), e.message)
        default: throw APIError(500, "unexpected answer \(m.type.name)")
        }
    }

    /// Deployment `name`, as the core has it now; 404 when there is none or it is being undeployed (as PREDICT).
    static func deployment(_ source: any DashboardSource, _ name: String) async throws -> DeploymentStatus {
        guard let d = try await current(source).first(where: { $0.name == name && !$0.draining }) else {
            throw APIError(404, "no deployment '\(name.prefix(100))' on this coordinator (sigma deployments lists them)")
        }
        return d
    }

    /// One PREDICT for the request on `ctx`'s connection (withdrawn if that connection closes first).
    static func predict(_ calls: OpenRequests, _ ctx: ServeRequestContext, _ name: String, _ input: ServeInput) async throws -> Prediction {
        let m = await calls.call(on: ctx.channel) { .predict(PredictRequest(request: $0, name: name, input: input)) }
        switch m {
        case .prediction(let p): return p
        case .error(let e): throw APIError(Int(e.code), e.message)
        default: throw APIError(500, "unexpected answer \(m.type.name)")
        }
    }
}

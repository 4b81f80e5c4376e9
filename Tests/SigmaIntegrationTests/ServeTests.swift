import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import SigmaClient
import SigmaJobs
import SigmaProtocol
import Testing

/// Deployments over real processes (docs/serving.md): answers bitwise those of the batch jobs, whatever the batching;
/// no request lost or answered twice when a worker dies; 429s past the queue limit with memory bounded; 4xx naming
/// what is wrong.
@Suite(.serialized, .timeLimit(.minutes(10))) struct ServeTests {
    static let minilm = repoRoot + "/models/all-MiniLM-L6-v2"

    /// A float32 .npy file's values.
    static func floats(_ path: String) throws -> (rows: Int, width: Int, values: [Float]) {
        let f = try NpyFile(path: path)
        var v = [Double](repeating: 0, count: f.header.rows * f.header.columns)
        try v.withUnsafeMutableBufferPointer { try f.readRows(start: 0, count: f.header.rows, into: $0) }
        return (f.header.rows, f.header.columns, v.map(Float.init))
    }

    static func http(_ method: String, _ url: String, _ body: String? = nil) async throws -> (status: Int, body: String, headers: [String: String]) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let h = response as? HTTPURLResponse
        var headers: [String: String] = [:]
        for (k, v) in h?.allHeaderFields ?? [:] { headers["\(k)".lowercased()] = "\(v)" }
        return (h?.statusCode ?? 0, String(decoding: data, as: UTF8.self), headers)
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// Waits until deployment `name` has `ready` replicas loaded.
    static func waitReady(_ cluster: ProcessCluster, _ name: String, ready: Int) async throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let (s, out, _) = try await sigma(["deployments", "--json", "--coordinator", cluster.endpoint])
            if s == 0, let list = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]],
               let d = list.first(where: { $0["name"] as? String == name }), (d["replicas_ready"] as? Int ?? 0) >= ready {
                return
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        throw SigmaTestError("deployment \(name) did not get \(ready) ready replicas within 60 s")
    }

    static func deployment(_ cluster: ProcessCluster, _ name: String) async throws -> [String: Any] {
        let (_, out, _) = try await sigma(["deployments", "--json", "--coordinator", cluster.endpoint])
        let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]) ?? []
        return try #require(list.first { $0["name"] as? String == name }, "\(out)")
    }

    /// Deploys the digits MLP (the torch-mlp fixture) as `name` with these further spec lines, and waits until it has
    /// `ready` replicas.
    static func deployDigits(_ name: String, _ lines: String, ready: Int, in dir: Scratch, on cluster: ProcessCluster) async throws {
        let weights = repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp/model.safetensors"
        let spec = try dir.write(name + ".yaml", """
            kind: serve
            name: \(name)
            model: {mlp: [64, 64, 10], activation: relu, weights: \(weights)}

            """ + lines)
        #expect(try await sigma(["deploy", spec, "--coordinator", cluster.endpoint]).0 == 0)
        try await waitReady(cluster, name, ready: ready)
    }

    /// A coordinator and 2 workers, up: the cluster, its HTTP API's base URL, and `--coordinator ENDPOINT`.
    static func started() async throws -> (ProcessCluster, String, [String]) {
        let cluster = try await ProcessCluster(workers: 2)
        do {
            let dash = try await cluster.coordinator.waitForLine("dashboard ")
            let base = String(dash.dropFirst("dashboard ".count)).trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            try await cluster.waitForWorkers(2)
            return (cluster, base, ["--coordinator", cluster.endpoint])
        } catch {
            cluster.stop()
            throw error
        }
    }

    @Test func theDigitsMLPAnswersAsItsInferJobWhateverTheBatchingAndBadRequestsGet4xx() async throws {
        let dir = try Scratch("serve-mlp")
        defer { dir.remove() }
        let (cluster, base, ep) = try await Self.started()
        defer { cluster.stop() }
        // Not ready yet: 503 naming what is missing (the model is not deployed at all: 404 first).
        #expect(try await Self.http("GET", base + "/v2/models/digits/ready").status == 404)
        let (ds, dout, de) = try await sigma(["deploy", repoRoot + "/examples/serve-digits.yaml"] + ep)
        #expect(ds == 0 && dout.contains("digits"), "\(de)")
        try await Self.waitReady(cluster, "digits", ready: 1)
        #expect(try await Self.http("GET", base + "/v2/models/digits/ready").status == 200)
        let meta = Self.json(try await Self.http("GET", base + "/v2/models/digits").body)
        #expect((meta["outputs"] as? [[String: Any]])?.first?["shape"] as? [Int] == [-1, 10], "\(meta)")
        #expect((meta["outputs"] as? [[String: Any]])?.count == 1, "weights that name no classes: no label output; \(meta)")

        // The batch job's logits, the reference.
        let (js, _, je) = try await sigma(["submit", repoRoot + "/examples/infer-digits.yaml", "--follow", "-o", dir.path + "/inf"] + ep)
        try #require(js == 0, "\(je)")
        let want = try Self.floats(dir.path + "/inf/predictions.npy")
        let x = try Self.floats(repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp/inputs.npy")
        #expect(want.rows == 360 && want.width == 10 && x.width == 64)

        // Over HTTP (Open Inference Protocol v2), in requests of 1, 7, 37 and all 360 rows, several at once.
        let sizes = [1, 7, 37, 360, 3, 1, 64, 5]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, n) in sizes.enumerated() {
                let start = (i * 41) % (360 - n + 1)
                group.addTask {
                    let data = x.values[(start * 64)..<((start + n) * 64)].map { String(describing: $0) }.joined(separator: ",")
                    let body = "{\"id\": \"r\(i)\", \"inputs\": [{\"name\": \"x\", \"shape\": [\(n), 64], \"datatype\": \"FP32\", \"data\": [\(data)]}]}"
                    let r = try await Self.http("POST", base + "/v2/models/digits/infer", body)
                    let o = Self.json(r.body)
                    let out = (o["outputs"] as? [[String: Any]])?.first
                    let got = (out?["data"] as? [NSNumber])?.map(\.floatValue) ?? []
                    #expect(r.status == 200 && o["id"] as? String == "r\(i)" && out?["shape"] as? [Int] == [n, 10], "\(r.status) \(r.body.prefix(300))")
                    #expect(got.map(\.bitPattern) == want.values[(start * 10)..<((start + n) * 10)].map(\.bitPattern), "rows \(start)..<\(start + n) over HTTP")
                }
            }
            try await group.waitForAll()
        }
        // Over ZeroMQ: sigma predict with an .npy input, written as .npy.
        try NpyFile.write(path: dir.path + "/five.npy", float32: Array(x.values[(100 * 64)..<(105 * 64)]), shape: [5, 64])
        let (ps, _, pe) = try await sigma(["predict", "digits", "--input", dir.path + "/five.npy", "-o", dir.path + "/five-out.npy"] + ep)
        #expect(ps == 0, "\(pe)")
        #expect(try Self.floats(dir.path + "/five-out.npy").values.map(\.bitPattern) == want.values[1000..<1050].map(\.bitPattern))

        // Bad requests: 4xx naming the problem; the deployment keeps answering.
        let infer = base + "/v2/models/digits/infer"
        let bad: [(String, String, Int, String)] = [
            (infer, "{not json", 400, "not valid JSON"),
            (infer, "{\"inputs\": [{\"name\": \"x\", \"shape\": [1, 3], \"datatype\": \"FP32\", \"data\": [1, 2, 3]}]}", 422, "64 features"),
            (infer, "{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 64], \"datatype\": \"FP32\", \"data\": [1, 2]}]}", 422, "shape [2, 64]"),
            (infer, "{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"BYTES\", \"data\": [\"a text\"]}]}", 422, "rows of 64 features"),
            (infer, "{\"inputs\": [{\"name\": \"x\", \"shape\": [1, 1], \"datatype\": \"FP32\", \"data\": [\"x\"]}]}", 422, "data[0]"),
            (infer, "{\"outputs\": []}", 422, "inputs"),
            (base + "/v2/models/nope/infer", "{\"inputs\": [{\"name\": \"x\", \"shape\": [1, 1], \"datatype\": \"FP32\", \"data\": [1]}]}", 404, "no deployment 'nope'"),
            (base + "/v1/embeddings", "{\"input\": \"hello\"}", 422, "model"),
            (base + "/predict/digits", "{\"inputs\": [[1, 2], [3]]}", 422, "inputs[1]"),
        ]
        for (url, body, status, needle) in bad {
            let r = try await Self.http("POST", url, body)
            #expect(r.status == status && r.body.contains(needle), "\(body.prefix(60)) → \(r.status) \(r.body)")
        }
        let ok = try await Self.http("POST", base + "/predict/digits", "{\"inputs\": [[" + x.values[0..<64].map { "\($0)" }.joined(separator: ",") + "]]}")
        #expect(ok.status == 200 && ((Self.json(ok.body)["outputs"] as? [[NSNumber]])?.first?.map(\.floatValue).map(\.bitPattern) ?? []) == want.values[0..<10].map(\.bitPattern), "\(ok.body.prefix(200))")

        // Watching: /metrics, sigma top, sigma deployments, the dashboard's JSON.
        let metrics = try await Self.http("GET", base + "/metrics").body
        for name in ["sigma_serve_requests", "sigma_serve_latency_p99_seconds", "sigma_serve_queue_p50_seconds", "sigma_serve_compute_p50_seconds",
                     "sigma_serve_batch_size_mean", "sigma_serve_rejected_429"] {
            #expect(metrics.contains("\(name){deployment=\"digits\"}"), "\(name) missing from /metrics")
        }
        let (_, top, _) = try await sigma(["top", "--once"] + ep)
        #expect(top.contains("serve digits 1/1 ready") && top.contains("p50 "), "\(top)")
        let (_, table, _) = try await sigma(["deployments"] + ep)
        #expect(table.contains("replica on w") && table.contains("ready, "), "\(table)")
        // (the dashboard's figures are published twice a second)
        var listed: [String: Any]? = nil
        for _ in 0..<20 {
            listed = (Self.json(try await Self.http("GET", base + "/api/status").body)["deployments"] as? [[String: Any]])?.first
            if (listed?["requests"] as? Int ?? 0) >= sizes.count + 2 { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        #expect(listed?["name"] as? String == "digits" && (listed?["requests"] as? Int ?? 0) >= sizes.count + 2, "\(String(describing: listed))")

        // Undeploy: gone, and requests say so.
        let (us, uout, _) = try await sigma(["undeploy", "digits"] + ep)
        #expect(us == 0 && !uout.contains("digits "), "\(uout)")
        let gone = try await Self.http("POST", base + "/predict/digits", "{\"inputs\": [[1]]}")
        #expect(gone.status == 404, "\(gone.body)")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: ServeTests.minilm + "/model.safetensors"), "needs models/all-MiniLM-L6-v2 (make model)"))
    func miniLMOnTwoWorkersAnswersAsSigmaEmbed() async throws {
        let dir = try Scratch("serve-minilm")
        defer { dir.remove() }
        let (cluster, base, ep) = try await Self.started()
        defer { cluster.stop() }
        let (ds, _, de) = try await sigma(["deploy", repoRoot + "/examples/serve-minilm.yaml"] + ep)
        #expect(ds == 0, "\(de)")
        try await Self.waitReady(cluster, "minilm", ready: 2)
        let lines = try String(contentsOfFile: repoRoot + "/examples/sentences.txt", encoding: .utf8).split(separator: "\n").map(String.init)
        let (js, _, je) = try await sigma(["submit", repoRoot + "/examples/embed-sentences.yaml", "--follow", "-o", dir.path + "/emb"] + ep)
        try #require(js == 0, "\(je)")
        let want = try Self.floats(dir.path + "/emb/embeddings.npy")
        #expect(want.rows == lines.count && want.width == 384)

        // /v1/embeddings (OpenAI shape): all lines at once, and single lines and pairs at once from several clients.
        func embeddings(_ texts: [String]) async throws -> [[Float]] {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: ["model": "minilm", "input": texts]), as: UTF8.self)
            let r = try await Self.http("POST", base + "/v1/embeddings", body)
            let o = Self.json(r.body)
            #expect(r.status == 200 && o["object"] as? String == "list" && o["model"] as? String == "minilm", "\(r.status) \(r.body.prefix(200))")
            let data = o["data"] as? [[String: Any]] ?? []
            #expect(data.map { $0["index"] as? Int ?? -1 } == Array(0..<texts.count))
            return data.map { ($0["embedding"] as? [NSNumber] ?? []).map(\.floatValue) }
        }
        func row(_ i: Int) -> [UInt32] { want.values[(i * 384)..<((i + 1) * 384)].map(\.bitPattern) }
        let all = try await embeddings(lines)
        #expect(all.map { $0.map(\.bitPattern) } == (0..<lines.count).map(row))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<lines.count {
                group.addTask {
                    let pair = [lines[i], lines[(i + 5) % lines.count]]
                    let got = try await embeddings(pair)
                    #expect(got.map { $0.map(\.bitPattern) } == [row(i), row((i + 5) % lines.count)], "lines \(i), \((i + 5) % lines.count)")
                }
            }
            try await group.waitForAll()
        }
        // sigma predict over ZeroMQ, and TEI's /embed.
        let (ps, _, pe) = try await sigma(["predict", "minilm", "--input", repoRoot + "/examples/sentences.txt", "-o", dir.path + "/p.npy"] + ep)
        #expect(ps == 0, "\(pe)")
        #expect(try Self.floats(dir.path + "/p.npy").values.map(\.bitPattern) == want.values.map(\.bitPattern))
        let tei = try await Self.http("POST", base + "/embed", "{\"inputs\": \"\(lines[3])\"}")
        let teiRows = (try? JSONSerialization.jsonObject(with: Data(tei.body.utf8)) as? [[NSNumber]]) ?? []
        #expect(tei.status == 200 && teiRows.first?.map(\.floatValue).map(\.bitPattern) == row(3), "\(tei.body.prefix(200))")
        // Both workers answered some of it.
        let d = try await Self.deployment(cluster, "minilm")
        let batches = (d["replicas"] as? [[String: Any]] ?? []).map { $0["batches"] as? Int ?? 0 }
        #expect(batches.count == 2 && batches.allSatisfy { $0 > 0 }, "\(d)")
    }

    /// MiniLM fine-tuned with a head on the review lines (examples/finetune-reviews.yaml), deployed from the weights
    /// its train job wrote: texts in, class logits out — each text's the bits of the `infer` job over the same lines,
    /// alone or with others, over HTTP (`/predict`, v2 with BYTES) and ZeroMQ; every review classified as labelled.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: ServeTests.minilm + "/model.safetensors"), "needs models/all-MiniLM-L6-v2 (make model)"))
    func aFineTunedTextClassifierAnswersAsItsInferJob() async throws {
        let dir = try Scratch("serve-reviews")
        defer { dir.remove() }
        let (ts, _, te) = try await sigma(["train", repoRoot + "/examples/finetune-reviews.yaml", "--local", "-o", dir.path + "/ft"], timeout: 600)
        try #require(ts == 0, "\(te.suffix(500))")
        let model = "{encoder: \(ServeTests.minilm), classes: 2, weights: \(dir.path)/ft/model.safetensors}"
        let infer = try dir.write("infer.yaml", "kind: infer\nmodel: \(model)\ndata: {text: \(repoRoot)/examples/reviews.tsv}\nbatch_size: 8\n")
        let serve = try dir.write("serve.yaml", "kind: serve\nname: reviews\nmodel: \(model)\nreplicas: all\nbatching: {max_batch: 8, max_wait_ms: 5}\n")
        let (cluster, base, ep) = try await Self.started()
        defer { cluster.stop() }
        let (ds, _, de) = try await sigma(["deploy", serve] + ep)
        #expect(ds == 0, "\(de)")
        let (js, _, je) = try await sigma(["submit", infer, "--follow", "-o", dir.path + "/inf"] + ep)
        try #require(js == 0, "\(je)")
        let want = try Self.floats(dir.path + "/inf/predictions.npy")
        let lines = try String(contentsOfFile: repoRoot + "/examples/reviews.tsv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: "\t", maxSplits: 1) }
        let texts = lines.map { String($0[1]) }, labels = lines.map { $0[0] == "positive" ? 1 : 0 }
        #expect(want.rows == texts.count && want.width == 2)
        func row(_ i: Int) -> [UInt32] { want.values[(i * 2)..<(i * 2 + 2)].map(\.bitPattern) }
        #expect((0..<texts.count).map { want.values[$0 * 2 + 1] > want.values[$0 * 2] ? 1 : 0 } == labels, "the infer job's classes")
        try await Self.waitReady(cluster, "reviews", ready: 2)
        let meta = Self.json(try await Self.http("GET", base + "/v2/models/reviews").body)
        #expect((meta["inputs"] as? [[String: Any]])?.first?["datatype"] as? String == "BYTES", "\(meta)")
        // The metadata lists the class-name output the answers carry (the names came with the replicas' LOADED).
        let outs = meta["outputs"] as? [[String: Any]]
        #expect(outs?.map { $0["name"] as? String } == ["output", "label"] && outs?.last?["datatype"] as? String == "BYTES", "\(meta)")
        // /predict: all texts at once, and pairs from several clients at once.
        func predict(_ some: [String]) async throws -> [[UInt32]] {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": some]), as: UTF8.self)
            let r = try await Self.http("POST", base + "/predict/reviews", body)
            #expect(r.status == 200, "\(r.body.prefix(300))")
            return ((Self.json(r.body)["outputs"] as? [[NSNumber]]) ?? []).map { $0.map(\.floatValue.bitPattern) }
        }
        let together = try await predict(texts)
        #expect(together == (0..<texts.count).map(row))
        // The classes' names, as the train job wrote them into the weights: each row's largest logit's.
        let names = labels.map { ["negative", "positive"][$0] }
        let named = Self.json(try await Self.http("POST", base + "/predict/reviews",
                                                  String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": texts]), as: UTF8.self)).body)
        #expect(named["labels"] as? [String] == names, "\(named["labels"] ?? "no labels")")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in stride(from: 0, to: texts.count, by: 3) {
                group.addTask {
                    let j = (i + 17) % texts.count
                    let pair = try await predict([texts[i], texts[j]])
                    #expect(pair == [row(i), row(j)], "texts \(i), \(j)")
                }
            }
            try await group.waitForAll()
        }
        // Open Inference Protocol v2 with BYTES, and sigma predict over ZeroMQ.
        let v2body = String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": [["name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[5]]]]]), as: UTF8.self)
        let v2 = Self.json(try await Self.http("POST", base + "/v2/models/reviews/infer", v2body).body)
        let v2out = ((v2["outputs"] as? [[String: Any]])?.first?["data"] as? [NSNumber])?.map(\.floatValue.bitPattern)
        #expect(v2out == row(5), "\(v2)")
        let v2label = (v2["outputs"] as? [[String: Any]])?.last
        #expect(v2label?["name"] as? String == "label" && v2label?["data"] as? [String] == [names[5]], "\(v2)")
        let (ps, po, pe) = try await sigma(["predict", "reviews", "--text", texts[7], "--json"] + ep)
        let zmqRows = ((Self.json(po)["outputs"] as? [[NSNumber]]) ?? []).map { $0.map(\.floatValue.bitPattern) }
        #expect(ps == 0 && zmqRows == [row(7)], "\(po.prefix(300)) \(pe)")
        #expect(Self.json(po)["labels"] as? [String] == [names[7]], "\(po.prefix(300))")
        // Rows of numbers are refused naming what it takes.
        let bad = try await Self.http("POST", base + "/predict/reviews", "{\"inputs\": [[1, 2, 3]]}")
        #expect(bad.status == 422 && bad.body.contains("takes texts"), "\(bad.status) \(bad.body)")
    }

    /// Callers that hang up withdraw their requests through the whole chain — HTTP API, the coordinator's core, its
    /// queue and the batches on workers: with both workers stopped (SIGSTOP) six requests wait, four in batches and
    /// two queued; their callers hang up, and a seventh, over ZeroMQ, is cancelled by its Swift caller; all seven
    /// are withdrawn, none answered, and the deployment serves on.
    @Test func callersThatHangUpHaveTheirRequestsWithdrawn() async throws {
        let dir = try Scratch("serve-hangup")
        defer { dir.remove() }
        let (cluster, base, _) = try await Self.started()
        defer { cluster.stop() }
        try await Self.deployDigits("digits-hang", "replicas: all\nbatching: {max_batch: 1, max_wait_ms: 0}\n", ready: 2, in: dir, on: cluster)
        let x = try Self.floats(repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp/inputs.npy")
        let row = "{\"inputs\": [[" + x.values[0..<64].map { "\($0)" }.joined(separator: ",") + "]]}"
        let port = try #require(URLComponents(string: base)?.port)
        let workers = cluster.workers.withLock { $0 }
        for w in workers { w.kill(SIGSTOP) }
        let callers = try (0..<6).map { _ in try RawConnection(port: port) }
        for c in callers { c.post("/predict/digits-hang", row) }
        var d: [String: Any] = [:]
        for _ in 0..<100 {
            d = try await Self.deployment(cluster, "digits-hang")
            if d["requests"] as? Int == 6 { break }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        #expect(d["requests"] as? Int == 6 && d["queued"] as? Int == 2, "\(d)")
        for c in callers { c.hangUp() }
        // And over ZeroMQ: a Swift caller whose task is cancelled withdraws its request too.
        let client = try localClient(cluster.endpoint)
        defer { client.close() }
        let asking = Task { try await client.predict("digits-hang", .rows(width: 64, values: Array(x.values[0..<64])), timeout: 60) }
        for _ in 0..<100 {
            d = try await Self.deployment(cluster, "digits-hang")
            if d["requests"] as? Int == 7 { break }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        asking.cancel()
        let outcome = await asking.result
        #expect(throws: CancellationError.self) { try outcome.get() }
        for _ in 0..<100 {
            d = try await Self.deployment(cluster, "digits-hang")
            if d["withdrawn"] as? Int == 7 { break }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        for w in workers { w.kill(SIGCONT) }
        #expect(d["withdrawn"] as? Int == 7 && d["queued"] as? Int == 0, "\(d)")
        // The batches on the workers are computed and their answers dropped; the next caller is answered.
        let after = try await Self.http("POST", base + "/predict/digits-hang", row)
        #expect(after.status == 200, "\(after)")
        d = try await Self.deployment(cluster, "digits-hang")
        #expect(d["answered"] as? Int == 1 && d["withdrawn"] as? Int == 7 && d["timed_out_504"] as? Int == 0, "\(d)")
    }

    @Test func aKilledWorkerLosesNoRequestAndAFloodGets429WithMemoryBounded() async throws {
        let dir = try Scratch("serve-kill")
        defer { dir.remove() }
        let (cluster, base, _) = try await Self.started()
        defer { cluster.stop() }
        try await Self.deployDigits("digits-all", "replicas: all\nbatching: {max_batch: 8, max_wait_ms: 1}\nqueue_limit: 100000\n",
                                    ready: 2, in: dir, on: cluster)
        let x = try Self.floats(repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp/inputs.npy")
        let client = try localClient(cluster.endpoint)
        defer { client.close() }
        // The answer for each row, asked once up front.
        let reference = try await client.predict("digits-all", .rows(width: 64, values: x.values)).values

        // 3,000 one-row requests from 16 clients; a worker is killed after 300 answers.
        let total = 3000
        let answered = Counter(), killed = Counter()
        let victim = try #require(cluster.workers.withLock { $0.first })
        let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
            for c in 0..<16 {
                group.addTask {
                    var wrong = 0
                    for i in stride(from: c, to: total, by: 16) {
                        let r = i % 360
                        let p = try await client.predict("digits-all", .rows(width: 64, values: Array(x.values[(r * 64)..<((r + 1) * 64)])), timeout: 60)
                        if p.values.map(\.bitPattern) != reference[(r * 10)..<((r + 1) * 10)].map(\.bitPattern) { wrong += 1 }
                        if answered.add() == 300, killed.add() == 1 { victim.kill(SIGKILL) }
                    }
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(wrong == 0 && answered.value == total && killed.value == 1)
        let d = try await Self.deployment(cluster, "digits-all")
        // Each request answered once: the coordinator answered exactly what was asked (the reference request too).
        #expect(d["requests"] as? Int == total + 1 && d["answered"] as? Int == total + 1 && d["failed"] as? Int == 0, "\(d)")

        // A flood past a small queue: its one replica's worker stopped (SIGSTOP) for a second, so the queue fills and
        // stays full — 429 (Retry-After over HTTP) for all but the few it holds, every request answered one way or the
        // other, the coordinator's memory bounded; the worker resumed, the held ones are answered.
        try await Self.deployDigits("digits-small", "batching: {max_batch: 1, max_wait_ms: 0}\nqueue_limit: 4\n", ready: 1, in: dir, on: cluster)
        let survivor = try #require(cluster.workers.withLock { $0.last })
        let rssBefore = residentBytes(cluster.coordinator.process.processIdentifier)
        survivor.kill(SIGSTOP)
        let one = Array(x.values[0..<64])
        let flood = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<20_000 {
                    group.addTask {
                        do {
                            _ = try await client.predict("digits-small", .rows(width: 64, values: one), timeout: 60)
                            return 200
                        } catch ClientError.refused(let e) { return Int(e.code) }
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        let row = "{\"inputs\": [[" + one.map { "\($0)" }.joined(separator: ",") + "]]}"
        let overHTTP = try await Self.http("POST", base + "/predict/digits-small", row)
        #expect(overHTTP.status == 429 && overHTTP.headers["retry-after"] == "1" && overHTTP.body.contains("overloaded"), "\(overHTTP)")
        let rssDuring = residentBytes(cluster.coordinator.process.processIdentifier)
        survivor.kill(SIGCONT)
        let codes = try await flood.value
        let tooMany = codes.filter { $0 == 429 }.count, ok = codes.filter { $0 == 200 }.count
        #expect(ok >= 4 && ok <= 16 && ok + tooMany == codes.count, "\(Dictionary(grouping: codes, by: { $0 }).mapValues(\.count))")
        #expect(rssDuring < 512 << 20, "coordinator RSS \(rssBefore >> 20) MiB before the flood, \(rssDuring >> 20) MiB during it")
        let ds = try await Self.deployment(cluster, "digits-small")
        print("ServeTests: 3,000 requests with a worker killed after 300: all answered once, bitwise; flood of 20,000 on a queue of 4: \(ok) answered, \(tooMany) refused 429; coordinator RSS \(rssBefore >> 20) MiB before, \(rssDuring >> 20) MiB during")
        #expect(ds["rejected_429"] as? Int == tooMany + 1 && ds["answered"] as? Int == ok, "\(ds)")
    }
}

/// A thread-safe counter: `add` returns the count after adding.
final class Counter: Sendable {
    private let n = Mutex(0)
    func add() -> Int { n.withLock { $0 += 1; return $0 } }
    var value: Int { n.withLock { $0 } }
}

/// A process's resident memory (VmRSS), bytes; 0 if unreadable.
func residentBytes(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb << 10
}

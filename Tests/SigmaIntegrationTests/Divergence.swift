import Foundation
import Testing

/// What a test prints when a cluster's result differs from `--local`: the first history entry that differs, the
/// job's counters (hedges, duplicates, reruns), each worker's OpenBLAS kernel set, every shard attempt that was not
/// a plain first success, attempts per worker, and the cluster's log tails — so a rare difference explains itself in the CI log.
func divergenceReport(_ cluster: ProcessCluster, job: Int, clusterOut: String, localOut: String) async -> String {
    var lines: [String] = []
    func history(_ dir: String) -> [[String: Any]] {
        (fileBytes(dir + "/history.json").flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [[String: Any]]) ?? []
    }
    let (h1, h2) = (history(clusterOut), history(localOut))
    if let i = (0..<min(h1.count, h2.count)).first(where: { NSDictionary(dictionary: h1[$0]) != NSDictionary(dictionary: h2[$0]) }) {
        lines.append("history: first difference at entry \(i): cluster \(h1[i]) vs local \(h2[i])")
    } else {
        lines.append("history: \(h1.count) cluster and \(h2.count) local entries, none differ")
    }
    if let (s, o, _) = try? await sigma(["job", "\(job)", "--coordinator", cluster.endpoint, "--json"]), s == 0 {
        let keys = ["hedges", "duplicates", "reruns", "live_workers"]
        let kept = o.split(separator: "\n").filter { line in keys.contains { line.contains("\"\($0)\"") } }
        lines.append("job: " + kept.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " "))
    }
    // (a worker on another OpenBLAS kernel set than the rest computes other bits: its set and how it was chosen)
    if let (s, o, _) = try? await sigma(["workers", "--coordinator", cluster.endpoint, "--json"]), s == 0,
       let ws = (try? JSONSerialization.jsonObject(with: Data(o.utf8))) as? [[String: Any]] {
        lines.append("workers: " + ws.map { w in
            "\(w["name"] ?? "?") \(w["state"] ?? "?") blas=\(w["blas"] ?? "?") (\(w["blas_choice"] ?? "?"), best \(w["blas_best"] ?? "?"))"
        }.joined(separator: "; "))
    }
    let trace = FileManager.default.temporaryDirectory.path + "/sigma-divergence-\(UUID().uuidString.prefix(8)).json"
    defer { try? FileManager.default.removeItem(atPath: trace) }
    if let (s, _, _) = try? await sigma(["trace", "\(job)", "--coordinator", cluster.endpoint, "-o", trace]), s == 0,
       let t = fileBytes(trace).flatMap({ try? JSONSerialization.jsonObject(with: $0) }) as? [String: Any],
       let events = t["traceEvents"] as? [[String: Any]] {
        var names: [Int: String] = [:]
        for e in events where e["name"] as? String == "thread_name" { names[e["tid"] as? Int ?? 0] = (e["args"] as? [String: Any])?["name"] as? String }
        let attempts = events.filter { $0["ph"] as? String == "X" }
        var perWorker: [String: Int] = [:]
        for a in attempts { perWorker[names[a["tid"] as? Int ?? 0] ?? "?", default: 0] += 1 }
        lines.append("attempts per worker slot: \(perWorker.sorted { $0.key < $1.key })")
        let unusual = attempts.filter { a in
            let args = a["args"] as? [String: Any] ?? [:]
            return args["outcome"] as? String != "ok" || args["attempt"] as? Int != 1 || args["hedge"] as? Bool == true
        }
        lines.append("\(unusual.count) unusual attempts of \(attempts.count):")
        for a in unusual.prefix(20) { lines.append("  \(a["name"] ?? "") on \(names[a["tid"] as? Int ?? 0] ?? "?"): \(a["args"] ?? [:])") }
    }
    lines.append("coordinator log: " + cluster.coordinator.stderr.suffix(15).joined(separator: "\n  "))
    for (i, w) in cluster.workers.withLock({ $0 }).enumerated() { lines.append("worker \(i + 1) log: " + w.stderr.suffix(8).joined(separator: "\n  ")) }
    return lines.joined(separator: "\n")
}

/// Compares the cluster's result files with `--local`'s, byte for byte; on a difference records an issue naming the
/// file, the bytes that differ and `divergenceReport`'s explanation, prefixed by `what` (the run that differed).
/// Returns whether every file was the same.
@discardableResult
func expectSameAsLocal(_ cluster: ProcessCluster, job: Int, clusterOut: String, localOut: String,
                       files: [String] = ["model.safetensors"], _ what: String,
                       sourceLocation: SourceLocation = #_sourceLocation) async -> Bool {
    var same = true
    for f in files where fileBytes(clusterOut + "/" + f) != fileBytes(localOut + "/" + f) {
        let (a, b) = (fileBytes(clusterOut + "/" + f) ?? Data(), fileBytes(localOut + "/" + f) ?? Data())
        let differing = zip(a, b).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
        let report = same ? await divergenceReport(cluster, job: job, clusterOut: clusterOut, localOut: localOut) : "(report above)"
        let message: String = "\(what): \(f) differs between cluster and --local (\(a.count) and \(b.count) bytes; "
            + "\(differing.count) bytes differ, from \(differing.first ?? -1) to \(differing.last ?? -1))\n\(report)"
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
        same = false
    }
    return same
}

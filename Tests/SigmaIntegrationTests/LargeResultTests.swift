import Foundation
import SigmaEngine
import SigmaModel
import Testing

extension ProcessHeavyTests {
    /// Results of any size (issue 19): a 1 GB infer result and a 300,000-line embed result are kept on the coordinator's
    /// disk, not in its memory, and fetched whole in pieces by `submit --follow -o` and by `sigma results`.
    @Suite(.serialized) struct LargeResultTests {
        /// Bytes of a process's resident memory of one kind (`VmRSS`, `RssAnon`, `RssFile`, `RssShmem`), from /proc.
        static func resident(_ pid: Int32, _ field: String) -> UInt64? {
            guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = s.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
                  let kb = UInt64(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
            return kb * 1024
        }

        /// Two files are the same bytes (read in 64 MiB pieces: they are gigabytes).
        static func sameBytes(_ a: String, _ b: String) throws -> Bool {
            let fa = try FileHandle(forReadingFrom: URL(fileURLWithPath: a)), fb = try FileHandle(forReadingFrom: URL(fileURLWithPath: b))
            defer { try? fa.close(); try? fb.close() }
            while true {
                let x = try fa.read(upToCount: 64 << 20) ?? Data(), y = try fb.read(upToCount: 64 << 20) ?? Data()
                if x != y { return false }
                if x.isEmpty { return true }
            }
        }

        /// A tiny BERT model folder (1 layer, hidden 128, a 205-token vocabulary, seeded weights) and `lines` lines of
        /// its words: the embed kind's whole path at a size a 2-core machine runs in seconds.
        static func tinyBert(in dir: String, lines: Int) throws -> (model: String, text: String) {
            let model = dir + "/tiny-bert"
            try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
            let words = (0..<200).map { "w\($0)" }
            try (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words).joined(separator: "\n").appending("\n")
                .write(toFile: model + "/vocab.txt", atomically: true, encoding: .utf8)
            let (h, inter, vocab, positions) = (128, 64, 205, 32)
            try """
                {"hidden_size": \(h), "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": \(inter),
                 "max_position_embeddings": \(positions), "type_vocab_size": 2, "vocab_size": \(vocab), "hidden_act": "gelu", "layer_norm_eps": 1e-12}
                """.write(toFile: model + "/config.json", atomically: true, encoding: .utf8)
            var rng = SplitMix64(seed: 11)
            func random(_ shape: [Int], scale: Float = 0.05) -> Tensor {
                let n = shape.reduce(1, *)
                return Tensor(shape: shape, (0..<n).map { _ in (Float(rng.next() % 2001) / 1000 - 1) * scale })
            }
            func ones(_ n: Int) -> Tensor { Tensor(shape: [n], [Float](repeating: 1, count: n)) }
            var t: [String: Tensor] = [
                "embeddings.word_embeddings.weight": random([vocab, h]), "embeddings.position_embeddings.weight": random([positions, h]),
                "embeddings.token_type_embeddings.weight": random([2, h]), "embeddings.LayerNorm.weight": ones(h),
                "embeddings.LayerNorm.bias": random([h]),
            ]
            let l = "encoder.layer.0."
            for (name, out, inp) in [("attention.self.query", h, h), ("attention.self.key", h, h), ("attention.self.value", h, h),
                                     ("attention.output.dense", h, h), ("intermediate.dense", inter, h), ("output.dense", h, inter)] {
                t[l + name + ".weight"] = random([out, inp])
                t[l + name + ".bias"] = random([out])
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                t[l + name + ".weight"] = ones(h)
                t[l + name + ".bias"] = random([h])
            }
            try SafeTensors.write(t, path: model + "/model.safetensors")
            var text = ""
            text.reserveCapacity(lines * 16)
            for _ in 0..<lines {
                text += (0..<(2 + Int(rng.next() % 3))).map { _ in words[Int(rng.next() % 200)] }.joined(separator: " ") + "\n"
            }
            try text.write(toFile: dir + "/lines.txt", atomically: true, encoding: .utf8)
            return (model, dir + "/lines.txt")
        }

        @Test func largeResultsAreKeptOnDiskAndFetchedWhole() async throws {
            let dir = try Scratch("large")
            defer { dir.remove() }
            // Infer: 1,000,000 rows of 8 features through a seeded 8→250 layer: 1,000,000,128 bytes of predictions.npy.
            var rng = SplitMix64(seed: 5)
            let rows = 1_000_000
            try NumPyFormat.writeNpy(Tensor(shape: [rows, 8], (0..<(rows * 8)).map { _ in Float(rng.next() % 2001) / 1000 - 1 }), path: dir.path + "/x.npy")
            try SafeTensors.write(["0.weight": Tensor(shape: [250, 8], (0..<2000).map { _ in Float(rng.next() % 2001) / 1000 - 1 }),
                                   "0.bias": Tensor(shape: [250], (0..<250).map { _ in Float(rng.next() % 2001) / 1000 - 1 })],
                                  path: dir.path + "/w.safetensors")
            let infer = try dir.write("infer.yaml", "kind: infer\nmodel: {mlp: [8, 250], weights: \(dir.path)/w.safetensors}\ndata: {x: \(dir.path)/x.npy}\nbatch_size: 1000\n")
            let (model, text) = try Self.tinyBert(in: dir.path, lines: 300_000)
            let embed = try dir.write("embed.yaml", "kind: embed\nmodel: \(model)\ninput: \(text)\nbatch_size: 64\n")

            let (coordinator, endpoint) = try await JournalTests.start(port: "0", state: dir.path + "/state")
            defer { coordinator.kill(SIGTERM) }
            let workers = try (1...2).map { _ in
                try SigmaProcess(["worker", "--join", endpoint, "--threads", "1", "--log-level", "warning"] + testDataRoots)
            }
            defer { for w in workers { w.kill(SIGTERM) } }

            for (spec, file, size) in [(infer, "predictions.npy", 1_000_000_128), (embed, "embeddings.npy", 300_000 * 128 * 4 + 128)] {
                let name = file.replacingOccurrences(of: ".npy", with: "")
                let (s, out, e) = try await sigma(["submit", spec, "--coordinator", endpoint, "--follow", "-o", dir.path + "/\(name)-follow"], timeout: 600)
                try #require(s == 0, "\(e)")
                let job = try #require(jobID(in: e) ?? jobID(in: out), "\(out)\n\(e)")
                let followed = dir.path + "/\(name)-follow/\(file)"
                let got = try FileManager.default.attributesOfItem(atPath: followed)[.size] as? Int
                #expect(got == size, "\(file): \(got ?? -1) bytes")
                // `sigma results` fetches the same bytes; so does a --local run (the independent reference).
                let (rs, _, re) = try await sigma(["results", "\(job)", "--coordinator", endpoint, "-o", dir.path + "/\(name)-results"], timeout: 600)
                try #require(rs == 0, "\(re)")
                #expect(try Self.sameBytes(followed, dir.path + "/\(name)-results/\(file)"), "sigma results fetched the same bytes")
                let (ls, _, le) = try await sigma(["submit", spec, "--local", "-o", dir.path + "/\(name)-local"], timeout: 600)
                try #require(ls == 0, "\(le)")
                #expect(try Self.sameBytes(followed, dir.path + "/\(name)-local/\(file)"), "the cluster's \(file) equals the local run's, bitwise")
                try? FileManager.default.removeItem(atPath: dir.path + "/\(name)-local")
                try? FileManager.default.removeItem(atPath: dir.path + "/\(name)-results")
            }
            // Both results are retained (on disk), and the coordinator's memory does not hold them.
            let stored = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/state/results").filter { $0.hasSuffix(".result") }
            #expect(stored.count == 2, "\(stored)")
            try await Task.sleep(nanoseconds: 500_000_000)   // (a tick: the freed pages go back to the system)
            // Its own memory: heap and mapped files. (Same-host workers' shared-memory segments it keeps mapped for reuse,
            // RssShmem, are the workers' buffers, not results; shown in the message.)
            let pid = coordinator.pid
            let own = try #require(Self.resident(pid, "RssAnon")) + (try #require(Self.resident(pid, "RssFile")))
            let vm = (Self.resident(pid, "VmRSS") ?? 0) >> 20, shm = (Self.resident(pid, "RssShmem") ?? 0) >> 20
            #expect(own < 256 << 20, "coordinator's own resident memory \(own >> 20) MiB while retaining 1.15 GB of results (VmRSS \(vm) MiB, of which workers' shared segments \(shm) MiB)")
        }
    }
}

typealias LargeResultTests = ProcessHeavyTests.LargeResultTests

import Foundation
import SigmaEngine
import SigmaJobs
import SigmaModel
import Testing

/// The map-reduce reducers against NumPy float64 and exact rational references (Fixtures/make_reducers.py), and
/// each one's result the same bits however the input is split into shards.
@Suite struct ReducerTests {
    let reference: [String: Any] = {
        let data = FileManager.default.contents(atPath: modelFixtures + "/reducers.json") ?? Data()
        return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }()

    /// Runs `reduce` over `file` as one process does for the cluster (`--local`), cut into `sharding` shards.
    func run(_ file: String, reduce: String, sharding: String) throws -> (MapReduceResult, [UInt8]) {
        let job = try JobSpec.parse("""
            kind: map-reduce
            input: {npy: \(modelFixtures)/\(file)}
            reduce: \(reduce)
            \(sharding)
            """)
        let bytes = try JobKinds.standard.runLocal(job, roots: try DataRoots([modelFixtures]))
        return (try bytes.withUnsafeBytes { try MapReduceResult.decode($0) }, bytes)
    }

    static let shardings = ["shards: 1", "shards: 3", "shards: 64", "shard_size: 333", "shard_size: 1"]

    @Test func sumAndMeanAreCorrectlyRoundedWhateverTheSplit() throws {
        var seen: [UInt8]? = nil
        for s in Self.shardings {
            let (r, bytes) = try run("reduce_input.npy", reduce: "[sum, mean, count, min, max]", sharding: s)
            // math.fsum's correctly rounded sum, where NumPy's float64 sum loses it to ±1e300.
            #expect(r.total.value(.sum) == reference["sum"] as? Double, "\(s): sum \(r.total.value(.sum)!) vs fsum \(reference["sum"]!)")
            #expect(r.total.value(.sum) != reference["sum_numpy"] as? Double)
            #expect(r.total.value(.mean) == reference["mean"] as? Double, "\(s): mean")
            #expect(r.total.count == 6000 && r.total.value(.min) == -1e300 && r.total.value(.max) == 1e300)
            if let seen { #expect(bytes == seen, "\(s): a different result than one shard") }
            seen = bytes
        }
    }

    /// Population variance with a mean 10⁶ times the spread: the exact rational answer (and NumPy's two-pass
    /// `var`) to within 2 ulps, the same bits for every split.
    @Test func varianceIsExactSumsAwayWhateverTheSplit() throws {
        let block = try #require(reference["block"] as? [String: Any])
        let exact = try #require(block["variance"] as? Double), numpy = try #require(block["variance_numpy"] as? Double)
        var seen: Double? = nil
        for s in Self.shardings {
            let (r, _) = try run("reduce_block.npy", reduce: "[variance, mean]", sharding: s)
            let v = try #require(r.total.value(.variance))
            #expect(abs(v - exact) <= 2 * exact.ulp && abs(v - numpy) <= 2 * numpy.ulp, "\(s): variance \(v), exact \(exact), NumPy \(numpy)")
            #expect(r.total.value(.mean) == block["mean"] as? Double)
            if let seen { #expect(v.bitPattern == seen.bitPattern, "\(s): variance differs between splits") }
            seen = v
        }
        // ±1e300 among 6,000 values: a variance of about (1e300)² · 2 / 6,000 ≈ 3e596, beyond the double range — +∞,
        // not NaN and not a wrong number.
        let (r, _) = try run("reduce_input.npy", reduce: "[variance]", sharding: "shards: 2")
        #expect(r.total.value(.variance) == .infinity)
    }

    /// Values whose squares leave the double range (|x| ≳ 1.3e154) still give the correctly rounded variance when it
    /// is a double — values built from powers of two, so the exact answer is known — the same bits for every split;
    /// and +∞ when the variance itself is beyond the double range.
    @Test func varianceOfHugeValuesIsExactWhateverTheSplit() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-variance-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [(values: [Double], variance: Double)] = [
            ([0x1p520, 0x1p520 + 0x1p471], 0x1p940),                                   // squares beyond 2¹⁰²⁴, deviations ±2⁴⁷⁰
            ([0x1p520, 0x1p520 + 0x1p471, 0x1p520 + 0x1p472], 8.0 / 3.0 * 0x1p940),    // (8/3)·2⁹⁴⁰, rounded once
            ([0x1p499, 0x1p501], 9 * 0x1p996),                                         // one square of each kind
            ([0x1p510, 0, 0], 0x1p1021 / 9),                                           // 2¹⁰²⁰/3 − (2⁵¹⁰/3)², rounded once
            ([-0x1p600, 0x1p600], .infinity),                                          // 2¹²⁰⁰: beyond the double range
            (Array(repeating: 0x1p700, count: 5), 0),                                  // all equal
        ]
        for (k, c) in cases.enumerated() {
            let (values, expected) = c
            let path = dir + "/v\(k).npy"
            try NpyFile.write(path: path, float64: values)
            var seen: Double? = nil
            for s in ["shards: 1", "shards: 2", "shard_size: 1"] {
                let job = try JobSpec.parse("kind: map-reduce\ninput: {npy: \(path)}\nreduce: [variance, count]\n\(s)\n")
                let bytes = try JobKinds.standard.runLocal(job, roots: try DataRoots([dir]))
                let r = try bytes.withUnsafeBytes { try MapReduceResult.decode($0) }
                let v = try #require(r.total.value(.variance))
                #expect(v == expected, "case \(k), \(s): variance \(v), exact \(expected)")
                if let seen { #expect(v.bitPattern == seen.bitPattern, "case \(k), \(s): differs between splits") }
                seen = v
            }
        }
    }

    /// top_k against NumPy's stable descending argsort (ties by index), several histograms against np.histogram,
    /// class_counts against np.unique, concat equal to the input in order — each the same for every split.
    @Test func rankedCountedAndConcatenatedValuesMatchNumPyWhateverTheSplit() throws {
        let top = try #require(reference["top_k"] as? [String: Any])
        let histograms = try #require(reference["histograms"] as? [[String: Any]])
        let input = try NpyFile(path: modelFixtures + "/reduce_input.npy")
        let n = input.header.rows * input.header.columns
        let all = try [Double](unsafeUninitializedCapacity: n) { buf, count in
            try input.readRows(start: 0, count: input.header.rows, into: buf)
            count = n
        }
        var seen: [UInt8]? = nil
        for s in Self.shardings {
            let (r, bytes) = try run("reduce_input.npy", reduce: """
                [{top_k: 7}, {histogram: {bins: 10, low: 0, high: 10}}, {histogram: {bins: 4, low: 999998, high: 1000002}}, class_counts, concat]
                """, sharding: s)
            #expect(r.total.top?.map(\.value) == top["values"] as? [Double], "\(s): top_k values")
            #expect(r.total.top?.map { Int($0.index) } == top["indices"] as? [Int], "\(s): top_k indices")
            #expect(r.total.histograms.map { $0.map { Int($0) } } == histograms.map { $0["counts"] as? [Int] ?? [] }, "\(s): histograms")
            let classes = try #require(r.total.classes)
            #expect(classes.count == reference["distinct_values"] as? Int)
            let tenths = try #require(reference["class_counts_0_to_9"] as? [String: Int])
            for (k, n) in tenths { #expect(classes[Double(k)!] == UInt64(n), "\(s): class \(k)") }
            #expect(r.total.values == all, "\(s): concat is not the input in order")
            let json = r.jsonObject
            #expect((json["histograms"] as? [[String: Any]])?.count == 2 && (json["class_counts"] as? [String: Int])?["3"] == tenths["3"])
            #expect(r.files.first?.name == "concat.npy")
            if let seen { #expect(bytes == seen, "\(s): a different result than one shard") }
            seen = bytes
        }
    }

    /// Exact sums are exact: adding values and their negatives in any order gives zero, and a sum of many small
    /// values next to a large one keeps every one of them.
    @Test func exactSumsDoNotDependOnOrder() {
        var rng = SplitMix(seed: 3)
        var values: [Double] = []
        for _ in 0..<2000 {
            let v = Double(sign: rng.next() & 1 == 0 ? .plus : .minus, exponent: Int(rng.next() % 2000) - 1000,
                           significand: 1 + Double(rng.next() % 1_000_000) / 1_000_000)
            values += [v, -v]
        }
        var a = ExactSum(), b = ExactSum()
        for v in values { a.add(v) }
        for v in values.reversed() { b.add(v) }
        #expect(a.value == 0 && b.value == 0 && a.parts.lo == 0)
        var c = ExactSum()
        c.add(1e20)
        for _ in 0..<1000 { c.add(1) }
        c.add(-1e20)
        #expect(c.value == 1000)
        var d = ExactSum()
        d.add(0.1); d.add(0.2); d.add(0.3)
        #expect(d.value == 0.6, "0.1 + 0.2 + 0.3 correctly rounded is 0.6 (Python's math.fsum)")
        var e = ExactSum()
        e.add(.infinity); e.add(1)
        #expect(e.value == .infinity)
        e.add(-.infinity)
        #expect(e.value.isNaN)
        var tiny = ExactSum()
        tiny.add(Double.leastNonzeroMagnitude); tiny.add(Double.leastNonzeroMagnitude)
        #expect(tiny.value == 2 * Double.leastNonzeroMagnitude)
        var big = ExactSum()
        big.add(.greatestFiniteMagnitude); big.add(.greatestFiniteMagnitude)
        #expect(big.value == .infinity)
        big.add(-.greatestFiniteMagnitude)
        #expect(big.value == .greatestFiniteMagnitude)
    }

    @Test func reducerMistakesAreNamed() {
        func problem(_ reduce: String) -> String {
            do { _ = try JobSpec.parse("kind: map-reduce\ninput: {generate: range, count: 10}\nreduce: \(reduce)\n"); return "accepted" } catch { return "\(error)" }
        }
        #expect(problem("[{top_k: 0}]").contains("k must be between 1 and 100000"))
        #expect(problem("[top_k]").contains("top_k needs k"))
        #expect(problem("[sum, sum]").contains("'reduce[1]': sum is asked for twice"))
        #expect(problem("[varience]").contains("unknown reducer 'varience'"))
    }
}

/// map: {model_loss: …}: each row's cross-entropy under a PyTorch-trained MLP, against NumPy float64 from PyTorch's
/// logits (Fixtures/make_loss_rows.py); the hardest rows by top_k; the same bits for every split.
@Suite struct ModelLossTests {
    @Test func perRowLossesMatchNumPyAndDoNotDependOnTheSplit() throws {
        let ref = try #require(try JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: modelFixtures + "/loss_rows.json") ?? Data()) as? [String: Any])
        let losses = try #require(ref["losses"] as? [Double]), worst = try #require(ref["worst"] as? [Int])
        let weights = repoRoot + "/Tests/SigmaIntegrationTests/Fixtures/torch-mlp/model.safetensors"
        var seen: [UInt8]? = nil
        for sharding in ["shards: 1", "shards: 7", "shard_size: 50"] {
            let job = try JobSpec.parse("""
                kind: map-reduce
                input: {npy: \(modelFixtures)/loss_rows.npy}
                map: {model_loss: {model: {mlp: [64, 64, 10], weights: \(weights)}}}
                reduce: [concat, sum, {top_k: 5}, count]
                \(sharding)
                """)
            let bytes = try JobKinds.standard.runLocal(job, roots: try DataRoots([repoRoot]))
            let r = try bytes.withUnsafeBytes { try MapReduceResult.decode($0) }
            let mine = try #require(r.total.values)
            #expect(mine.count == 360 && r.total.count == 360)
            let worstDifference = zip(mine, losses).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worstDifference <= 1e-5, "\(sharding): losses differ from NumPy's by \(worstDifference)")
            #expect(r.total.top?.map { Int($0.index) } == worst, "\(sharding): the hardest rows")
            #expect(abs(r.total.value(.sum)! - (ref["sum"] as? Double ?? 0)) <= 1e-4)
            if let seen { #expect(bytes == seen, "\(sharding): a different result than one shard") }
            seen = bytes
        }
        #expect { _ = try JobSpec.parse("kind: map-reduce\ninput: {generate: range, count: 4}\nmap: {model_loss: {model: {mlp: [3, 2], weights: w.safetensors}}}\nreduce: sum\n") }
            throws: { "\($0)".contains("model_loss reads rows of an npy") }
        #expect { _ = try JobSpec.parse("kind: map-reduce\ninput: {npy: x.npy}\nmap: {model_loss: {model: {mlp: [3, 2]}}}\nreduce: sum\n") }
            throws: { "\($0)".contains("'map.model_loss.model.weights': missing") }
        let wrongWidth = try JobSpec.parse("kind: map-reduce\ninput: {npy: \(modelFixtures)/loss_rows.npy}\nmap: {model_loss: {model: {mlp: [10, 10], weights: \(weights)}}}\nreduce: sum\n")
        #expect { _ = try JobKinds.standard.runLocal(wrongWidth, roots: try DataRoots([repoRoot])) }
            throws: { "\($0)".contains("rows of 65 values; model_loss needs 11") }
    }
}

/// map: {model_gradient: …}: Σ over the rows of the model's cross-entropy gradient, bitwise the gradient a train
/// step reduces over the same micro-batches (before it divides by the rows and steps the optimizer), on 1 or 2
/// threads; its tensors under the model's state-dict names.
@Suite struct ModelGradientTests {
    @Test func theGradientIsATrainStepsBitwise() throws {
        let train = try JobSpec.parse("""
            kind: train
            model: {mlp: [64, 32, 10]}
            data: {csv: \(repoRoot)/data/digits.csv, scale: 0.0625}
            optimizer: {sgd: {lr: 0.1}}
            steps: 1
            batch_size: 96
            micro_batch: 16
            seed: 7
            """).decode(as: TrainJob.self)
        let data = try LabeledData.load(train.data, for: train.model, needLabels: true)
        let driver = try TrainDriver(spec: train, data: data)
        let dir = FileManager.default.temporaryDirectory.path + "/sigma-grad-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SafeTensors.encode(driver.stateDict, metadata: [:]).write(to: URL(fileURLWithPath: dir + "/w.safetensors"))
        // The train step's own reduction: every micro-batch of step 0, summed up the tree.
        let worker = try TrainWorker(spec: train, data: data)
        let total = worker.plan.microBatches(step: 0)
        let parts = try worker.compute(step: 0, version: 0, params: try #require(driver.params), range: 0..<total)
        #expect(parts.count == 1, "the whole range is the root")
        let reference = parts[0].1
        // The same rows, in the step's order, as an npy of inputs then the label.
        let rows = Array(worker.plan.epochOrder(0)[worker.plan.batchRange(step: 0)])
        var values: [Double] = []
        for r in rows { values += data.x[(r * 64)..<((r + 1) * 64)].map(Double.init) + [Double(data.y![r])] }
        try NpyFile.write(path: dir + "/rows.npy", float64: values, shape: [rows.count, 65])
        for threads in [1, 2] {
            let job = try JobSpec.parse("""
                kind: map-reduce
                input: {npy: \(dir)/rows.npy}
                map: {model_gradient: {model: {mlp: [64, 32, 10], weights: \(dir)/w.safetensors}, micro_batch: 16}}
                reduce: sum
                """)
            let bundle = try JobKinds.standard.runLocal(job, roots: try DataRoots([dir]), threads: threads)
            let files = try bundle.withUnsafeBytes { try ResultBundle.decode($0) }
            let file = try #require(files.first { $0.name == "gradient.safetensors" }?.data)
            try file.write(to: URL(fileURLWithPath: dir + "/g.safetensors"))
            let gradient = try SafeTensors.read(path: dir + "/g.safetensors")
            var offset = 0
            for p in try MLModels.architecture(train.model, seed: 0).parameters {
                let n = p.value.count
                let mine = try #require(gradient[p.name], "no \(p.name) in the gradient file")
                let expected: [Float] = Array(reference.values[offset..<(offset + n)])
                #expect(mine.scalars.map { $0.bitPattern } == expected.map { $0.bitPattern }, "\(threads) threads: \(p.name) differs from the train step's")
                offset += n
            }
            let metricsFile = try #require(files.first { $0.name == "metrics.json" }?.data)
            let metrics = try #require(try JSONSerialization.jsonObject(with: metricsFile) as? [String: Any])
            #expect(metrics["loss_sum"] as? Double == reference.loss && metrics["rows"] as? Int == 96 && metrics["micro_batches"] as? Int == 6)
        }
        #expect { _ = try JobSpec.parse("kind: map-reduce\ninput: {npy: x.npy}\nmap: {model_gradient: {model: {mlp: [3, 2], weights: w.safetensors}}}\nreduce: [sum, mean]\n") }
            throws: { "\($0)".contains("model_gradient reduces by sum alone") }
    }
}

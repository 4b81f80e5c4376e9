import SigmaModel

extension MapReduceSpec {
    /// Every check a map-reduce spec gets, from YAML, JSON or the wire (`JobSpec.validate(limits:)`).
    public func validate(limits: SpecLimits = .standard) throws {
        if let n = input.generatedCount {
            guard n >= 1 else { throw SpecError(field: "input.count", problem: "must be ≥ 1, got 0") }
            try limits.checkRows("input.count", n)
        }
        switch input {
        case .npy(let p) where p.isEmpty: throw SpecError(field: "input.npy", problem: "empty path")
        case .uniform(_, _, let lo, let hi) where !(lo < hi && lo.isFinite && hi.isFinite):
            throw SpecError(field: "input.high", problem: "must be finite and greater than low (\(lo)), got \(hi)")
        case .normal(_, _, let m, let s) where !(s >= 0 && s.isFinite && m.isFinite):
            throw SpecError(field: "input.std", problem: "must be finite and ≥ 0, got \(s)")
        case .range(_, let a, let b) where !(a.isFinite && b.isFinite):
            throw SpecError(field: "input.start", problem: "start and step must be finite")
        default: break
        }
        try map.validate(field: "map", depth: 0)
        if let g = modelGradient {
            try g.model.validate("map.model_gradient.model.", limits: limits)
            guard g.model.weights != nil else { throw SpecError(field: "map.model_gradient.model.weights", problem: "missing; model_gradient needs the weights to differentiate at (safetensors)") }
            guard case .npy = input else { throw SpecError(field: "input", problem: "model_gradient reads rows of an npy: the model's inputs, then the label") }
            guard g.model.encoder == nil else { throw SpecError(field: "map.model_gradient.model.encoder", problem: "model_gradient takes an mlp, cnn or transformer") }
            guard g.microBatch >= 1, g.microBatch <= 1 << 20 else { throw SpecError(field: "map.model_gradient.micro_batch", problem: "must be between 1 and 1048576, got \(g.microBatch)") }
            guard reduce == [.sum] else { throw SpecError(field: "reduce", problem: "model_gradient reduces by sum alone (the gradient Σ); give reduce: sum") }
        }
        if let m = modelLoss {
            try m.validate("map.model_loss.model.", limits: limits)
            guard m.weights != nil else { throw SpecError(field: "map.model_loss.model.weights", problem: "missing; model_loss needs trained weights (safetensors)") }
            guard case .npy = input else { throw SpecError(field: "input", problem: "model_loss reads rows of an npy: the model's inputs, then the label") }
            guard m.encoder == nil else { throw SpecError(field: "map.model_loss.model.encoder", problem: "model_loss takes an mlp, cnn or transformer") }
        }
        guard !reduce.isEmpty else { throw SpecError(field: "reduce", problem: "empty list") }
        var histograms = 0
        for (i, r) in reduce.enumerated() {
            if case .histogram(let bins, let lo, let hi) = r {
                histograms += 1
                let field = "reduce[\(i)].histogram."
                guard bins >= 1 else { throw SpecError(field: field + "bins", problem: "must be ≥ 1, got \(bins)") }
                guard bins <= limits.histogramBins else { throw limits.exceeded(field + "bins", bins, limits.histogramBins, key: "histogram_bins", unit: " bins") }
                guard lo < hi, lo.isFinite, hi.isFinite else {
                    throw SpecError(field: field + "high", problem: "must be finite and greater than low (\(lo)), got \(hi)")
                }
            }
        }
        guard histograms <= 16 else { throw SpecError(field: "reduce", problem: "at most 16 histograms per job, got \(histograms)") }
        for (i, r) in reduce.enumerated() {
            if case .topK(let k) = r, k < 1 || k > 100_000 { throw SpecError(field: "reduce[\(i)].top_k", problem: "k must be between 1 and 100000, got \(k)") }
        }
        for (i, r) in reduce.enumerated() where reduce.firstIndex(of: r)! < i {
            throw SpecError(field: "reduce[\(i)]", problem: "\(r.name) is asked for twice")
        }
        // (every value kept, 8 bytes each, on the coordinator: within the memory limit before anything runs)
        if reduce.contains(.concat), let n = input.generatedCount {
            try limits.checkMemory("reduce.concat", bytes: saturating(n, 16), what: "concat of \(n) values")
        }
        switch sharding {
        case .count(let n):
            guard n >= 1 else { throw SpecError(field: "shards", problem: "must be ≥ 1, got \(n)") }
            guard n <= limits.shards else { throw limits.exceeded("shards", n, limits.shards, key: "shards", unit: " shards") }
        case .size(let k):
            guard k >= 1 else { throw SpecError(field: "shard_size", problem: "must be ≥ 1, got \(k)") }
        }
        if let n = input.generatedCount { try sharding.check(rows: n, limits: limits) }
        // (the coordinator keeps every shard's partial until the round ends: histograms, top-k and class counts
        // times the shards, within the memory limit — 16 histograms of 2^20 bins over 200 shards were 25 GiB)
        let shards: UInt64? = switch sharding {
        case .count(let n): UInt64(n)
        case .size(let k): input.generatedCount.map { ($0 + UInt64(k) - 1) / UInt64(k) }
        }
        if let shards {
            let perShard = reduce.reduce(UInt64(64)) { sum, r in
                switch r {
                case .histogram(let bins, _, _): sum &+ UInt64(bins) * 8
                case .topK(let k): sum &+ UInt64(k) * 16
                case .classCounts: sum &+ 65_536 * 8
                default: sum &+ 16
                }
            }
            let (bytes, over) = shards.multipliedReportingOverflow(by: perShard)
            try limits.checkMemory("reduce", bytes: over ? .max : bytes, what: "\(shards) shards' partial results (\(perShard) bytes each)")
        }
    }
}

extension ElementFunction {
    /// The parameters in range, however the function came (YAML, JSON or the wire): finite affine coefficients,
    /// clip bounds in order, lists of 1…64 functions nested at most once.
    func validate(field: String, depth: Int) throws {
        switch self {
        case .affine(let a, let b) where !(a.isFinite && b.isFinite):
            throw SpecError(field: field + ".affine", problem: "a and b must be finite")
        case .clip(let lo, let hi) where !(lo ?? 0).isFinite || !(hi ?? 0).isFinite || (lo ?? -.infinity) > (hi ?? .infinity):
            throw SpecError(field: field + ".clip", problem: "low and high must be finite numbers with low ≤ high")
        case .compose(let fs):
            guard depth == 0, !fs.isEmpty, fs.count <= 64 else { throw SpecError(field: field, problem: "a list of 1 to 64 functions, not nested") }
            for (i, f) in fs.enumerated() { try f.validate(field: "\(field)[\(i)]", depth: depth + 1) }
        default: break
        }
    }
}

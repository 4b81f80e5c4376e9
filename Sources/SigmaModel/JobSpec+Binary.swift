/// Compact binary form of a job spec, as carried in SUBMIT and ASSIGN payloads (see docs/protocol.md §Job spec).
extension JobSpec {
    public func encode(into w: inout ByteWriter) {
        switch self {
        case .mapReduce(let s):
            w.u8(1)
            s.encode(into: &w)
        case .train(let s): w.u8(2); w.blob(MLSpecCoding.encode(s))
        case .infer(let s): w.u8(3); w.blob(MLSpecCoding.encode(s))
        case .eval(let s): w.u8(4); w.blob(MLSpecCoding.encode(s))
        case .embed(let s): w.u8(5); w.blob(MLSpecCoding.encode(s))
        }
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 96)
        encode(into: &w)
        return w.bytes
    }

    /// Decodes and validates against `SpecLimits.ceiling` (the most any configuration allows); never trusts the
    /// sender. The receiver then checks the spec against its own limits (`validate(limits:)`), as a parsed one is.
    public static func decode(from r: inout ByteReader) throws -> JobSpec {
        let kind = try r.u8("spec.kind")
        let spec: JobSpec
        switch kind {
        case 1: spec = .mapReduce(try MapReduceSpec.decode(from: &r))
        case 2: spec = .train(try MLSpecCoding.decode(TrainJob.self, try r.blob("spec.train", limit: 1 << 20), field: "spec.train"))
        case 3, 4:
            let s = try MLSpecCoding.decode(PredictJob.self, try r.blob("spec.predict", limit: 1 << 20), field: "spec.predict")
            spec = kind == 4 ? .eval(s) : .infer(s)
        case 5: spec = .embed(try MLSpecCoding.decode(EmbedJob.self, try r.blob("spec.embed", limit: 1 << 20), field: "spec.embed"))
        default:
            throw ByteReadError(field: "spec.kind", problem: "unknown job kind code \(kind)")
        }
        try spec.validate(limits: .ceiling)
        return spec
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> JobSpec {
        var r = ByteReader(bytes)
        let s = try decode(from: &r)
        try r.finish("spec")
        return s
    }
}

extension MapReduceSpec {
    func encode(into w: inout ByteWriter) {
        w.string(name)
        switch input {
        // (5: an npy file the coordinator ships, input_transport: coordinator)
        case .npy(let path): w.u8(inputTransport == .coordinator ? 5 : 1); w.string(path)
        case .range(let n, let a, let b): w.u8(2); w.u64(n); w.f64(a); w.f64(b)
        case .uniform(let n, let seed, let lo, let hi): w.u8(3); w.u64(n); w.u64(seed); w.f64(lo); w.f64(hi)
        case .normal(let n, let seed, let m, let s): w.u8(4); w.u64(n); w.u64(seed); w.f64(m); w.f64(s)
        }
        switch map {
        case .identity: w.u8(1)
        case .square: w.u8(2)
        case .abs: w.u8(3)
        case .affine(let a, let b): w.u8(4); w.f64(a); w.f64(b)
        }
        w.u8(UInt8(clamping: reduce.count))
        for r in reduce {
            switch r {
            case .sum: w.u8(1)
            case .mean: w.u8(2)
            case .min: w.u8(3)
            case .max: w.u8(4)
            case .count: w.u8(5)
            case .histogram(let bins, let lo, let hi): w.u8(6); w.u32(UInt32(clamping: bins)); w.f64(lo); w.f64(hi)
            }
        }
        switch sharding {
        case .count(let n): w.u8(1); w.u64(UInt64(clamping: n))
        case .size(let k): w.u8(2); w.u64(k)
        }
    }

    static func decode(from r: inout ByteReader) throws -> MapReduceSpec {
        let name = try r.string("spec.name")
        let input: DataSource
        var transport: InputTransport? = nil
        switch try r.u8("spec.input.kind") {
        case 1: input = .npy(path: try r.string("spec.input.npy"))
        case 5:
            input = .npy(path: try r.string("spec.input.npy"))
            transport = .coordinator
        case 2: input = .range(count: try r.u64("spec.input.count"), start: try r.f64("spec.input.start"), step: try r.f64("spec.input.step"))
        case 3: input = .uniform(count: try r.u64("spec.input.count"), seed: try r.u64("spec.input.seed"),
                                 low: try r.f64("spec.input.low"), high: try r.f64("spec.input.high"))
        case 4: input = .normal(count: try r.u64("spec.input.count"), seed: try r.u64("spec.input.seed"),
                                mean: try r.f64("spec.input.mean"), std: try r.f64("spec.input.std"))
        case let k: throw ByteReadError(field: "spec.input.kind", problem: "unknown code \(k)")
        }
        let map: ElementFunction
        switch try r.u8("spec.map") {
        case 1: map = .identity
        case 2: map = .square
        case 3: map = .abs
        case 4: map = .affine(a: try r.f64("spec.map.a"), b: try r.f64("spec.map.b"))
        case let k: throw ByteReadError(field: "spec.map", problem: "unknown code \(k)")
        }
        let n = try r.u8("spec.reduce.count")
        var reduce: [Reducer] = []
        for _ in 0..<n {
            switch try r.u8("spec.reduce") {
            case 1: reduce.append(.sum)
            case 2: reduce.append(.mean)
            case 3: reduce.append(.min)
            case 4: reduce.append(.max)
            case 5: reduce.append(.count)
            case 6: reduce.append(.histogram(bins: Int(try r.u32("spec.reduce.bins")), low: try r.f64("spec.reduce.low"),
                                             high: try r.f64("spec.reduce.high")))
            case let k: throw ByteReadError(field: "spec.reduce", problem: "unknown code \(k)")
            }
        }
        let sharding: Sharding
        switch try r.u8("spec.sharding") {
        case 1:
            sharding = .count(Int(clamping: try r.u64("spec.shards")))   // (validated against the limits after decoding)
        case 2: sharding = .size(try r.u64("spec.shard_size"))
        case let k: throw ByteReadError(field: "spec.sharding", problem: "unknown code \(k)")
        }
        return MapReduceSpec(name: name, input: input, map: map, reduce: reduce, sharding: sharding, inputTransport: transport)
    }

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
        if case .affine(let a, let b) = map, !(a.isFinite && b.isFinite) {
            throw SpecError(field: "map.affine", problem: "a and b must be finite")
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
        guard histograms <= 1 else { throw SpecError(field: "reduce", problem: "at most one histogram per job") }
        switch sharding {
        case .count(let n):
            guard n >= 1 else { throw SpecError(field: "shards", problem: "must be ≥ 1, got \(n)") }
            guard n <= limits.shards else { throw limits.exceeded("shards", n, limits.shards, key: "shards", unit: " shards") }
        case .size(let k):
            guard k >= 1 else { throw SpecError(field: "shard_size", problem: "must be ≥ 1, got \(k)") }
        }
        if let n = input.generatedCount { try sharding.check(rows: n, limits: limits) }
    }
}

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

    /// Decodes and validates; never trusts the sender.
    public static func decode(from r: inout ByteReader) throws -> JobSpec {
        let kind = try r.u8("spec.kind")
        switch kind {
        case 1:
            let s = try MapReduceSpec.decode(from: &r)
            try s.validate()
            return .mapReduce(s)
        case 2:
            let s = try MLSpecCoding.decode(TrainJob.self, try r.blob("spec.train", limit: 1 << 20), field: "spec.train")
            try s.validate()
            return .train(s)
        case 3, 4:
            let s = try MLSpecCoding.decode(PredictJob.self, try r.blob("spec.predict", limit: 1 << 20), field: "spec.predict")
            try s.validate(eval: kind == 4)
            return kind == 4 ? .eval(s) : .infer(s)
        case 5:
            let s = try MLSpecCoding.decode(EmbedJob.self, try r.blob("spec.embed", limit: 1 << 20), field: "spec.embed")
            try s.validate()
            return .embed(s)
        default:
            throw ByteReadError(field: "spec.kind", problem: "unknown job kind code \(kind)")
        }
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
        w.u8(UInt8(reduce.count))
        for r in reduce {
            switch r {
            case .sum: w.u8(1)
            case .mean: w.u8(2)
            case .min: w.u8(3)
            case .max: w.u8(4)
            case .count: w.u8(5)
            case .histogram(let bins, let lo, let hi): w.u8(6); w.u32(UInt32(bins)); w.f64(lo); w.f64(hi)
            }
        }
        switch sharding {
        case .count(let n): w.u8(1); w.u64(UInt64(n))
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
            let v = try r.u64("spec.shards")
            guard v <= UInt64(JobLimits.maxShards) else { throw ByteReadError(field: "spec.shards", problem: "\(v) exceeds \(JobLimits.maxShards)") }
            sharding = .count(Int(v))
        case 2: sharding = .size(try r.u64("spec.shard_size"))
        case let k: throw ByteReadError(field: "spec.sharding", problem: "unknown code \(k)")
        }
        return MapReduceSpec(name: name, input: input, map: map, reduce: reduce, sharding: sharding, inputTransport: transport)
    }

    /// The checks the YAML parser makes, for specs that arrive in binary from the network.
    public func validate() throws {
        if let n = input.generatedCount, n == 0 { throw SpecError(field: "input.count", problem: "must be ≥ 1, got 0") }
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
        for r in reduce {
            if case .histogram(let bins, let lo, let hi) = r {
                histograms += 1
                guard bins >= 1, bins <= JobLimits.maxBins else {
                    throw SpecError(field: "reduce.histogram.bins", problem: "must be between 1 and \(JobLimits.maxBins), got \(bins)")
                }
                guard lo < hi, lo.isFinite, hi.isFinite else {
                    throw SpecError(field: "reduce.histogram.high", problem: "must be finite and greater than low (\(lo)), got \(hi)")
                }
            }
        }
        guard histograms <= 1 else { throw SpecError(field: "reduce", problem: "at most one histogram per job") }
        switch sharding {
        case .count(let n) where n < 1 || n > JobLimits.maxShards:
            throw SpecError(field: "shards", problem: "must be between 1 and \(JobLimits.maxShards), got \(n)")
        case .size(let k) where k < 1:
            throw SpecError(field: "shard_size", problem: "must be ≥ 1, got \(k)")
        default: break
        }
    }
}

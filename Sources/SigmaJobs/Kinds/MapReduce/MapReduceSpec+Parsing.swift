import SigmaModel
import Yams

extension MapReduceSpec {
    static func parse(_ f: inout Fields, baseDirectory: String?) throws -> MapReduceSpec {
        let name = try f.optionalString("name") ?? "map-reduce"
        // input
        guard let inputNode = f.take("input") else { throw SpecError(field: "input", problem: "missing") }
        guard let inputMap = inputNode.mapping else {
            throw SpecError(field: "input", problem: "expected a mapping such as {npy: values.npy} or {generate: uniform, count: 1000}")
        }
        var inp = Fields(inputMap, path: "input.")
        let input: DataSource
        if let p = try inp.optionalString("npy") {
            let path = (p.hasPrefix("/") || baseDirectory == nil) ? p : baseDirectory! + "/" + p
            input = .npy(path: path)
        } else if let gen = try inp.optionalString("generate") {
            guard let count = try inp.optionalUInt("count") else { throw SpecError(field: "input.count", problem: "missing") }
            switch gen {
            case "range":
                input = .range(count: count, start: try inp.optionalDouble("start") ?? 0, step: try inp.optionalDouble("step") ?? 1)
            case "uniform":
                let lo = try inp.optionalDouble("low") ?? 0, hi = try inp.optionalDouble("high") ?? 1
                input = .uniform(count: count, seed: try inp.optionalUInt("seed") ?? 0, low: lo, high: hi)
            case "normal":
                let std = try inp.optionalDouble("std") ?? 1
                input = .normal(count: count, seed: try inp.optionalUInt("seed") ?? 0, mean: try inp.optionalDouble("mean") ?? 0, std: std)
            default:
                throw SpecError(field: "input.generate", problem: "unknown generator '\(gen)'; expected range, uniform or normal")
            }
        } else {
            throw SpecError(field: "input", problem: "needs either 'npy: PATH' or 'generate: range|uniform|normal'")
        }
        try inp.rejectUnknown()

        // map
        var fn = ElementFunction.identity
        var modelLoss: ModelSpec? = nil
        var modelGradient: MapReduceSpec.ModelGradient? = nil
        if let m = f.take("map") {
            if let mm = m.mapping, mm.count == 1, mm.first?.key.string == "model_gradient" {
                guard let gm = mm.first?.value.mapping else { throw SpecError(field: "map.model_gradient", problem: "expected {model: {mlp: […], weights: FILE}, micro_batch: 16}") }
                var g = Fields(gm, path: "map.model_gradient.")
                var model = try g.mapping("model", expected: "{mlp: [64, 10], weights: FILE.safetensors} (or a cnn or transformer)")
                let spec = try ModelSpec.parse(mapping: &model, base: baseDirectory)
                modelGradient = MapReduceSpec.ModelGradient(model: spec, microBatch: try g.optionalInt("micro_batch") ?? 16)
                try g.rejectUnknown()
            } else if let mm = m.mapping, mm.count == 1, mm.first?.key.string == "model_loss" {
                guard let lm = mm.first?.value.mapping else { throw SpecError(field: "map.model_loss", problem: "expected {model: {mlp: […], weights: FILE}}") }
                var l = Fields(lm, path: "map.model_loss.")
                var model = try l.mapping("model", expected: "{mlp: [64, 10], weights: FILE.safetensors} (or a cnn or transformer)")
                modelLoss = try ModelSpec.parse(mapping: &model, base: baseDirectory)
                try l.rejectUnknown()
            } else {
                fn = try ElementFunction.parse(m, field: "map")
            }
        }
        // reduce
        guard let r = f.take("reduce") else {
            throw SpecError(field: "reduce", problem: "missing; expected one or more of sum, mean, variance, min, max, count, histogram, top_k, class_counts, concat")
        }
        var reducers: [Reducer] = []
        if let seq = r.sequence {
            for (i, item) in seq.enumerated() { reducers.append(try Reducer.parse(item, field: "reduce[\(i)]")) }
        } else {
            reducers.append(try Reducer.parse(r, field: "reduce"))
        }
        // sharding (its limits are checked by `validate`)
        let shards = try f.optionalUInt("shards")
        let size = try f.optionalUInt("shard_size")
        let sharding: Sharding
        switch (shards, size) {
        case (.some, .some):
            throw SpecError(field: "shards", problem: "give either 'shards' or 'shard_size', not both")
        case (.some(let n), nil): sharding = .count(Int(clamping: n))
        case (nil, .some(let k)): sharding = .size(k)
        case (nil, nil): sharding = .count(64)
        }
        let transport = try InputTransport.parse(f.optionalString("input_transport"))
        if transport == .coordinator, input.generatedCount != nil {
            throw SpecError(field: "input_transport", problem: "applies to an npy input; a generated input has no file to ship")
        }
        try f.rejectUnknown()
        var spec = MapReduceSpec(name: name, input: input, map: fn, reduce: reducers, sharding: sharding, inputTransport: transport)
        spec.modelLoss = modelLoss
        spec.modelGradient = modelGradient
        return spec
    }
}

extension ElementFunction {
    static let known = "identity, square, abs, log, exp, {affine: {a, b}}, {clip: {low, high}}, or a list of them applied in order"

    static func parse(_ node: Node, field: String) throws -> ElementFunction {
        if let s = node.string, node.scalar != nil {
            switch s {
            case "identity": return .identity
            case "square": return .square
            case "abs": return .abs
            case "log": return .log
            case "exp": return .exp
            case "affine": throw SpecError(field: field, problem: "affine needs parameters: {affine: {a: 2, b: 1}}")
            case "clip": throw SpecError(field: field, problem: "clip needs its bounds: {clip: {low: 0, high: 1}}")
            default:
                let near = nearest(s, among: ["identity", "square", "abs", "log", "exp", "affine", "clip"])
                throw SpecError(field: field, problem: "unknown function '\(s.prefix(40))'" + (near.map { "; did you mean '\($0)'?" } ?? "; expected \(known)"))
            }
        }
        if let list = node.sequence {
            guard !list.isEmpty, list.count <= 64 else { throw SpecError(field: field, problem: "a list of 1 to 64 functions, got \(list.count)") }
            return .compose(try list.enumerated().map { i, n in
                guard n.sequence == nil else { throw SpecError(field: "\(field)[\(i)]", problem: "a function, not a list") }
                return try parse(n, field: "\(field)[\(i)]")
            })
        }
        if let m = node.mapping, m.count == 1, let key = m.first?.key.string, key == "affine", let params = m.first?.value.mapping {
            var p = Fields(params, path: field + ".affine.")
            let a = try p.optionalDouble("a") ?? 1, b = try p.optionalDouble("b") ?? 0
            try p.rejectUnknown()
            return .affine(a: a, b: b)
        }
        if let m = node.mapping, m.count == 1, let key = m.first?.key.string, key == "clip", let params = m.first?.value.mapping {
            var p = Fields(params, path: field + ".clip.")
            let lo = try p.optionalDouble("low"), hi = try p.optionalDouble("high")
            try p.rejectUnknown()
            if let lo, let hi, lo > hi { throw SpecError(field: field + ".clip", problem: "low \(lo) is above high \(hi)") }
            return .clip(low: lo, high: hi)
        }
        throw SpecError(field: field, problem: "expected \(known)")
    }
}

extension Reducer {
    static func parse(_ node: Node, field: String) throws -> Reducer {
        if node.scalar != nil, let s = node.string {
            switch s {
            case "sum": return .sum
            case "mean": return .mean
            case "min": return .min
            case "max": return .max
            case "count": return .count
            case "variance": return .variance
            case "class_counts": return .classCounts
            case "concat": return .concat
            case "histogram": throw SpecError(field: field, problem: "histogram needs parameters: {histogram: {bins: 10, low: 0, high: 1}}")
            case "top_k": throw SpecError(field: field, problem: "top_k needs k: {top_k: 5}")
            default: throw SpecError(field: field, problem: "unknown reducer '\(s.prefix(40))'; expected sum, mean, variance, min, max, count, histogram, top_k, class_counts or concat")
            }
        }
        if let m = node.mapping, m.count == 1, m.first?.key.string == "top_k", let v = m.first?.value {
            if v.scalar != nil, let s = v.string, let k = Int(s) { return .topK(k) }
            if let params = v.mapping {
                var p = Fields(params, path: field + ".top_k.")
                guard let k = try p.optionalInt("k") else { throw SpecError(field: field + ".top_k.k", problem: "missing") }
                try p.rejectUnknown()
                return .topK(k)
            }
            throw SpecError(field: field + ".top_k", problem: "expected a count k: {top_k: 5}")
        }
        if let m = node.mapping, m.count == 1, m.first?.key.string == "histogram", let params = m.first?.value.mapping {
            var p = Fields(params, path: field + ".histogram.")
            guard let bins = try p.optionalUInt("bins") else { throw SpecError(field: field + ".histogram.bins", problem: "missing") }
            guard let lo = try p.optionalDouble("low") else { throw SpecError(field: field + ".histogram.low", problem: "missing") }
            guard let hi = try p.optionalDouble("high") else { throw SpecError(field: field + ".histogram.high", problem: "missing") }
            try p.rejectUnknown()
            return .histogram(bins: Int(clamping: bins), low: lo, high: hi)
        }
        throw SpecError(field: field, problem: "expected a reducer name, {histogram: {bins, low, high}} or {top_k: K}")
    }
}

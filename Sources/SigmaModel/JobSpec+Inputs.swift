/// The files a job's workers read, and the same job reading them elsewhere (a worker's cache of files the
/// coordinator shipped: `input_transport: coordinator`).
extension JobSpec {
    public var inputTransport: InputTransport {
        switch self {
        case .mapReduce(let s): s.inputTransport ?? .shared
        case .train(let s): s.inputTransport ?? .shared
        case .infer(let s), .eval(let s): s.inputTransport ?? .shared
        case .embed(let s): s.inputTransport ?? .shared
        }
    }

    /// The model folder among `workerInputFiles` (embed: config.json, vocab.txt, model.safetensors and, when it
    /// exists, sentence_bert_config.json), nil for other kinds.
    public var modelFolder: String? {
        if case .embed(let s) = self { return s.model }
        return nil
    }

    /// Every file a worker reads for this job, in a fixed order: what the coordinator serves by index. `exists`
    /// decides the optional files of a model folder (asked on the coordinator, which holds them).
    public func workerInputFiles(exists: (String) -> Bool) -> [String] {
        switch self {
        case .mapReduce(let s):
            if case .npy(let path) = s.input { return [path] }
            return []
        case .train(let s): return s.data.paths
        case .infer(let s), .eval(let s): return s.data.paths + (s.model.weights.map { [$0] } ?? [])
        case .embed(let s):
            let optional = s.model + "/sentence_bert_config.json"
            return [s.input] + ["config.json", "vocab.txt", "model.safetensors"].map { s.model + "/" + $0 } + (exists(optional) ? [optional] : [])
        }
    }

    /// This spec with each input path replaced by `local[path]` (a model folder by `local[folder]`); paths not in
    /// `local` stay as they are.
    public func localized(_ local: [String: String]) -> JobSpec {
        func l(_ p: String) -> String { local[p] ?? p }
        switch self {
        case .mapReduce(var s):
            if case .npy(let path) = s.input { s.input = .npy(path: l(path)) }
            return .mapReduce(s)
        case .train(var s):
            s.data = s.data.localized(l)
            return .train(s)
        case .infer(var s), .eval(var s):
            s.data = s.data.localized(l)
            s.model.weights = s.model.weights.map(l)
            if case .eval = self { return .eval(s) }
            return .infer(s)
        case .embed(var s):
            s.input = l(s.input)
            s.model = l(s.model)
            return .embed(s)
        }
    }
}

extension LabeledDataSpec {
    func localized(_ l: (String) -> String) -> LabeledDataSpec {
        var d = self
        d.csv = csv.map(l)
        d.x = x.map(l)
        d.y = y.map(l)
        return d
    }
}

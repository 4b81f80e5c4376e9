import Foundation
import SigmaEngine
import SigmaModel


/// Feature rows (row-major) with optional integer labels.
public struct LabeledData: Sendable {
    public let rows: Int
    public let features: Int
    public let x: [Float]
    public let y: [Int32]?
    /// Regression targets, one per row (a `loss: mse` job's labels), instead of classes.
    public var targets: [Float]? = nil
    /// The classes' names when the data named them (a text file's labels: class i is the i-th name in sorted order).
    public var labelNames: [String]? = nil

    /// Rows already in memory (`x`: rows × features, row-major): what the simulator's train jobs use.
    public init(rows: Int, features: Int, x: [Float], y: [Int32]?) {
        precondition(x.count == rows * features && (y == nil || y!.count == rows), "LabeledData: \(x.count) values for \(rows) × \(features)")
        self.rows = rows
        self.features = features
        self.x = x
        self.y = y
    }

    /// Loads and checks the data for a model with `features` inputs and `classes` outputs (labels in 0..<classes).
    /// Each file's size is checked against `limits.memoryBytes` before it is read, and its rows against
    /// `limits.rows` after.
    public static func load(_ spec: LabeledDataSpec, features expected: Int, classes: Int, needLabels: Bool,
                            limits: SpecLimits = .standard, inputField: String = "model.mlp[0]", tokens: Int? = nil,
                            regression: Bool = false) throws -> LabeledData {
        // (regression: each row's label is a float target; read as classes without the class check, then converted)
        let classes = regression ? Int(Int32.max) : classes
        var targets: [Float]? = nil
        // (a CSV's text, its decoded copy and its values; an .npy's bytes and its float32 copy)
        if let csv = spec.csv { try limits.checkMemory("data.csv", bytes: saturating(fileSize(csv), 4), what: "reading '\(csv)'") }
        for (field, p) in [("data.x", spec.x), ("data.y", spec.y), ("data.npz", spec.npz), ("data.safetensors", spec.safetensors)] {
            if let p { try limits.checkMemory(field, bytes: saturating(fileSize(p), 2), what: "reading '\(p)'") }
        }
        var x: [Float] = [], y: [Int32]? = nil
        var rows = 0, features = 0
        let scale = Float(spec.scale)
        do {
            if let g = spec.generate {
                guard g.features == expected else { throw JobError("data.\(g.isSequences ? "length" : "features") is \(g.features); \(inputField) is \(expected)") }
                guard g.classes <= classes else { throw JobError("data.classes is \(g.classes); the model has \(classes) outputs") }
                try limits.checkRows("data.rows", UInt64(g.rows))
                try limits.checkMemory("data", bytes: UInt64(g.rows) * UInt64(g.features) * 4, what: "\(g.rows) generated rows of \(g.features) features")
                (rows, features) = (g.rows, g.features)
                (x, y) = g.isSequences ? sequences(g) : blobs(g, scale: scale)
                // (a regression target for generated rows: how often token 0 occurs in a sequence; a blob's class)
                if regression { targets = g.isSequences ? (0..<g.rows).map { r in Float(x[(r * g.features)..<((r + 1) * g.features)].filter { $0 == 0 }.count) } : y!.map(Float.init) }
            } else if let csv = spec.csv {
                let t: (rows: Int, columns: Int, values: [Float])
                do { t = try CSVFile.readFloats(path: csv, header: spec.header == true) } catch let e as FormatError where spec.header != true && e.problem.hasPrefix("line 1 ") {
                    throw JobError("\(e) (a header line? add header: true to data)")
                }
                guard t.columns >= 2 else { throw JobError("\(csv): \(t.columns) column(s); expected features and a label column") }
                let labelAt = try labelColumn(spec, csv: csv, columns: t.columns)
                rows = t.rows
                features = t.columns - 1
                guard features == expected else {
                    throw JobError("\(csv) has \(features) feature columns (plus the label); \(inputField) is \(expected)")
                }
                x.reserveCapacity(rows * features)
                var labels: [Int32] = []
                labels.reserveCapacity(rows)
                var floats: [Float] = []
                for r in 0..<rows {
                    let base = r * t.columns
                    for c in 0..<t.columns where c != labelAt { x.append(t.values[base + c] * scale) }
                    if regression { floats.append(t.values[base + labelAt]) } else {
                        labels.append(try label(t.values[base + labelAt], row: r, classes: classes, file: csv))
                    }
                }
                if regression { targets = floats } else { y = labels }
            } else if spec.x != nil || spec.arrays != nil {
                // (x and y files, or two arrays of one .npz or safetensors file: the same checks, naming the file or
                // file:array)
                let t: Tensor, l: Tensor?, xp: String, yp: String
                if let npz = spec.arrays {
                    // (a compressed .npz's entries are held to the memory limit as declared, before any is inflated)
                    let arrays = spec.npz != nil ? try NumPyFormat.readNpz(path: npz, maxBytes: Int(clamping: limits.memoryBytes))
                                                 : try SafeTensors.read(path: npz)
                    let (xk, yk) = (spec.features ?? "x", spec.labels ?? "y")
                    let names = arrays.keys.sorted().map { FormatError.shown($0) }.joined(separator: ", ")
                    guard let a = arrays[xk] else {
                        throw JobError("\(npz) has no array '\(xk.prefix(40))' (it has \(names)); name the features with data.features")
                    }
                    if spec.labels != nil && arrays[yk] == nil {
                        throw JobError("\(npz) has no array '\(yk.prefix(40))' (it has \(names))")
                    }
                    (t, l, xp, yp) = (a, arrays[yk], npz + ":" + xk, npz + ":" + yk)
                } else {
                    (xp, yp) = (spec.x!, spec.y ?? "")
                    (t, l) = (try array(xp), try spec.y.map(array))
                }
                // (images (rows, height, width), as MNIST's IDX files hold them, are rows of height × width features)
                guard t.rank >= 2 else { throw JobError("\(xp): features must be an array of rows (rows, features…), got shape \(t.shape)") }
                rows = t.shape[0]
                // (checked: an array of no rows holds no values, whatever its other dimensions claim)
                guard let f = checkedProduct(Array(t.shape.dropFirst())) else { throw JobError("\(xp): shape \(t.shape) is too large") }
                features = f
                guard features == expected else {
                    throw JobError("\(xp) has \(features) features per row (shape \(t.shape)); \(inputField) is \(expected)")
                }
                x = t.withData { p in p.map { $0 * scale } }
                if let l {
                    guard l.rank == 1, l.shape[0] == rows else {
                        throw JobError("\(yp): labels must be a 1-D array of \(rows) entries (one per row of \(xp)), got shape \(l.shape)")
                    }
                    if regression { targets = l.scalars } else {
                        y = try l.withData { p in try p.enumerated().map { try label($1, row: $0, classes: classes, file: yp) } }
                    }
                }
            }
        } catch let e as FormatError {
            throw JobError("\(e)")
        }
        guard rows > 0 else { throw JobError("\(spec.generate == nil ? spec.paths.joined(separator: ", ") : "data"): no rows") }
        try limits.checkRows(spec.csv != nil ? "data.csv" : spec.npz != nil ? "data.npz" : spec.safetensors != nil ? "data.safetensors" : "data.x", UInt64(rows))
        if regression { y = nil }
        if let t = targets, let bad = t.firstIndex(where: { !$0.isFinite }) {
            throw JobError("\(spec.paths.first ?? "data"): row \(bad + 1)'s target is \(t[bad]); regression targets must be finite")
        }
        if needLabels && y == nil && targets == nil { throw JobError("\(spec.paths.joined(separator: ", ")): no labels (this job kind needs them)") }
        if let vocab = tokens, let bad = x.firstIndex(where: { !($0 >= 0 && $0 < Float(vocab) && $0 == $0.rounded()) }) {
            throw JobError("\(spec.generate == nil ? spec.paths.first ?? "data" : "data"): row \(bad / features + 1), position \(bad % features) holds \(x[bad]); token ids must be integers in 0..<\(vocab) (model.transformer.vocab)")
        }
        // (one NaN or infinity makes every loss and weight NaN from the first step on: named here, not trained on)
        if let bad = x.firstIndex(where: { !$0.isFinite }) {
            throw JobError("\(spec.paths.first ?? "data"): row \(bad / max(features, 1) + 1), feature \(bad % max(features, 1) + 1) is not a finite number (NaN or infinity); clean the data first")
        }
        var d = LabeledData(rows: rows, features: features, x: x, y: y)
        d.targets = targets
        return d
    }

    /// Rows of a 2-D `.npy` holding the model's inputs then an integer label (model_gradient's input), checked.
    static func rowsWithLabels(_ path: String, model: ModelSpec, limits: SpecLimits) throws -> LabeledData {
        try limits.checkMemory("input.npy", bytes: saturating(fileSize(path), 2), what: "reading '\(path)'")
        let file = try NpyFile(path: path)
        let (rows, width) = (file.header.rows, file.header.columns)
        guard width == model.inputs + 1 else { throw JobError("\(path): rows of \(width) values; the model needs \(model.inputs + 1) (\(model.inputField) inputs, then the label)") }
        let values = try [Double](unsafeUninitializedCapacity: rows * width) { buf, n in
            try file.readRows(start: 0, count: rows, into: buf)
            n = rows * width
        }
        var x = [Float](), y = [Int32]()
        x.reserveCapacity(rows * model.inputs)
        for r in 0..<rows {
            for c in 0..<model.inputs { x.append(Float(values[r * width + c])) }
            y.append(try label(Float(values[r * width + model.inputs]), row: r, classes: model.outputs, file: path))
        }
        if let vocab = model.tokens, let bad = x.firstIndex(where: { !($0 >= 0 && $0 < Float(vocab) && $0 == $0.rounded()) }) {
            throw JobError("\(path): row \(bad / model.inputs + 1) holds \(x[bad]); token ids must be integers in 0..<\(vocab)")
        }
        return LabeledData(rows: rows, features: model.inputs, x: x, y: y)
    }

    /// The data of `spec` for `model`: rows as wide as its input, labels below its outputs, token ids below its vocab.
    public static func load(_ spec: LabeledDataSpec, for model: ModelSpec, needLabels: Bool, limits: SpecLimits = .standard,
                            regression: Bool = false) throws -> LabeledData {
        // (weights files are read whole, every tensor decoded: held to the memory limit by their size first, as data
        // files are — a weights path may name any large file under a data root)
        if let w = model.weights { try limits.checkMemory("model.weights", bytes: saturating(fileSize(w), 2), what: "reading '\(w)'") }
        if let e = model.encoder {
            // (the encoder's config.json sizes within the limits before anything is built from them)
            _ = try ServedModel.checkEncoder(e.folder, field: "model.encoder", limits: limits)
            let weights = e.folder + "/model.safetensors"
            try limits.checkMemory("model.encoder", bytes: saturating(fileSize(weights), 2), what: "reading '\(weights)'")
            return try TextData.load(spec, encoder: e, needLabels: needLabels, limits: limits)
        }
        if let t = spec.text { throw JobError("data.text: \(t) holds text; only a model: {encoder: FOLDER, classes: N} reads text") }
        return try load(spec, features: model.inputs, classes: model.outputs, needLabels: needLabels, limits: limits, inputField: model.inputField,
                        tokens: model.tokens, regression: regression)
    }

    /// The label column of a CSV with `columns` columns: `label_column` by name (from the header line) or index,
    /// else the last.
    static func labelColumn(_ spec: LabeledDataSpec, csv: String, columns: Int) throws -> Int {
        guard let c = spec.labelColumn else { return columns - 1 }
        if let i = Int(c) {
            guard i < columns else { throw JobError("data.label_column: index \(i), but \(csv) has \(columns) columns (0…\(columns - 1))") }
            return i
        }
        let names = try CSVFile.header(path: csv)
        guard let i = names.firstIndex(of: c) else {
            throw JobError("data.label_column: no column '\(c.prefix(40))' in the header of \(csv) (\(names.count) columns)")
        }
        return i
    }

    /// Generated blobs (`LabeledDataSpec.GeneratedBlobs`): centres from (seed, class), each row from (seed, row), so
    /// every process makes the same rows.
    static func blobs(_ g: LabeledDataSpec.GeneratedBlobs, scale: Float) -> ([Float], [Int32]) {
        var centres = [Float](repeating: 0, count: g.classes * g.features)
        var c = SeededRandom(seed: g.seed ^ 0xB10B_5EED)
        for i in centres.indices { centres[i] = 2 * c.unit() - 1 }
        var x = [Float](repeating: 0, count: g.rows * g.features), y = [Int32](repeating: 0, count: g.rows)
        for r in 0..<g.rows {
            var rng = SeededRandom(seed: SeededRandom.mix(g.seed &+ UInt64(r) &* SeededRandom.gamma))
            let k = r % g.classes
            y[r] = Int32(k)
            for f in 0..<g.features {
                // (Box–Muller: one normal from two uniforms, in Float64)
                let u1 = max(Double(rng.unit()), 1e-12), u2 = Double(rng.unit())
                let n = (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * .pi * u2)
                x[r * g.features + f] = Float(Double(centres[k * g.features + f]) + g.spread * n) * scale
            }
        }
        return (x, y)
    }

    /// Generated sequences (`LabeledDataSpec.GeneratedBlobs`, generator `sequences`): each row from (seed, row).
    static func sequences(_ g: LabeledDataSpec.GeneratedBlobs) -> ([Float], [Int32]) {
        let (t, c, vocab) = (g.features, g.classes, g.vocab ?? g.classes + 1)
        var x = [Float](repeating: 0, count: g.rows * t), y = [Int32](repeating: 0, count: g.rows)
        for r in 0..<g.rows {
            var rng = SeededRandom(seed: SeededRandom.mix((g.seed ^ 0x5E0_5E0) &+ UInt64(r) &* SeededRandom.gamma))
            let k = r % c
            y[r] = Int32(k)
            var row = (0..<t).map { _ in Float(c + Int(rng.next() % UInt64(vocab - c))) }
            var positions = Array(0..<t)
            positions.shuffle(using: &rng)
            var at = 0
            for token in 0..<c {
                let count = token == k ? 3 : Int(rng.next() % 3)
                for _ in 0..<count { row[positions[at]] = Float(token); at += 1 }
            }
            x.replaceSubrange((r * t)..<((r + 1) * t), with: row)
        }
        return (x, y)
    }

    /// An array file by its format: NumPy `.npy`, or IDX (MNIST's `…-idx3-ubyte`, `.idx`), told by its first bytes.
    static func array(_ path: String) throws -> Tensor {
        let head = FileHandle(forReadingAtPath: path).flatMap { h in defer { try? h.close() }; return try? h.read(upToCount: 6) } ?? Data()
        if head.starts(with: [0x93] + Array("NUMPY".utf8)) { return try NumPyFormat.readNpy(path: path) }
        if head.count >= 4, head[head.startIndex] == 0, head[head.startIndex + 1] == 0 { return try IDXFormat.read(path: path) }
        throw JobError("\(path): neither a NumPy .npy file nor an IDX file (MNIST's format) by its first bytes")
    }

    static func label(_ v: Float, row: Int, classes: Int, file: String) throws -> Int32 {
        guard v >= 0, v < Float(classes), v == v.rounded() else {
            throw JobError("\(file): row \(row + 1) has label \(v), expected an integer in 0..<\(classes) (the model has \(classes) outputs)")
        }
        return Int32(v)
    }

    /// The regression targets of rows `idx` as an (idx.count, 1) tensor.
    public func targetBatch<C: Collection>(_ idx: C) -> Tensor where C.Element == Int {
        Tensor(shape: [idx.count, 1], idx.map { targets?[$0] ?? 0 })
    }

    /// The rows `idx` as a (idx.count, features) tensor and their labels.
    public func batch<C: Collection>(_ idx: C) -> (Tensor, [Int32]) where C.Element == Int {
        let f = features
        let t = Tensor(shape: [idx.count, f]) { out in
            x.withUnsafeBufferPointer { src in
                for (k, i) in idx.enumerated() {
                    (out.baseAddress! + k * f).update(from: src.baseAddress! + i * f, count: f)
                }
            }
        }
        return (t, y.map { labels in idx.map { labels[$0] } } ?? [])
    }
}

public enum MLModels {
    static let activations = ["relu", "gelu", "tanh"]
    static func activation(_ name: String) -> Kernels.Unary { name == "gelu" ? .gelu : name == "tanh" ? .tanh : .relu }

    /// The network of `spec` with seeded initial weights (an encoder's as its folder holds them).
    public static func architecture(_ spec: ModelSpec, seed: UInt64) throws -> Layer {
        if let e = spec.encoder {
            do { return try BertClassifier(modelDirectory: e.folder, classes: e.classes, frozen: e.freeze, seed: seed) } catch let err as FormatError {
                throw JobError("model.encoder: \(err)")
            }
        }
        if let c = spec.cnn { return c.build(seed: seed) }
        if let t = spec.transformer { return t.build(seed: seed) }
        return Sequential.mlp(spec.mlp, activation: activation(spec.activation), seed: seed)
    }

    /// The model of `spec`: weights from `spec.weights` (tensor names under `spec.prefix`), else a seeded init.
    public static func build(_ spec: ModelSpec, seed: UInt64) throws -> Layer {
        let model = try architecture(spec, seed: seed)
        if let path = spec.weights {
            do {
                var tensors = try SafeTensors.read(path: path)
                if !spec.prefix.isEmpty {
                    tensors = Dictionary(uniqueKeysWithValues: tensors.compactMap { k, v in
                        k.hasPrefix(spec.prefix) ? (String(k.dropFirst(spec.prefix.count)), v) : nil
                    })
                }
                try model.load(tensors, file: path + (spec.prefix.isEmpty ? "" : " (prefix '\(spec.prefix)')"))
            } catch let e as FormatError {
                throw JobError("model.weights: \(e)")
            }
        }
        return model
    }

    public static func parameterCount(_ model: Layer) -> Int { model.parameters.reduce(0) { $0 + $1.value.count } }

    /// All parameters, concatenated in `parameters` order.
    public static func flatten(_ params: [Parameter]) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(params.reduce(0) { $0 + $1.value.count })
        for p in params { p.value.withData { out.append(contentsOf: $0) } }
        return out
    }

    /// Writes every parameter's gradient (zeros where none), end to end, as float32 into `out`; a gradient the
    /// backward pass already left in place (`gradientBuffers(in:)`) is not copied.
    static func writeGradients(_ params: [Parameter], into out: UnsafeMutableRawBufferPointer) {
        var o = 0
        for p in params {
            let bytes = p.value.count * 4
            let dst = UnsafeMutableRawBufferPointer(rebasing: out[o..<o + bytes])
            if let g = p.grad {
                if !g.isStored(at: dst.baseAddress) { g.withData { dst.copyMemory(from: UnsafeRawBufferPointer($0)) } }
            } else {
                dst.initializeMemory(as: UInt8.self, repeating: 0)
            }
            o += bytes
        }
    }

    /// Points each parameter's gradient buffer at its slice of `out` (the layout `writeGradients` writes), so the
    /// backward pass computes gradients straight into the message; false (nothing set) when `out` is not
    /// float-aligned or too small.
    static func gradientBuffers(_ params: [Parameter], in out: UnsafeMutableRawBufferPointer) -> Bool {
        let n = params.reduce(0) { $0 + $1.value.count }
        guard let base = out.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0, out.count >= n * 4 else { return false }
        let floats = base.bindMemory(to: Float.self, capacity: n)
        var o = 0
        for p in params {
            p.gradientBuffer = UnsafeMutableBufferPointer(start: floats + o, count: p.value.count)
            o += p.value.count
        }
        return true
    }

    /// Points every parameter at its slice of a flat float32 vector (the PARAMS payload) without copying: the
    /// tensors hold the frame (a shared-memory segment goes back to its sender when the next version replaces
    /// them). Copies instead when the payload is not float-aligned.
    public static func assign(_ params: [Parameter], from frame: Frame) throws {
        try frame.withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 else {
                return try assign(params, from: bytes)
            }
            try checkSize(params, bytes.count)
            var offset = 0
            for p in params {
                let n = p.value.count
                p.value = Tensor(borrowing: (base + offset).assumingMemoryBound(to: Float.self), shape: p.value.shape, owner: frame.retainedStorage)
                offset += n * 4
            }
        }
    }

    static func checkSize(_ params: [Parameter], _ count: Int) throws {
        let total = params.reduce(0) { $0 + $1.value.count }
        guard count == total * 4 else {
            throw JobError("parameters: \(count) bytes, the model needs \(total) float32 values (\(total * 4) bytes)")
        }
    }

    /// Sets every parameter from a flat float32 vector (the PARAMS payload), copying.
    public static func assign(_ params: [Parameter], from bytes: UnsafeRawBufferPointer) throws {
        try checkSize(params, bytes.count)
        var offset = 0
        for p in params {
            let n = p.value.count
            // (into the tensor's own storage: a fresh tensor per parameter per step cost page faults on every step)
            p.value.withMutableData { dst in
                UnsafeMutableRawBufferPointer(dst).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n * 4]))
            }
            offset += n * 4
        }
    }
}

/// Which rows each training step uses. A pure function of the spec and the row count, so every worker (and a
/// resumed job) derives the same batches: a seeded shuffle splits off the held-out rows, then each epoch's order
/// is a shuffle seeded by (seed, epoch) — the data-order RNG state is just (seed, step).
public struct TrainPlan: Sendable {
    public let spec: TrainJob
    public let train: [Int]
    public let holdout: [Int]
    public let stepsPerEpoch: Int
    public let totalSteps: Int

    public init(_ spec: TrainJob, rows: Int) {
        self.spec = spec
        var rng = SeededRandom(seed: spec.seed)
        var order = Array(0..<rows)
        if spec.gradientOnly != true { order.shuffle(using: &rng) }
        let nTest = min(rows - 1, Int(Double(rows) * spec.holdout))
        holdout = Array(order[..<nTest])
        train = Array(order[nTest...])
        stepsPerEpoch = (train.count + spec.batchSize - 1) / spec.batchSize
        totalSteps = spec.steps ?? (spec.epochs ?? 1) * stepsPerEpoch
    }

    public func epochOrder(_ epoch: Int) -> [Int] {
        if spec.gradientOnly == true { return train }
        var rng = SeededRandom(seed: spec.seed ^ (0x5EED_0000_0000 &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15))
        var o = train
        o.shuffle(using: &rng)
        return o
    }

    /// Position of step's rows within its epoch order.
    public func batchRange(step: Int) -> Range<Int> {
        let k = step % stepsPerEpoch
        return (k * spec.batchSize)..<min((k + 1) * spec.batchSize, train.count)
    }

    /// The seed of row `row`'s dropout mask in dropout layer `layer` at step `step`.
    public static func dropoutSeed(_ seed: UInt64, step: Int, row: Int, layer: Int) -> UInt64 {
        let s = SeededRandom.mix(seed ^ 0xD80_0D80_0D80)
        return SeededRandom.mix(SeededRandom.mix(SeededRandom.mix(s &+ UInt64(step)) &+ UInt64(row)) &+ UInt64(layer))
    }

    public func microBatches(step: Int) -> Int {
        (batchRange(step: step).count + spec.microBatch - 1) / spec.microBatch
    }
}

/// A shard's rows cut on absolute batch boundaries, each batch computed on one of the free compute lanes and written
/// at its rows' place in the output.
enum Batches {
    static func run(start: Int, count: Int, batch: Int, width: Int, lanes: ComputeLanes,
                    _ compute: @escaping @Sendable (Range<Int>) throws -> Tensor) throws -> [Float] {
        var ranges: [Range<Int>] = []
        var r = start
        while r < start + count {
            let end = min((r / batch + 1) * batch, start + count)
            ranges.append(r..<end)
            r = end
        }
        // (written in place by the lanes, each batch at its rows' place: no copy of the shard's output)
        return try [Float](unsafeUninitializedCapacity: count * width) { buf, initialized in
            let out = Unchecked(buf)
            try lanes.forEach(ranges.count) { [ranges] k in
                let t = try compute(ranges[k])
                guard t.count == ranges[k].count * width else {
                    throw JobError("batch \(ranges[k]) gave \(t.count) values, expected \(ranges[k].count) × \(width)")
                }
                t.withData { (out.v.baseAddress! + (ranges[k].lowerBound - start) * width).update(from: $0.baseAddress!, count: $0.count) }
            }
            initialized = count * width
        }
    }
}


/// bytes; 0 when the file cannot be stat'ed (reading it then says why).
func fileSize(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(max(0, st.st_size)) : 0
}

func saturating(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (r, o) = a.multipliedReportingOverflow(by: b)
    return o ? .max : r
}

extension SpecLimits {
    func exceeded(_ field: String, _ value: Int, _ limit: Int, key: String, what: String) -> SpecError {
        SpecError(field: field, problem: "\(what) \(value) exceeds the limit of \(limit) (cluster.yaml limits.\(key))")
    }
}

import Foundation
import SigmaEngine
import SigmaModel
import Synchronization

/// What one training shard computes: the partial sums of the gradient tree over micro-batches `range` of a step.
/// Shared by workers and `--local` runs, so both compute every leaf and every addition identically. Micro-batches
/// run on the process's free compute lanes (`ComputeLanes.shared`), each lane on its own copy of the model (the
/// weights shared, the gradients its own); subtrees are summed where they were computed and the rest of the tree
/// added in its fixed order, so the bits do not depend on the number of lanes.
public final class TrainWorker: @unchecked Sendable {
    public let spec: TrainJob
    public let data: LabeledData
    public let plan: TrainPlan
    let model: Layer
    let lanes: ComputeLanes
    var loadedVersion: UInt32? = nil
    var params: Frame? = nil
    var cachedEpoch = -1
    /// The step being computed (dropout masks are drawn from it).
    var currentStep = 0
    var cachedOrder: [Int] = []
    /// Models for lanes beyond the calling thread's, with the parameter version each holds; taken while in use.
    let replicas = ReplicaPool()
    /// Each model copy's vector for right leaves' gradients.
    let scratches = GradientScratch()
    /// This worker's rank, slice and velocity in the job's current collective segment (`collectiveStep`).
    var collective: CollectiveState? = nil

    public init(spec: TrainJob, data: LabeledData, lanes: ComputeLanes = .shared) throws {
        self.spec = spec
        self.data = data
        self.lanes = lanes
        plan = TrainPlan(spec, rows: data.rows)
        model = try Self.newModel(spec)
    }

    static func newModel(_ spec: TrainJob) throws -> Layer { try MLModels.architecture(spec.model, seed: 0) }

    public var parameterCount: Int { MLModels.parameterCount(model) }

    /// The RESULT payload for micro-batches `range` of `step`: with float32 transport a single micro-batch's
    /// gradient is computed straight into the message (backward writes there); otherwise the partial sums are
    /// computed, then encoded.
    public func encodedPartials(step: Int, version: UInt32, params: Frame, range: Range<Int>) throws -> Frame {
        guard spec.gradientTransport == .f32 else {
            return try GradientTree.encode(try compute(step: step, version: version, params: params, range: range), transport: spec.gradientTransport)
        }
        let rowsOf = try prepare(step: step, version: version, params: params, range: range)
        let total = plan.microBatches(step: step)
        let cover = GradientTree.cover(range, total: total)
        let known = try parallelSums(cover, total: total, version: version, rowsOf: rowsOf)
        return try GradientTree.encode(nodes: cover, parameters: parameterCount) { node, dst in
            if let known {
                let s = GradientTree.sum(node, total: total, known: known)
                s.values.withUnsafeBytes { dst.copyMemory(from: $0) }
                return (s.loss, s.correct, s.rows)
            }
            if node.level == 0 {
                // The backward pass writes the gradients into the message itself; nothing keeps pointing there after.
                let inPlace = MLModels.gradientBuffers(model.parameters, in: dst)
                defer { if inPlace { for p in model.parameters { p.gradientBuffer = nil; p.zeroGrad() } } }
                let s = try backward(rowsOf(Int(node.index)), on: model)
                MLModels.writeGradients(model.parameters, into: dst)
                return s
            }
            let s = try self.subtree(node, total: total, rowsOf: rowsOf, on: self.model)
            s.values.withUnsafeBytes { dst.copyMemory(from: $0) }
            return (s.loss, s.correct, s.rows)
        }
    }

    /// Partial sums for micro-batches `range` of `step` with parameters `params` (version `version`).
    public func compute(step: Int, version: UInt32, params: Frame, range: Range<Int>) throws -> [(TreeNode, GradientSum)] {
        let rowsOf = try prepare(step: step, version: version, params: params, range: range)
        let total = plan.microBatches(step: step)
        let cover = GradientTree.cover(range, total: total)
        if let known = try parallelSums(cover, total: total, version: version, rowsOf: rowsOf) {
            return cover.map { ($0, GradientTree.sum($0, total: total, known: known)) }
        }
        return try cover.map { node in
            (node, try self.subtree(node, total: total, rowsOf: rowsOf, on: self.model))
        }
    }

    /// The cover's subtrees summed on the free lanes (nil when there is one lane or one micro-batch: the caller
    /// computes on its own thread, straight into the message where it can).
    func parallelSums(_ cover: [TreeNode], total: Int, version: UInt32, rowsOf: @escaping @Sendable (Int) -> [Int]) throws -> [TreeNode: GradientSum]? {
        let leaves = cover.reduce(0) { $0 + $1.span(total: total).count }
        let want = min(leaves, 1 + lanes.free)
        guard want >= 2 else { return nil }
        let nodes = GradientTree.lanes(cover, total: total, lanes: want)
        let results = Mutex<[TreeNode: GradientSum]>([:])
        try lanes.forEach(nodes.count, maxThreads: want) { k in
            let m = try self.takeReplica(version: version)
            defer { self.putReplica(m, version: version) }
            let s = try self.subtree(nodes[k], total: total, rowsOf: rowsOf, on: m)
            results.withLock { $0[nodes[k]] = s }
        }
        return results.withLock { $0 }
    }

    func takeReplica(version: UInt32) throws -> Layer {
        let r = replicas.take()
        let m = try r?.model ?? Self.newModel(spec)
        if r?.version != version, let p = params { try MLModels.assign(m.parameters, from: p) }
        return m
    }

    func putReplica(_ m: Layer, version: UInt32) {
        for p in m.parameters { p.zeroGrad() }
        replicas.put(m, version: version)
    }

    /// Points the model (and its idle copies) at weights of `version`.
    func load(_ params: Frame, version: UInt32) throws {
        try MLModels.assign(model.parameters, from: params)
        loadedVersion = version
        self.params = params
        // (idle copies move to the new version too: none keeps an old PARAMS frame, or its shared-memory segment)
        try replicas.moveAll(to: version) { try MLModels.assign($0.parameters, from: params) }
    }

    /// Checks the range, loads the parameters if they are a new version; returns micro-batch j's row indices.
    func prepare(step: Int, version: UInt32, params: Frame, range: Range<Int>) throws -> @Sendable (Int) -> [Int] {
        let total = plan.microBatches(step: step)
        guard range.lowerBound >= 0, range.upperBound <= total, !range.isEmpty else {
            throw JobError("micro-batches \(range) outside step \(step)'s 0..<\(total)")
        }
        if loadedVersion != version { try load(params, version: version) }
        currentStep = step
        let epoch = step / plan.stepsPerEpoch
        if epoch != cachedEpoch {
            cachedOrder = plan.epochOrder(epoch)
            cachedEpoch = epoch
        }
        let rows = plan.batchRange(step: step)
        let m = spec.microBatch
        let order = cachedOrder
        return { j in
            let lo = rows.lowerBound + j * m, hi = min(lo + m, rows.upperBound)
            return Array(order[lo..<hi])
        }
    }

    /// The value of `node` — `GradientTree.sum`'s additions, in its order — with less memory traffic: a left leaf's
    /// backward pass writes its gradient straight into the subtree's buffer, and a right leaf's is added from the
    /// model's own gradient buffers, never copied into a vector of its own (a step's gradient is megabytes, and
    /// copying it per micro-batch made lanes wait on memory).
    func subtree(_ node: TreeNode, total: Int, rowsOf: (Int) -> [Int], on model: Layer) throws -> GradientSum {
        if node.level == 0 { return try leaf(rowsOf(Int(node.index)), on: model) }
        let left = TreeNode(level: node.level - 1, index: node.index * 2)
        let right = TreeNode(level: node.level - 1, index: node.index * 2 + 1)
        var l = try subtree(left, total: total, rowsOf: rowsOf, on: model)
        guard right.span(total: total).lowerBound < total else { return l }
        if right.level > 0 {
            l += try subtree(right, total: total, rowsOf: rowsOf, on: model)
            return l
        }
        // l + leaf(right), element by element in parameter order: the same additions as through a leaf vector. The
        // right leaf's gradient goes into this model's own scratch vector, the same memory every time (it stays in
        // cache; a fresh vector per micro-batch was megabytes of new memory per leaf).
        let buf = scratches.buffer(for: model, count: parameterCount)
        let raw = UnsafeMutableRawBufferPointer(buf)
        let inPlace = MLModels.gradientBuffers(model.parameters, in: raw)
        defer { if inPlace { for p in model.parameters { p.gradientBuffer = nil; p.zeroGrad() } } }
        let s = try backward(rowsOf(Int(right.index)), on: model)
        MLModels.writeGradients(model.parameters, into: raw)
        l.values.withUnsafeMutableBufferPointer { o in
            for i in 0..<o.count { o[i] += buf[i] }
        }
        l.loss += s.loss
        l.correct += s.correct
        l.rows += s.rows
        return l
    }

    /// One micro-batch on `model`: gradient of the summed cross-entropy (mean × rows), the loss sum and correct count;
    /// the backward pass writes the gradient straight into the returned vector.
    func leaf(_ idx: [Int], on model: Layer) throws -> GradientSum {
        let n = parameterCount
        var stats: (loss: Double, correct: UInt64, rows: UInt64) = (0, 0, 0)
        let values = try [Float](unsafeUninitializedCapacity: n) { buf, initialized in
            let out = UnsafeMutableRawBufferPointer(buf)
            let inPlace = MLModels.gradientBuffers(model.parameters, in: out)
            defer { if inPlace { for p in model.parameters { p.gradientBuffer = nil; p.zeroGrad() } } }
            stats = try backward(idx, on: model)
            MLModels.writeGradients(model.parameters, into: out)
            initialized = n
        }
        return GradientSum(values: values, loss: stats.loss, correct: stats.correct, rows: stats.rows)
    }

    /// Forward and backward over rows `idx` on `model`, the gradients left on its parameters: the loss sum, correct
    /// count, rows.
    func backward(_ idx: [Int], on model: Layer) throws -> (loss: Double, correct: UInt64, rows: UInt64) {
        let (x, y) = data.batch(idx)
        // Dropout masks from (seed, step, row, layer) alone: the same whichever process or lane computes the row.
        let dropouts = Dropout.all(in: model)
        for (k, d) in dropouts.enumerated() { d.rowSeeds = idx.map { TrainPlan.dropoutSeed(spec.seed, step: currentStep, row: $0, layer: k) } }
        defer { for d in dropouts { d.rowSeeds = nil } }
        let g = Graph()
        let logits = model(g.constant(x))
        // (cross-entropy over classes, or a regression's mean squared error against the rows' targets)
        let loss = spec.isRegression ? logits.mse(g.constant(data.targetBatch(idx))) : logits.crossEntropy(y)
        for p in model.parameters { p.zeroGrad() }
        g.backward(from: loss.scaled(Float(idx.count)))
        let lossSum = Double(loss.value.item) * Double(idx.count)
        guard lossSum.isFinite else { throw JobError("loss is not finite (\(lossSum)) at rows \(idx.prefix(4))…; lower the learning rate") }
        return (lossSum, spec.isRegression ? 0 : UInt64(Metrics.correct(logits: logits.value, labels: y)), UInt64(idx.count))
    }
}

/// Idle model copies of a `TrainWorker`, with the parameter version each holds (lanes take and return them).
final class ReplicaPool: @unchecked Sendable {
    private var free: [(model: Layer, version: UInt32?)] = []
    private let lock = NSLock()

    func take() -> (model: Layer, version: UInt32?)? { lock.withLock { free.popLast() } }
    func put(_ m: Layer, version: UInt32) { lock.withLock { free.append((m, version)) } }
    func moveAll(to version: UInt32, _ load: (Layer) throws -> Void) rethrows {
        try lock.withLock {
            for k in free.indices {
                try load(free[k].model)
                free[k].version = version
            }
        }
    }
}

/// One gradient-sized vector per model copy, kept for the worker's life (freed with it).
final class GradientScratch: @unchecked Sendable {
    private var buffers: [ObjectIdentifier: UnsafeMutableBufferPointer<Float>] = [:]
    private let lock = NSLock()

    func buffer(for model: Layer, count: Int) -> UnsafeMutableBufferPointer<Float> {
        lock.withLock {
            if let b = buffers[ObjectIdentifier(model)], b.count == count { return b }
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
            b.initialize(repeating: 0)
            buffers[ObjectIdentifier(model)] = b
            return b
        }
    }

    deinit { for b in buffers.values { b.deallocate() } }
}

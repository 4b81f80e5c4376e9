/// A Float32 tensor: a shape over contiguous row-major storage. Value semantics: operations return new tensors,
/// and in-place updates (`withMutableData`) copy first if the storage is shared.
public struct Tensor: @unchecked Sendable {
    public private(set) var shape: [Int]
    @usableFromInline var storage: TensorStorage

    /// Zero-filled.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *))
    }

    /// Storage left uninitialised: for kernels that write every element.
    init(uninitialized shape: [Int]) {
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *), zeroed: false)
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(zeros: shape)
        if value != 0 { storage.pointer.update(repeating: value, count: count) }
    }

    public init(shape: [Int], _ values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) needs \(shape.reduce(1, *)) values, got \(values.count)")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A tensor filled by `body` writing `count` values.
    public init(shape: [Int], fill body: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        self.init(zeros: shape)
        try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    public static func scalar(_ v: Float) -> Tensor { Tensor(shape: [], [v]) }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }
    /// The single value of a one-element tensor.
    public var item: Float {
        precondition(count == 1, "item of a tensor of \(count) values")
        return storage.pointer[0]
    }

    @inlinable
    public func withData<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// A tensor over `count` floats at `pointer` that belong to `owner` (kept alive while the tensor is): no copy.
    /// Such a tensor is read-only — `withMutableData` copies it first. The memory must not change while `owner` is
    /// held (a worker's parameters read straight from the PARAMS message).
    public init(borrowing pointer: UnsafePointer<Float>, shape: [Int], owner: AnyObject) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        storage = TensorStorage(borrowing: pointer, count: shape.reduce(1, *), owner: owner)
    }

    /// The owner of borrowed memory whose lifetime the caller manages (e.g. a gradient written into a message).
    public static let externalMemory: AnyObject & Sendable = ExternalMemory()
    final class ExternalMemory: Sendable {}

    /// Whether this tensor's values are stored at `address` (it reads that memory, no copy).
    public func isStored(at address: UnsafeRawPointer?) -> Bool {
        address != nil && UnsafeRawPointer(storage.pointer) == address
    }

    /// Whether this tensor reads memory it does not own (`init(borrowing:shape:owner:)`).
    public var isBorrowed: Bool { storage.owner != nil }

    /// Mutable access; copies the storage first if another tensor shares it or it is borrowed.
    public mutating func withMutableData<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) || storage.owner != nil { storage = storage.copy() }
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// The same values under another shape (no copy).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        var t = self
        t.shape = newShape
        return t
    }

    public subscript(_ i: Int) -> Float {
        get { storage.pointer[i] }
    }
}

extension Tensor: Equatable {
    public static func == (a: Tensor, b: Tensor) -> Bool { a.shape == b.shape && a.scalars == b.scalars }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = scalars.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(\(shape): [\(head)\(count > 8 ? ", …" : "")])"
    }
}

/// Owned, 64-byte aligned Float storage — or memory borrowed from an `owner` (read-only).
public final class TensorStorage {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// Set when the memory is borrowed: what keeps it alive (never freed here).
    let owner: AnyObject?

    init(borrowing pointer: UnsafePointer<Float>, count: Int, owner: AnyObject) {
        self.pointer = UnsafeMutablePointer(mutating: pointer)
        self.count = count
        self.owner = owner
    }

    /// Keep freed tensor buffers in the heap instead of returning them to the kernel: otherwise every large
    /// temporary (> 128 KiB, glibc's default) is a fresh mmap whose pages the kernel faults in and zeroes —
    /// measured at 12 % of an embedding run. Process-wide, set once.
    /// Call early (before threads allocate) so every thread shares the tuned heap.
    public static func tuneHeap() { _ = heapTuned }

    /// Gives the heap's free pages back to the system: the tuned heap keeps up to 1 GiB of freed blocks for reuse,
    /// which a process that just let go of a large result does not want.
    public static func releaseFreeMemory() { csys_release_free_memory() }

    private static let heapTuned: Bool = {
        csys_tune_heap(512 << 20, 1 << 30)
        return true
    }()

    init(count: Int, zeroed: Bool = true) {
        _ = TensorStorage.heapTuned
        self.count = count
        owner = nil
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(1, count))
        if zeroed { pointer.initialize(repeating: 0, count: max(1, count)) }
    }

    func copy() -> TensorStorage {
        let s = TensorStorage(count: count, zeroed: false)
        s.pointer.update(from: pointer, count: count)
        return s
    }

    deinit { if owner == nil { UnsafeMutableRawPointer(pointer).deallocate() } }
}

/// Seeded pseudo-random numbers (SplitMix64), so initialisation is reproducible: Sigma's one seeded generator (weight
/// initialisation, dropout, the simulator's data, and — through `mix` — map-reduce's counter-based inputs).
public struct SeededRandom: RandomNumberGenerator {
    /// SplitMix64's increment (the golden ratio, 2⁶⁴ / φ).
    public static let gamma: UInt64 = 0x9E3779B97F4A7C15
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= Self.gamma
        return Self.mix(state)
    }

    /// SplitMix64's finaliser: a well-mixed 64-bit value from any 64-bit state.
    @inline(__always)
    public static func mix(_ z0: UInt64) -> UInt64 {
        var z = z0
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Float { Float(next() >> 40) * 0x1p-24 }
}

extension Tensor {
    /// Uniform in [low, high).
    public static func uniform(_ shape: [Int], low: Float, high: Float, rng: inout SeededRandom) -> Tensor {
        Tensor(shape: shape) { b in for i in b.indices { b[i] = low + (high - low) * rng.unit() } }
    }

    /// Normal(0, std) by Box–Muller.
    public static func normal(_ shape: [Int], std: Float, rng: inout SeededRandom) -> Tensor {
        Tensor(shape: shape) { b in
            for i in b.indices {
                let u1 = max(rng.unit(), 1e-7), u2 = rng.unit()
                b[i] = std * (-2 * logf(u1)).squareRoot() * cosf(2 * .pi * u2)
            }
        }
    }
}

import CSysShims
import Glibc

extension Tensor {
    /// Rows `range` of the leading axis, copied (e.g. the query block of a fused QKV projection).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "rows \(range) of \(shape)")
        let inner = count / max(1, shape[0])
        var s = shape
        s[0] = range.count
        return withData { p in Tensor(shape: s, Array(p[(range.lowerBound * inner)..<(range.upperBound * inner)])) }
    }
}

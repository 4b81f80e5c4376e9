import Foundation
import Synchronization

/// One ZeroMQ message part. Immutable, reference-counted bytes that can be handed to the transport without a
/// copy: the memory is either owned here (allocated and freed by `Frame`) or lent by someone else (a received
/// `zmq_msg_t`) and returned through `release` when the last reference goes away.
public struct Frame: Sendable {
    @usableFromInline let storage: Storage

    public final class Storage: @unchecked Sendable {
        // Immutable after init; safe to share between threads.
        public let base: UnsafeRawPointer?
        public let count: Int
        let release: (@Sendable (UnsafeRawPointer?) -> Void)?
        /// Set when the bytes live in memory a `SharedFrameAllocator` handed out (what it handed out).
        public let shared: (any Sendable & AnyObject)?

        init(base: UnsafeRawPointer?, count: Int, release: (@Sendable (UnsafeRawPointer?) -> Void)?, shared: (any Sendable & AnyObject)? = nil) {
            self.base = base
            self.count = count
            self.release = release
            self.shared = shared
        }

        deinit { release?(base) }
    }

    /// Copies `bytes`.
    public init(_ bytes: [UInt8]) {
        self = Frame(count: bytes.count) { buffer in
            bytes.withUnsafeBytes { src in
                if let s = src.baseAddress, let d = buffer.baseAddress { d.copyMemory(from: s, byteCount: src.count) }
            }
        }
    }

    /// Copies `bytes`.
    public init(_ bytes: UnsafeRawBufferPointer) {
        self = Frame(count: bytes.count) { buffer in
            if let s = bytes.baseAddress, let d = buffer.baseAddress { d.copyMemory(from: s, byteCount: bytes.count) }
        }
    }

    /// Allocates `count` bytes and lets `fill` write them (the whole buffer must be initialised).
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        if count == 0 {
            storage = Storage(base: nil, count: 0, release: nil)
            return
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
        do {
            try fill(UnsafeMutableRawBufferPointer(start: p, count: count))
        } catch {
            p.deallocate()
            throw error
        }
        storage = Storage(base: UnsafeRawPointer(p), count: count) { $0.map { UnsafeMutableRawPointer(mutating: $0).deallocate() } }
    }

    /// Like `init(count:fill:)`, but in memory that same-host peers can map (`Frame.sharedAllocator`, when the
    /// process installed one and it has room), so the transport can hand the frame over without copying it.
    /// For large payloads that go to several peers or cross a link as they are (PARAMS, gradient results).
    /// `allocator`: this one instead of the process's.
    public init(shareable count: Int, in allocator: (any SharedFrameAllocator)? = nil, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        if let a = allocator ?? Frame.sharedAllocator.withLock({ $0 }), let r = a.reserve(count: count) {
            do {
                try fill(UnsafeMutableRawBufferPointer(start: r.base, count: count))
            } catch {
                r.release(UnsafeRawPointer(r.base))
                throw error
            }
            self.init(storage: Storage(base: UnsafeRawPointer(r.base), count: count, release: r.release, shared: r.owner))
            return
        }
        try self.init(count: count, fill: fill)
    }

    /// Installed once per process by the transport (same-host shared memory); nil: `init(shareable:)` allocates
    /// normally.
    public static let sharedAllocator = Mutex<(any SharedFrameAllocator)?>(nil)

    init(storage: Storage) { self.storage = storage }

    /// Wraps memory owned elsewhere; `release` runs once, when the last copy of this frame is gone.
    public init(borrowing base: UnsafeRawPointer?, count: Int, release: @escaping @Sendable (UnsafeRawPointer?) -> Void) {
        storage = Storage(base: base, count: count, release: release)
    }

    public static let empty = Frame(count: 0) { _ in }

    public var count: Int { storage.count }
    public var isEmpty: Bool { storage.count == 0 }

    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.base, count: storage.count))
    }

    /// A copy of the bytes as an array.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Keeps the storage alive; used by the transport for zero-copy sends.
    public var retainedStorage: Storage { storage }
}

extension Frame: Equatable {
    public static func == (a: Frame, b: Frame) -> Bool {
        a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
    }
}

extension Frame: CustomStringConvertible {
    public var description: String { "Frame(\(count) bytes)" }
}

/// Hands out memory for `Frame(shareable:fill:)` that same-host peers can map.
public protocol SharedFrameAllocator: Sendable {
    /// `count` writable bytes, what to call when the frame is gone, and a token carriers recognise; nil when there
    /// is no room (the frame is then allocated normally).
    func reserve(count: Int) -> (base: UnsafeMutableRawPointer, release: @Sendable (UnsafeRawPointer?) -> Void, owner: any Sendable & AnyObject)?
}

/// Compresses payload frames (the transport provides LZ4). Pure functions; safe from any thread.
/// Moves large payloads around the socket (same-host shared memory): `carry` returns a small reference frame to
/// send instead of the bytes (nil: send the bytes), `resolve` turns a received reference back into the bytes.
public protocol PayloadCarrier: Sendable {
    func carry(_ frame: Frame) -> Frame?
    /// Throws (never crashes) on a reference that does not name a valid payload of at most `limit` bytes.
    func resolve(_ reference: Frame, limit: Int) throws -> Frame
}

public protocol PayloadCompressor: Sendable {
    /// The compressed frame, or nil when compression does not pay for this frame.
    func compress(_ frame: Frame) -> Frame?
    /// Inverse of `compress`; throws (never crashes) on corrupt input or output larger than `limit` bytes.
    func decompress(_ frame: Frame, limit: Int) throws -> Frame
}

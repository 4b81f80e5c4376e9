import CSysShims
import Foundation
import SigmaModel
import Synchronization

/// Same-host payloads through shared memory (docs/protocol.md §6). Two peers that see the same `/dev/shm` (same
/// kernel boot, same tmpfs mount, same user) agree on it at registration; a payload of at least `threshold` bytes
/// is then copied once into a segment the sender owns and reuses, and the message carries only a reference
/// (name, generation, size). The receiver maps the segment once and reads the payload in place; when its frame is
/// released it clears the segment's busy word, and the sender may reuse the segment.
public enum SharedMemory {
    public static let directory = "/dev/shm"
    static let prefix = "sigma-shm-"
    /// Segment header: magic u64 | busy u64 | generation u64 | size u64, padded to a page.
    static let headerSize = 4096
    static let magic: UInt64 = 0x5347_534D_0000_0001
    static let referenceMagic: UInt32 = 0x314D_4853   // "SHM1"
    /// Payloads at least this large go through shared memory between a worker and the coordinator.
    public static let threshold = 1 << 20
    /// Payloads at least this large go through shared memory between two members of a collective step on one
    /// machine — their slices are the model split W ways, so they shrink as members are added (a 1.3 M-parameter
    /// model's slice is 376 KB at 14 members), and loopback TCP costs each member two copies and the kernel's work
    /// per byte, a pool frame by reference none.
    public static let meshThreshold = 64 << 10

    /// What the process's pool may hold in segments: a quarter of `/dev/shm` (a container's may be 64 MiB), at least
    /// one 1 MiB segment.
    public static let poolBudget: Int = {
        var st = statvfs()
        guard statvfs(directory, &st) == 0 else { return 1 << 30 }
        return max(1 << 20, Int(st.f_blocks) * Int(st.f_frsize) / 4)
    }()

    /// What a peer must also see for shared memory to work between us; nil when `/dev/shm` is not usable here
    /// or `SIGMA_SHM=0` turns it off.
    public static let hostKey: String? = {
        if ProcessInfo.processInfo.environment["SIGMA_SHM"] == "0" { return nil }
        guard let boot = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8) else { return nil }
        var st = stat()
        guard stat(directory, &st) == 0 else { return nil }
        // Can we create segments at all (a read-only or full /dev/shm)?
        let probe = directory + "/" + prefix + "\(getpid())-probe"
        let fd = open(probe, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return nil }
        close(fd)
        unlink(probe)
        sweepStale()
        return "\(boot.trimmingCharacters(in: .whitespacesAndNewlines)):\(st.st_dev):\(st.st_ino):\(geteuid())"
    }()

    /// The HELLO feature a worker offers: `shm=<host key>`.
    public static var feature: String? { hostKey.map { "shm=\($0)" } }

    /// Whether a peer's comma-separated features offer shared memory we can use.
    public static func offered(in features: String) -> Bool {
        guard let key = feature else { return false }
        return features.split(separator: ",").contains { $0 == key }
    }

    static let counter = Atomic<UInt64>(0)

    static func newName() -> String { prefix + "\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)" }

    /// A name we accept from a peer: our prefix, then digits and dashes only (no path).
    static func validName(_ name: String) -> Bool {
        name.hasPrefix(prefix) && name.count <= 64 && name.dropFirst(prefix.count).allSatisfy { $0.isASCII && ($0.isNumber || $0 == "-") }
    }

    /// Removes segments left behind by processes that no longer exist (a SIGKILLed worker cannot clean up).
    static func sweepStale() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for n in names where n.hasPrefix(prefix) {
            guard let pid = n.dropFirst(prefix.count).split(separator: "-").first.flatMap({ Int32($0) }) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(directory + "/" + n) }
        }
    }

    /// The message that stands for `count` payload bytes at the start of segment `s`'s payload area, for the
    /// reader whose bit in the busy word is `reader`.
    static func reference(_ s: Segment, count: Int, reader: UInt64) -> Frame {
        var w = ByteWriter(capacity: 64)
        w.u32(referenceMagic); w.string(s.name); w.u64(s.generation); w.u64(UInt64(count)); w.u64(reader)
        return Frame(w.bytes)
    }

    /// A reference's (name, generation, size, reader).
    static func parse(_ reference: Frame) throws -> (String, UInt64, UInt64, UInt64) {
        try reference.read { r -> (String, UInt64, UInt64, UInt64) in
            guard try r.u32("shm.magic") == referenceMagic else { throw SharedMemoryError("not a shared-memory reference") }
            return (try r.string("shm.name"), try r.u64("shm.generation"), try r.u64("shm.size"), try r.u64("shm.reader"))
        }
    }

    /// Reader bits for links (one per carrier, 64 at most per process): a pool segment's busy word has one bit per
    /// link reading it, so a link that ends can take its bits back even when its peer died holding a reference.
    static let readerBits = Mutex<UInt64>(0)
    static func takeReaderBit() -> UInt64 {
        readerBits.withLock { used in
            guard used != .max else { return 0 }
            let bit = UInt64(1) << UInt64((~used).trailingZeroBitCount)
            used |= bit
            return bit
        }
    }
    static func returnReaderBit(_ bit: UInt64) { readerBits.withLock { $0 &= ~bit } }

    /// A segment this process writes: created, mapped, reused, unlinked when dropped.
    final class Segment {
        let name: String
        let base: UnsafeMutableRawPointer
        let length: Int
        var generation: UInt64 = 0

        let directory: String

        init?(payloadCapacity: Int, directory: String) {
            name = SharedMemory.newName()
            self.directory = directory
            let path = directory + "/" + name
            length = SharedMemory.headerSize + payloadCapacity
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            // posix_fallocate, not just ftruncate: the pages are reserved now, or we learn now that /dev/shm is
            // full (a container's default is 64 MiB) — writing to a sparse file on a full tmpfs is a SIGBUS.
            guard posix_fallocate(fd, 0, off_t(length)) == 0,
                  let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                unlink(path)
                return nil
            }
            base = p
            word(0).pointee = SharedMemory.magic
        }

        deinit {
            munmap(base, length)
            unlink(directory + "/" + name)
        }

        func word(_ i: Int) -> UnsafeMutablePointer<UInt64> { base.advanced(by: i * 8).assumingMemoryBound(to: UInt64.self) }
        var capacity: Int { length - SharedMemory.headerSize }
        var busy: Bool { csys_atomic_load_u64(word(1)) != 0 }
    }

    /// A peer's segment, mapped here; unmapped when the last frame reading it is gone.
    final class Mapping: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let length: Int
        init(base: UnsafeMutableRawPointer, length: Int) {
            self.base = base
            self.length = length
        }
        deinit { munmap(base, length) }
        func word(_ i: Int) -> UnsafeMutablePointer<UInt64> { base.advanced(by: i * 8).assumingMemoryBound(to: UInt64.self) }
    }
}

/// Segments this process writes payloads into directly (`Frame(shareable:fill:)`: PARAMS, gradient results), so
/// a carrier sends such a frame by reference without copying it — to any number of same-host peers at once: the
/// segment's busy word counts the readers (each reference sent adds one, each receiver's release takes one away).
/// A segment is reused once its frame is gone here and no reader holds it. At most `maxSegments` of at most
/// `maxBytes` in all; beyond that (or when `/dev/shm` is full) frames are allocated normally and carriers copy as
/// before. A reader that dies holding a reference keeps its segment busy until this process exits (bounded by both).
/// (64 segments: a collective member's frames of a step — a slice of its partial sums for each other member and its
/// updated slice — and the previous step's, still being read, at 14 or more members on one machine.)
public final class SharedMemoryPool: SharedFrameAllocator, @unchecked Sendable {
    /// One segment and whether a frame here still uses it (guarded by the pool's lock).
    final class Pooled: @unchecked Sendable {
        let segment: SharedMemory.Segment
        var inUse = false
        init(_ s: SharedMemory.Segment) { segment = s }
    }
    // @unchecked: `segments` and each `Pooled.inUse` are only touched under this lock.
    private let lock = Mutex<Void>(())
    private var segments: [Pooled] = []
    public let directory: String
    public let maxSegments: Int
    public let maxBytes: Int
    public let threshold: Int

    public init(directory: String = SharedMemory.directory, maxSegments: Int = 64, maxBytes: Int = SharedMemory.poolBudget,
                threshold: Int = SharedMemory.meshThreshold) {
        self.directory = directory
        self.maxSegments = maxSegments
        self.maxBytes = maxBytes
        self.threshold = threshold
    }

    /// The process's pool, installed as `Frame.sharedAllocator` by `install()`.
    public static let shared = SharedMemoryPool()

    /// Makes `Frame(shareable:)` use the process's pool (once; segments are unlinked at exit). No-op when shared
    /// memory is off or unusable here.
    public static func install() {
        guard SharedMemory.hostKey != nil else { return }
        Frame.sharedAllocator.withLock { a in
            if a == nil {
                a = shared
                atexit { SharedMemoryPool.shared.unlinkAll() }
            }
        }
    }

    public func reserve(count: Int) -> (base: UnsafeMutableRawPointer, release: @Sendable (UnsafeRawPointer?) -> Void, owner: any Sendable & AnyObject)? {
        guard count >= threshold else { return nil }
        return lock.withLock { _ in
            var pick = segments.filter { !$0.inUse && !$0.segment.busy && $0.segment.capacity >= count }.min { $0.segment.capacity < $1.segment.capacity }
            if pick == nil {
                // (whole MiB from 1 MiB, whole 64 KiB below: a segment serves the next frames of about its size)
                let unit = count >= 1 << 20 ? 1 << 20 : 64 << 10
                let rounded = (count + unit - 1) & ~(unit - 1)
                var bytes = segments.reduce(0) { $0 + $1.segment.capacity }
                // Free segments too small for this frame make room for it, smallest first.
                while segments.count >= maxSegments || bytes + rounded > maxBytes {
                    let free = segments.indices.filter { !segments[$0].inUse && !segments[$0].segment.busy }
                    guard let i = free.min(by: { segments[$0].segment.capacity < segments[$1].segment.capacity }) else { return nil }
                    bytes -= segments[i].segment.capacity
                    segments.remove(at: i)
                }
                guard let s = SharedMemory.Segment(payloadCapacity: rounded, directory: directory) else { return nil }
                pick = Pooled(s)
                segments.append(pick!)
            }
            let p = pick!, s = p.segment
            p.inUse = true
            s.generation &+= 1
            s.word(2).pointee = s.generation
            s.word(3).pointee = UInt64(count)
            csys_atomic_store_u64(s.word(1), 0)
            return (s.base.advanced(by: SharedMemory.headerSize), { [self] _ in lock.withLock { _ in p.inUse = false } }, p)
        }
    }

    /// (segments, of which a frame here or a reader still uses)
    public var counts: (segments: Int, inUse: Int) {
        lock.withLock { _ in (segments.count, segments.filter { $0.inUse || $0.segment.busy }.count) }
    }

    /// Clears `reader`'s bit in segment `name` if it still holds `generation` (a reference that was never delivered).
    func withdraw(name: String, generation: UInt64, reader: UInt64) {
        lock.withLock { _ in
            for p in segments where p.segment.name == name && p.segment.generation == generation {
                _ = csys_atomic_and_u64(p.segment.word(1), ~reader)
            }
        }
    }

    func unlinkAll() {
        lock.withLock { _ in for p in segments { unlink(p.segment.directory + "/" + p.segment.name) } }
    }
}

/// What went wrong resolving a shared-memory reference.
public struct SharedMemoryError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ s: String) { description = s }
}

/// One link's shared memory, both directions: segments this side writes for the peer (at most `maxSegments`;
/// when all are busy the payload goes through the socket as usual) and the peer's segments mapped here.
public final class SharedMemoryCarrier: PayloadCarrier, @unchecked Sendable {
    struct State {
        var mappings: [String: SharedMemory.Mapping] = [:]
        var mappingOrder: [String] = []
        var carried: UInt64 = 0
        var fellBack: UInt64 = 0
        var byReference: UInt64 = 0
    }
    // @unchecked: every access to `state` goes through this lock.
    private let lock = Mutex<Void>(())
    private var state = State()
    public let threshold: Int
    public let maxSegments: Int
    /// Where segments live (`/dev/shm`; tests use a small tmpfs of their own).
    public let directory: String
    /// Peer segments kept mapped (16 on a link to one peer; a mesh that reads from many peers keeps more).
    let maxMappings: Int
    /// This link's bit in pool segments' busy words (0: none left — pool frames are then copied like any other).
    let readerBit: UInt64
    /// Pool segments this link sent references to: when the link ends, its bit is cleared in each (a peer that
    /// died holding a reference would otherwise keep the segment busy for good).
    private var referenced: [ObjectIdentifier: SharedMemoryPool.Pooled] = [:]

    /// The segments this link copies payloads into (unlinked with the carrier).
    private let own: SharedMemoryPool

    public init(threshold: Int = SharedMemory.threshold, maxSegments: Int = 4, directory: String = SharedMemory.directory, maxMappings: Int = 16) {
        self.threshold = threshold
        self.maxMappings = maxMappings
        self.maxSegments = maxSegments
        self.directory = directory
        own = SharedMemoryPool(directory: directory, maxSegments: maxSegments, threshold: 0)
        readerBit = SharedMemory.takeReaderBit()
    }

    deinit {
        // A reference still held when the link ends: the segment is freed from this reader, and the bit is retired
        // for good — should the peer be alive after all and release late, it clears a bit no other link uses.
        var stillHeld = false
        for p in referenced.values where csys_atomic_load_u64(p.segment.word(1)) & readerBit != 0 {
            _ = csys_atomic_and_u64(p.segment.word(1), ~readerBit)
            stillHeld = true
        }
        if readerBit != 0 && !stillHeld { SharedMemory.returnReaderBit(readerBit) }
    }

    /// (payloads sent through shared memory, large payloads that went through the socket because every segment was
    /// busy, payloads sent by reference to a pool segment without a copy — included in `carried`)
    public var counts: (carried: UInt64, fellBack: UInt64, byReference: UInt64) {
        lock.withLock { _ in (state.carried, state.fellBack, state.byReference) }
    }

    /// Takes back a reference `carry` made that will never reach the peer (its message was dropped before it was
    /// sent): the reader's bit is cleared, so the segment can be reused.
    public func withdraw(_ reference: Frame) {
        guard let (name, generation, _, reader) = try? SharedMemory.parse(reference) else { return }
        lock.withLock { _ in
            for p in referenced.values where p.segment.name == name && p.segment.generation == generation {
                _ = csys_atomic_and_u64(p.segment.word(1), ~reader)
            }
        }
        own.withdraw(name: name, generation: generation, reader: reader)
    }

    public func carry(_ frame: Frame) -> Frame? {
        guard frame.count >= threshold else { return nil }
        // Already in a pool segment (written there by its producer): this link's reader bit set, no copy. (Not
        // when the bit is already set: the peer still holds an earlier reference to the same frame — copy then.)
        if readerBit != 0, let p = frame.retainedStorage.shared as? SharedMemoryPool.Pooled, p.segment.directory == directory,
           frame.retainedStorage.base == UnsafeRawPointer(p.segment.base.advanced(by: SharedMemory.headerSize)),
           p.segment.word(3).pointee == UInt64(frame.count),
           csys_atomic_load_u64(p.segment.word(1)) & readerBit == 0 {
            _ = csys_atomic_or_u64(p.segment.word(1), readerBit)
            lock.withLock { _ in
                state.carried += 1
                state.byReference += 1
                // (forget segments our peer has released: nothing to clear for them when the link ends)
                referenced = referenced.filter { csys_atomic_load_u64($0.value.segment.word(1)) & readerBit != 0 }
                referenced[ObjectIdentifier(p)] = p
            }
            return SharedMemory.reference(p.segment, count: frame.count, reader: readerBit)
        }
        // Otherwise copied once into one of this link's own segments (a private pool: same choice of segment);
        // the peer's bit keeps it busy until the peer releases it.
        guard let r = own.reserve(count: frame.count), let p = r.owner as? SharedMemoryPool.Pooled else {
            lock.withLock { _ in state.fellBack += 1 }
            return nil
        }
        frame.withUnsafeBytes { src in
            if let b = src.baseAddress { r.base.copyMemory(from: b, byteCount: src.count) }
        }
        csys_atomic_store_u64(p.segment.word(1), 1)
        r.release(nil)   // no frame here uses it: only the peer's bit holds it now
        lock.withLock { _ in state.carried += 1 }
        return SharedMemory.reference(p.segment, count: frame.count, reader: 1)
    }

    public func resolve(_ reference: Frame, limit: Int) throws -> Frame {
        let (name, generation, size, reader) = try SharedMemory.parse(reference)
        guard reader != 0, reader & (reader - 1) == 0 else { throw SharedMemoryError("segment \(name): reader \(reader) is not a single bit") }
        guard SharedMemory.validName(name) else { throw SharedMemoryError("bad segment name '\(name.prefix(80))'") }
        guard size <= UInt64(limit) else { throw SharedMemoryError("segment \(name): payload of \(size) bytes exceeds the limit \(limit)") }
        let m = try lock.withLock { _ in try mapping(name) }
        let n = Int(size)
        guard m.length >= SharedMemory.headerSize + n else { throw SharedMemoryError("segment \(name): \(size) bytes do not fit its \(m.length - SharedMemory.headerSize)") }
        guard m.word(0).pointee == SharedMemory.magic else { throw SharedMemoryError("segment \(name): bad magic") }
        guard m.word(2).pointee == generation, m.word(3).pointee == size, csys_atomic_load_u64(m.word(1)) & reader != 0 else {
            throw SharedMemoryError("segment \(name): holds generation \(m.word(2).pointee) (\(m.word(3).pointee) bytes), the message names \(generation) (\(size) bytes)")
        }
        // (the busy word has a bit per reader: a pool segment may be read by several peers at once)
        return Frame(borrowing: UnsafeRawPointer(m.base.advanced(by: SharedMemory.headerSize)), count: n) { _ in
            _ = csys_atomic_and_u64(m.word(1), ~reader)
        }
    }

    /// Maps a peer's segment (once; the last few stay mapped so reuse costs no page faults).
    private func mapping(_ name: String) throws -> SharedMemory.Mapping {
        if let m = state.mappings[name] { return m }
        let path = directory + "/" + name
        let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw SharedMemoryError("segment \(name): cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid() else {
            throw SharedMemoryError("segment \(name): not a regular file of this user")
        }
        let length = Int(st.st_size)
        guard length > SharedMemory.headerSize,
              let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw SharedMemoryError("segment \(name): cannot map \(length) bytes")
        }
        let m = SharedMemory.Mapping(base: p, length: length)
        state.mappings[name] = m
        state.mappingOrder.append(name)
        if state.mappingOrder.count > maxMappings {
            state.mappings[state.mappingOrder.removeFirst()] = nil   // frames still reading it keep it mapped
        }
        return m
    }
}

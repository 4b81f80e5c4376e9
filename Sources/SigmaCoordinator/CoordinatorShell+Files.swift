import Foundation
import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

// Reads off the poller thread: input files for workers (FILE-GET) and stored results for clients (RESULT-GET).

extension CoordinatorShell.Loop {
    /// Hands a read to the file server; ERROR 429 naming `what` when `peer` already has too many waiting.
    func serve(_ peer: PeerID, request: UInt64, _ what: String, _ read: @escaping @Sendable () -> Message) {
        guard !files.push(peer, read) else { return }
        let e = ErrorReply(.tooManyRequests, request: request,
                           "\(what): \(CoordinatorShell.FileServer.maxPerPeer) requests of this connection are being served (the limit); ask again when they are answered")
        link.send(Envelope(peer: peer, frames: Codec.encode(.error(e), compressor: compressor, carrier: carriers[peer])))
    }
}

extension Message {
    /// Bytes of file or result data this message carries (what the file server's back-pressure counts).
    var bulkBytes: Int {
        switch self {
        case .fileData(let d): d.payload.count
        case .resultData(let d): d.payload.count
        default: 0
        }
    }
}

extension CoordinatorShell {
    /// Reads the bytes FILE-GETs and RESULT-GETs ask for on its own thread (a slow disk must not hold up heartbeats
    /// and results), in arrival order; the answers go to `Shared.fileReplies` and wake the poller thread, which sends
    /// them. Bounded: at most `maxPerPeer` requests of one peer wait or are served at once (more are refused), and
    /// nothing new is read while `maxQueuedBytes` of replies wait to be sent or sit in libzmq's queues
    /// (`ZmqLink.queuedBulkBytes`): a peer that asks much and reads slowly slows its own answers, nothing grows.
    final class FileServer: @unchecked Sendable {
        static let maxPerPeer = 16
        static let maxQueuedBytes = 256 << 20
        private let queue = BlockingQueue<(PeerID, @Sendable () -> Message)>()
        final class State: Sendable {
            /// Requests per peer waiting or being served.
            let outstanding = Mutex<[PeerID: Int]>([:])
            let stopping = Atomic<Bool>(false)
        }
        private let state = State()
        private var thread: OSThread?

        init(shared: Shared, waker: Waker) {
            thread = OSThread(name: "sigma-files") { [queue, state] in
                while let (peer, read) = queue.next() {
                    // Back-pressure: wait (bounded, 1 ms steps) for earlier replies to reach the wire.
                    while !state.stopping.load(ordering: .relaxed) && ZmqLink.queuedBulkBytes.load(ordering: .relaxed)
                            + shared.fileReplies.withLock({ $0.reduce(0) { $0 + $1.1.bulkBytes } }) > Self.maxQueuedBytes {
                        usleep(1000)
                    }
                    let m = read()
                    state.outstanding.withLock { o in
                        if let n = o[peer] { o[peer] = n > 1 ? n - 1 : nil }
                    }
                    shared.fileReplies.withLock { $0.append((peer, m)) }
                    waker.wake()
                }
            }
        }

        /// Queues a read; false (nothing queued) when `peer` already has `maxPerPeer` requests waiting or served.
        func push(_ peer: PeerID, _ read: @escaping @Sendable () -> Message) -> Bool {
            let admitted = state.outstanding.withLock { o -> Bool in
                guard o[peer, default: 0] < Self.maxPerPeer else { return false }
                o[peer, default: 0] += 1
                return true
            }
            if admitted { queue.push((peer, read)) }
            return admitted
        }

        func stop() {
            state.stopping.store(true, ordering: .relaxed)
            queue.close(dropping: true)
            thread?.join()
            thread = nil
        }
    }

    /// FILE-DATA for a FILE-GET the core accepted: the asked bytes of the file, which must still be a regular file
    /// under `roots` (checked again: the path may name another file since the job was submitted) and have its
    /// submitted size (the worker checks the SHA-256 of the whole file).
    static func fileData(_ g: FileGet, _ f: InputFile, files: Int, roots: DataRoots) -> Message {
        func failure(_ problem: String) -> Message {
            .error(ErrorReply(.internalError, request: g.request, "FILE-GET job \(g.job) file \(g.index) '\(f.path)': \(problem)"))
        }
        let real: String
        do { real = try roots.file(f.path, field: "file") } catch { return failure("\(error)") }
        let fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return failure("cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, UInt64(st.st_size) == f.size else {
            return failure("changed since the job was submitted (\(st.st_size) bytes, was \(f.size))")
        }
        let n = Int(min(UInt64(g.length), f.size - g.offset))
        var short = false
        let payload = Frame(count: n) { buf in
            var done = 0
            while done < n {
                let r = pread(fd, buf.baseAddress! + done, n - done, off_t(g.offset) + off_t(done))
                if r <= 0 { short = true; memset(buf.baseAddress! + done, 0, n - done); break }
                done += r
            }
        }
        if short { return failure("read failed at byte \(g.offset)") }
        return .fileData(FileData(request: g.request, job: g.job, index: g.index, files: UInt32(files), path: f.path, size: f.size,
                                  sha256: f.sha256, offset: g.offset, payload: payload))
    }
}

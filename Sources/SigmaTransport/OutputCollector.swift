import Foundation

/// Collects what a child process writes to a pipe, on a thread of its own (a full pipe must not block the child);
/// `text()` waits until the pipe closes.
public final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    public init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            while true {
                let d = handle.availableData
                if d.isEmpty { break }
                lock.lock()
                data.append(d)
                lock.unlock()
            }
            done.signal()
        }
    }

    public func text() -> String {
        done.wait()
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }
}

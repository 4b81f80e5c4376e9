import CZeroMQ
import Glibc
import SigmaModel

/// Plain ZeroMQ request/reply, measured the same way as Sigma's dispatch, as the benchmark's baseline.
/// Blocking calls on dedicated OS threads only.
public enum RawBaseline {
    /// An echo peer: `bind` a ROUTER and echo [id, payload], or `connect` a DEALER to a broker, say READY and echo.
    /// Runs until `stop` is set (checked every 100 ms).
    public static func echo(endpoint: String, bind: Bool, stop: @Sendable () -> Bool) throws {
        let ctx = ZContext.process.handle
        guard let s = zmq_socket(ctx, bind ? ZMQ_ROUTER : ZMQ_DEALER) else { throw TransportError.last("zmq_socket") }
        defer { zmq_close(s) }
        var zero: Int32 = 0, timeout: Int32 = 100
        zmq_setsockopt(s, ZMQ_LINGER, &zero, 4)
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, 4)
        if bind {
            guard zmq_bind(s, endpoint) == 0 else { throw TransportError.bind(endpoint: endpoint, reason: "zmq_bind") }
        } else {
            guard zmq_connect(s, endpoint) == 0 else { throw TransportError.connect(endpoint: endpoint, reason: "zmq_connect") }
            _ = zmq_send(s, "READY", 5, 0)
        }
        var parts = [zmq_msg_t](repeating: zmq_msg_t(), count: 8)
        while !stop() {
            var n = 0
            var more = true
            while more && n < 8 {
                zmq_msg_init(&parts[n])
                if zmq_msg_recv(&parts[n], s, 0) < 0 {
                    zmq_msg_close(&parts[n])
                    break
                }
                more = zmq_msg_more(&parts[n]) == 1
                n += 1
            }
            if more || n == 0 { for i in 0..<n { zmq_msg_close(&parts[i]) }; continue }
            for i in 0..<n { zmq_msg_send(&parts[i], s, i < n - 1 ? ZMQ_SNDMORE : 0) }
        }
    }

    /// A broker with one ROUTER, like Sigma's coordinator: client messages go to the (single) echo worker,
    /// replies go back to the client. Returns the bound endpoint; runs on its own thread until `stop`.
    public static func broker(stop: @escaping @Sendable () -> Bool) throws -> (endpoint: String, thread: OSThread) {
        let made = Waker()
        final class Box: @unchecked Sendable { var endpoint = ""; var error: TransportError? }
        let box = Box()
        let t = OSThread(name: "raw-broker") {
            let ctx = ZContext.process.handle
            let s = zmq_socket(ctx, ZMQ_ROUTER)!
            defer { zmq_close(s) }
            var zero: Int32 = 0, timeout: Int32 = 100
            zmq_setsockopt(s, ZMQ_LINGER, &zero, 4)
            zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, 4)
            guard zmq_bind(s, "tcp://127.0.0.1:*") == 0 else {
                box.error = .bind(endpoint: "tcp://127.0.0.1:*", reason: "zmq_bind")
                made.wake()
                return
            }
            var buf = [CChar](repeating: 0, count: 256)
            var len = buf.count
            zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, &buf, &len)
            box.endpoint = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            made.wake()
            var worker: [UInt8]? = nil
            var frames: [[UInt8]] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !stop() {
                frames.removeAll(keepingCapacity: true)
                var more: Int32 = 1
                var sz = MemoryLayout<Int32>.size
                while more != 0 {
                    let n = buffer.withUnsafeMutableBytes { zmq_recv(s, $0.baseAddress, $0.count, 0) }
                    if n < 0 { break }
                    frames.append(Array(buffer.prefix(Int(n))))
                    zmq_getsockopt(s, ZMQ_RCVMORE, &more, &sz)
                }
                guard frames.count >= 2 else { continue }
                if frames[1] == Array("READY".utf8) { worker = frames[0]; continue }
                let out: [[UInt8]]
                if let w = worker, frames[0] == w {
                    out = Array(frames.dropFirst())          // [client, payload] back to the client
                } else if let w = worker {
                    out = [w] + frames                       // [worker, client, payload]
                } else { continue }
                for (i, f) in out.enumerated() {
                    _ = f.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, i < out.count - 1 ? ZMQ_SNDMORE : 0) }
                }
            }
        }
        var p = pollfd(fd: made.fd, events: Int16(POLLIN), revents: 0)
        while box.endpoint.isEmpty && box.error == nil { _ = poll(&p, 1, 100) }
        if let e = box.error { t.join(); throw e }
        return (box.endpoint, t)
    }

    /// Round trips of one 64-byte message at a time: latencies in nanoseconds.
    public static func roundTrips(endpoint: String, count: Int, warmup: Int) throws -> [UInt64] {
        let s = try dealer(endpoint)
        defer { zmq_close(s) }
        var payload = [UInt8](repeating: 7, count: 64)
        var samples: [UInt64] = []
        samples.reserveCapacity(count)
        for i in 0..<(count + warmup) {
            let t0 = monotonicNanos()
            _ = payload.withUnsafeMutableBytes { zmq_send(s, $0.baseAddress, 64, 0) }
            let n = payload.withUnsafeMutableBytes { zmq_recv(s, $0.baseAddress, 64, 0) }
            guard n >= 0 else { throw TransportError.last("round trip (echo peer not answering)") }
            if i >= warmup { samples.append(monotonicNanos() - t0) }
        }
        return samples
    }

    /// Messages per second with `window` in flight (pipelined request/reply).
    public static func throughput(endpoint: String, messages: Int, window: Int) throws -> Double {
        let s = try dealer(endpoint)
        defer { zmq_close(s) }
        var payload = [UInt8](repeating: 7, count: 64)
        // warm-up round trip proves the path is up
        _ = payload.withUnsafeMutableBytes { zmq_send(s, $0.baseAddress, 64, 0) }
        guard payload.withUnsafeMutableBytes({ zmq_recv(s, $0.baseAddress, 64, 0) }) >= 0 else {
            throw TransportError.last("throughput warm-up")
        }
        let t0 = monotonicNanos()
        var sent = 0, received = 0
        while received < messages {
            while sent < messages && sent - received < window {
                _ = payload.withUnsafeMutableBytes { zmq_send(s, $0.baseAddress, 64, 0) }
                sent += 1
            }
            guard payload.withUnsafeMutableBytes({ zmq_recv(s, $0.baseAddress, 64, 0) }) >= 0 else {
                throw TransportError.last("throughput")
            }
            received += 1
        }
        return Double(messages) / (Double(monotonicNanos() - t0) / 1e9)
    }

    private static func dealer(_ endpoint: String) throws -> UnsafeMutableRawPointer {
        guard let s = zmq_socket(ZContext.process.handle, ZMQ_DEALER) else { throw TransportError.last("zmq_socket") }
        var zero: Int32 = 0, timeout: Int32 = 5000
        zmq_setsockopt(s, ZMQ_LINGER, &zero, 4)
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, 4)
        guard zmq_connect(s, endpoint) == 0 else { throw TransportError.connect(endpoint: endpoint, reason: "zmq_connect") }
        return s
    }
}

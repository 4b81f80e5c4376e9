import CZeroMQ
import Glibc
import SigmaModel

extension RawBaseline {
    /// Raw ZeroMQ bulk movement, the baseline of the gradient-reduction benchmark: this thread sends `bytes` to each
    /// of `peers` threads (the parameters) and receives `bytes` back from each (the gradients), over TCP loopback,
    /// `rounds` times; one DEALER pair per peer, no serialisation, no compute. Returns the seconds of each round.
    public static func scatterGather(peers: Int, bytes: Int, rounds: Int) throws -> [Double] {
        let ctx = ZContext.process.handle
        var sockets: [UnsafeMutableRawPointer] = []
        defer { for s in sockets { zmq_close(s) } }
        var endpoints: [String] = []
        for _ in 0..<peers {
            guard let s = zmq_socket(ctx, ZMQ_DEALER) else { throw TransportError.last("zmq_socket") }
            sockets.append(s)
            var zero: Int32 = 0, timeout: Int32 = 30_000
            zmq_setsockopt(s, ZMQ_LINGER, &zero, 4)
            zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, 4)
            guard zmq_bind(s, "tcp://127.0.0.1:*") == 0 else { throw TransportError.bind(endpoint: "tcp://127.0.0.1:*", reason: "zmq_bind") }
            var buf = [CChar](repeating: 0, count: 256)
            var len = buf.count
            zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, &buf, &len)
            endpoints.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        let threads = endpoints.map { endpoint in
            OSThread(name: "raw-peer") {
                guard let s = zmq_socket(ZContext.process.handle, ZMQ_DEALER) else { return }
                defer { zmq_close(s) }
                // Linger: the last reply must leave before the socket closes (LINGER 0 would drop it).
                var linger: Int32 = 10_000, timeout: Int32 = 30_000
                zmq_setsockopt(s, ZMQ_LINGER, &linger, 4)
                zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, 4)
                guard zmq_connect(s, endpoint) == 0 else { return }
                let reply = [UInt8](repeating: 1, count: bytes)
                var inbox = [UInt8](repeating: 0, count: bytes)
                for _ in 0..<rounds {
                    guard inbox.withUnsafeMutableBytes({ zmq_recv(s, $0.baseAddress, bytes, 0) }) >= 0 else { return }
                    _ = reply.withUnsafeBytes { zmq_send(s, $0.baseAddress, bytes, 0) }
                }
            }
        }
        defer { for t in threads { t.join() } }
        let payload = [UInt8](repeating: 2, count: bytes)
        var sink = [UInt8](repeating: 0, count: bytes)
        var times: [Double] = []
        for _ in 0..<rounds {
            let t0 = monotonicNanos()
            for s in sockets {
                guard payload.withUnsafeBytes({ zmq_send(s, $0.baseAddress, bytes, 0) }) >= 0 else { throw TransportError.last("raw scatter") }
            }
            for s in sockets {
                let n = sink.withUnsafeMutableBytes { zmq_recv(s, $0.baseAddress, bytes, 0) }
                guard n >= 0 else { throw TransportError.last("raw gather") }
            }
            times.append(Double(monotonicNanos() - t0) / 1e9)
        }
        return times
    }
}

import Foundation
import SigmaModel
import SigmaProtocol

/// What the dashboard's charts show, kept by the coordinator so that a page opened or reloaded later shows the past:
/// a bounded ring of cluster points (one per sampling interval; an hour at one per second), and per train job its
/// loss and accuracy by step. Pure: `record` takes a status snapshot and the time it was taken.
public struct History: Sendable {
    /// One sample of the cluster.
    public struct Point: Sendable, Equatable {
        /// Unix time, seconds.
        public var t: Double
        /// Shards in flight ÷ slots and CPU ÷ the hosts' cores, 0…1 (`ClusterSummary`).
        public var utilisation: Double
        public var cpu: Double
        /// Shards completed per second since the previous point.
        public var shardsPerSecond: Double
        /// Items per second, the live workers' recent measured rates summed.
        public var itemsPerSecond: Double
        /// Per live worker (by id): shards in flight ÷ its slots.
        public var workers: [String: Double]
    }

    /// One step of a train job as the sampler saw it.
    public struct CurvePoint: Sendable, Equatable {
        public var step: Int
        public var loss: Double
        /// NaN where the job reports none.
        public var accuracy: Double
    }

    public let capacity: Int
    public let curveCapacity: Int
    public let maxCurves: Int
    /// Oldest first.
    public private(set) var points: [Point] = []
    /// Train jobs' curves, oldest job first; a curve over `curveCapacity` keeps every other point (its shape stays).
    public private(set) var curves: [(job: JobID, points: [CurvePoint])] = []
    /// Worker id → name@host, for the charts' legends (kept while a worker appears in the ring).
    public private(set) var workerLabels: [String: String] = [:]
    private var head = 0
    private var lastDone: (t: Double, shards: UInt64)? = nil

    public init(capacity: Int = 3600, curveCapacity: Int = 2000, maxCurves: Int = 32) {
        precondition(capacity > 0 && curveCapacity > 1 && maxCurves > 0)
        self.capacity = capacity
        self.curveCapacity = curveCapacity
        self.maxCurves = maxCurves
    }

    /// The ring in time order.
    public var ordered: [Point] { Array(points[head...] + points[..<head]) }

    public mutating func record(_ s: ClusterStatus, at t: Double) {
        let sum = ClusterSummary(s)
        var rate = 0.0
        if let last = lastDone, t > last.t, s.totals.shardsDone >= last.shards {
            rate = Double(s.totals.shardsDone - last.shards) / (t - last.t)
        }
        lastDone = (t, s.totals.shardsDone)
        var perWorker: [String: Double] = [:]
        for w in s.workers where w.state != "dead" {
            perWorker[w.id] = w.slots == 0 ? 0 : Double(min(w.inFlight, w.slots)) / Double(w.slots)
            workerLabels[w.id] = "\(w.name)@\(w.host)"
        }
        let p = Point(t: t, utilisation: sum.utilisation, cpu: sum.cpuShare, shardsPerSecond: rate, itemsPerSecond: sum.rate, workers: perWorker)
        if points.count < capacity { points.append(p) } else {
            points[head] = p
            head = (head + 1) % capacity
        }
        if points.count == capacity, head == 0 {   // once per turn of the ring: forget workers it no longer holds
            let seen = Set(points.flatMap { $0.workers.keys })
            workerLabels = workerLabels.filter { seen.contains($0.key) }
        }
        for j in s.jobs where j.steps > 0 && j.step > 0 && j.loss.isFinite {
            let cp = CurvePoint(step: Int(j.step), loss: j.loss, accuracy: j.accuracy)
            if let i = curves.firstIndex(where: { $0.job == j.id }) {
                guard curves[i].points.last?.step != cp.step else { continue }
                curves[i].points.append(cp)
                if curves[i].points.count > curveCapacity {
                    // keep the first and every other after it: the same curve at half the resolution
                    curves[i].points = curves[i].points.enumerated().filter { $0.offset % 2 == 0 || $0.offset == curves[i].points.count - 1 }.map(\.element)
                }
            } else {
                curves.append((j.id, [cp]))
                if curves.count > maxCurves { curves.removeFirst(curves.count - maxCurves) }
            }
        }
    }

    /// A train job's curve (empty when the sampler never saw it step).
    public func curve(_ job: JobID) -> [CurvePoint] { curves.first { $0.job == job }?.points ?? [] }
}

extension History.Point {
    public var jsonObject: [String: Any] {
        ["t": t, "utilisation": utilisation, "cpu": cpu, "shards_per_s": shardsPerSecond, "items_per_s": itemsPerSecond,
         "workers": workers]
    }
}

extension History {
    /// `/api/history`: the ring in time order and the workers' labels.
    public var jsonObject: [String: Any] {
        ["capacity": capacity, "points": ordered.map(\.jsonObject), "worker_labels": workerLabels]
    }

    /// A job's curve as `/api/jobs/ID` carries it: [[step, loss, accuracy or null], …].
    public func curveJSON(_ job: JobID) -> [Any] {
        curve(job).map { [$0.step, $0.loss, $0.accuracy.isFinite ? $0.accuracy as Any : NSNull()] as [Any] }
    }
}

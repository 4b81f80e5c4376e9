import SigmaModel

/// What `sigma status` shows: a snapshot of the coordinator's workers and jobs.
public struct ClusterStatus: Sendable, Equatable {
    public struct Worker: Sendable, Equatable {
        public var id: String
        public var name: String
        public var host: String
        public var cores: UInt16
        public var slots: UInt32
        /// ready, busy, draining, suspect, low-memory, dead
        public var state: String
        public var inFlight: UInt32
        /// Smoothed heartbeat round trip, nanoseconds (0 until measured).
        public var rtt: UInt64
        /// Nanoseconds since the last message from this worker.
        public var lastSeen: UInt64
        public var shardsDone: UInt64
        /// Measured compute throughput of the whole worker (all its slots) on the kind of job it ran last, items/s,
        /// over the last few seconds (0 when idle that long, not measured yet, or dead).
        public var throughput: Double = 0
        /// Measured link bandwidth, bytes/s (0 until measured).
        public var bandwidth: Double = 0
        public var bytesIn: UInt64 = 0
        public var bytesOut: UInt64 = 0
        /// The worker process's CPU use over its last heartbeat interval, percent of one core (200 = two cores busy).
        public var cpu: Double = 0
        /// Its resident memory and the host's memory, bytes.
        public var rss: UInt64 = 0
        public var memory: UInt64 = 0
        /// Payload bytes before / after LZ4 on this worker's link (equal when nothing was compressed).
        public var rawBytes: UInt64 = 0
        public var wireBytes: UInt64 = 0
        /// Nanoseconds since the worker joined.
        public var joined: UInt64 = 0
        /// The OpenBLAS kernel set the worker runs, how it was chosen ("auto", "openblas", "env") and the best set its
        /// CPU could run (HELLO features `blas=`, `blas-choice=`, `blas-best=`; "" from a worker that did not say).
        public var blas = ""
        public var blasChoice = ""
        public var blasBest = ""
        /// The worker runs a kernel set below what its CPU could run (e.g. generic SSE3 kernels on an AVX-512 CPU).
        public var blasBelowBest: Bool { !blasBest.isEmpty && blas != blasBest }
        /// "Cooperlake", or "Prescott!" (with "(best: Cooperlake)" when `long`) for a set below the CPU's best.
        public func blasLabel(long: Bool = false) -> String {
            guard !blas.isEmpty else { return "-" }
            return blasBelowBest ? blas + "!" + (long ? " (best: \(blasBest))" : "") : blas
        }
        public init(id: String, name: String, host: String, cores: UInt16, slots: UInt32, state: String, inFlight: UInt32,
                    rtt: UInt64, lastSeen: UInt64, shardsDone: UInt64) {
            self.id = id
            self.name = name
            self.host = host
            self.cores = cores
            self.slots = slots
            self.state = state
            self.inFlight = inFlight
            self.rtt = rtt
            self.lastSeen = lastSeen
            self.shardsDone = shardsDone
        }
    }

    public struct Job: Sendable, Equatable {
        public var id: JobID
        public var name: String
        public var kind: String
        public var state: JobState
        public var done: UInt32
        public var total: UInt32
        public var running: UInt32
        public var reruns: UInt32
        public var duplicates: UInt32
        /// nanoseconds since submission (until the end for finished jobs)
        public var elapsed: UInt64
        public var error: String
        /// The client-chosen id the job was submitted with (`sigma submit --id`), or "".
        public var key: String = ""
        /// Training: steps done and planned, last loss and held-out accuracy (NaN when none).
        public var step: UInt32 = 0
        public var steps: UInt32 = 0
        public var loss: Double = .nan
        public var accuracy: Double = .nan
        /// Training: the last held-out loss (a regressor's mean squared error); NaN when none.
        public var evalLoss: Double = .nan
        /// Backup attempts started by hedging, and how many finished first.
        public var hedges: UInt32 = 0
        public var hedgesWon: UInt32 = 0
        /// Items (rows, samples, lines) the job has processed, for throughput and ETA.
        public var items: UInt64 = 0
        /// Items per second over the last 10 s of progress (`RecentRate`: start-up excluded); NaN before it is known.
        public var rate: Double = .nan
        /// Seconds left at that pace; NaN when unknown.
        public var secondsLeft: Double = .nan
        /// Training: steps in one pass over the training rows (0: not a training job).
        public var stepsPerEpoch: UInt32 = 0
        public init(id: JobID, name: String, kind: String, state: JobState, done: UInt32, total: UInt32, running: UInt32,
                    reruns: UInt32, duplicates: UInt32, elapsed: UInt64, error: String) {
            self.id = id
            self.name = name
            self.kind = kind
            self.state = state
            self.done = done
            self.total = total
            self.running = running
            self.reruns = reruns
            self.duplicates = duplicates
            self.elapsed = elapsed
            self.error = error
        }

        public func encode(into w: inout ByteWriter) {
            w.u64(id); w.string(name); w.string(kind); w.u8(state.rawValue); w.u32(done); w.u32(total)
            w.u32(running); w.u32(reruns); w.u32(duplicates); w.u64(elapsed); w.string(error)
            w.string(key); w.u32(step); w.u32(steps); w.f64(loss); w.f64(accuracy); w.f64(evalLoss); w.u32(hedges); w.u32(hedgesWon); w.u64(items)
            w.f64(rate); w.f64(secondsLeft); w.u32(stepsPerEpoch)
        }

        public static func decode(from r: inout ByteReader) throws -> Job {
            let id = try r.u64("job.id"), name = try r.string("job.name"), kind = try r.string("job.kind")
            let sv = try r.u8("job.state")
            guard let state = JobState(rawValue: sv) else { throw ByteReadError(field: "job.state", problem: "unknown state \(sv)") }
            var j = Job(id: id, name: name, kind: kind, state: state, done: try r.u32("job.done"), total: try r.u32("job.total"),
                        running: try r.u32("job.running"), reruns: try r.u32("job.reruns"), duplicates: try r.u32("job.duplicates"),
                        elapsed: try r.u64("job.elapsed"), error: try r.string("job.error"))
            j.key = try r.string("job.key")
            j.step = try r.u32("job.step")
            j.steps = try r.u32("job.steps")
            j.loss = try r.f64("job.loss")
            j.accuracy = try r.f64("job.accuracy")
            j.evalLoss = try r.f64("job.eval_loss")
            j.hedges = try r.u32("job.hedges")
            j.hedgesWon = try r.u32("job.hedges_won")
            j.items = try r.u64("job.items")
            j.rate = try r.f64("job.rate")
            j.secondsLeft = try r.f64("job.seconds_left")
            j.stepsPerEpoch = try r.u32("job.steps_per_epoch")
            return j
        }

        public static func == (a: Job, b: Job) -> Bool {
            var w1 = ByteWriter(capacity: 64), w2 = ByteWriter(capacity: 64)
            a.encode(into: &w1); b.encode(into: &w2)
            return w1.bytes == w2.bytes
        }
    }

    public var build: String
    /// nanoseconds since the coordinator started
    public var uptime: UInt64
    public var workers: [Worker]
    public var jobs: [Job]
    public var queuedShards: UInt32
    /// The cluster's scheduling policy.
    public var policy = ""
    /// Counts since the coordinator started (never decrease): Prometheus counters.
    public struct Totals: Sendable, Equatable {
        public var bytesIn: UInt64 = 0
        public var bytesOut: UInt64 = 0
        public var shardsDone: UInt64 = 0
        public var shardsFailed: UInt64 = 0
        public var reruns: UInt64 = 0
        public var hedges: UInt64 = 0
        public var jobsCompleted: UInt64 = 0
        public var jobsFailed: UInt64 = 0
        public var jobsCancelled: UInt64 = 0
        public init() {}
        var all: [UInt64] { [bytesIn, bytesOut, shardsDone, shardsFailed, reruns, hedges, jobsCompleted, jobsFailed, jobsCancelled] }
        init(_ v: [UInt64]) {
            (bytesIn, bytesOut, shardsDone, shardsFailed, reruns) = (v[0], v[1], v[2], v[3], v[4])
            (hedges, jobsCompleted, jobsFailed, jobsCancelled) = (v[5], v[6], v[7], v[8])
        }
    }
    public var totals = Totals()

    public init(build: String = sigmaBuild, uptime: UInt64, workers: [Worker], jobs: [Job], queuedShards: UInt32) {
        self.build = build
        self.uptime = uptime
        self.workers = workers
        self.jobs = jobs
        self.queuedShards = queuedShards
    }

    public func encode(into w: inout ByteWriter) {
        w.string(build); w.u64(uptime); w.u32(queuedShards)
        w.u32(UInt32(workers.count))
        for x in workers {
            w.string(x.id); w.string(x.name); w.string(x.host); w.u16(x.cores); w.u32(x.slots); w.string(x.state)
            w.u32(x.inFlight); w.u64(x.rtt); w.u64(x.lastSeen); w.u64(x.shardsDone)
            w.f64(x.throughput); w.f64(x.bandwidth); w.u64(x.bytesIn); w.u64(x.bytesOut)
            w.f64(x.cpu); w.u64(x.rss); w.u64(x.memory); w.u64(x.rawBytes); w.u64(x.wireBytes); w.u64(x.joined)
            w.string(x.blas); w.string(x.blasChoice); w.string(x.blasBest)
        }
        w.u32(UInt32(jobs.count))
        for j in jobs { j.encode(into: &w) }
        w.string(policy)
        for v in totals.all { w.u64(v) }
    }

    public static func decode(from r: inout ByteReader) throws -> ClusterStatus {
        let build = try r.string("status.build")
        let uptime = try r.u64("status.uptime")
        let queued = try r.u32("status.queued")
        let nw = try r.u32("status.workers")
        guard Int(nw) <= r.remaining / 40 + 1 else { throw ByteReadError(field: "status.workers", problem: "count \(nw) exceeds the message") }
        var workers: [Worker] = []
        for _ in 0..<nw {
            var x = Worker(id: try r.string("worker.id"), name: try r.string("worker.name"), host: try r.string("worker.host"),
                           cores: try r.u16("worker.cores"), slots: try r.u32("worker.slots"), state: try r.string("worker.state"),
                           inFlight: try r.u32("worker.inflight"), rtt: try r.u64("worker.rtt"),
                           lastSeen: try r.u64("worker.lastseen"), shardsDone: try r.u64("worker.done"))
            x.throughput = try r.f64("worker.throughput")
            x.bandwidth = try r.f64("worker.bandwidth")
            x.bytesIn = try r.u64("worker.bytesin")
            x.bytesOut = try r.u64("worker.bytesout")
            x.cpu = try r.f64("worker.cpu")
            x.rss = try r.u64("worker.rss")
            x.memory = try r.u64("worker.memory")
            x.rawBytes = try r.u64("worker.raw_bytes")
            x.wireBytes = try r.u64("worker.wire_bytes")
            x.joined = try r.u64("worker.joined")
            x.blas = try r.string("worker.blas")
            x.blasChoice = try r.string("worker.blas_choice")
            x.blasBest = try r.string("worker.blas_best")
            workers.append(x)
        }
        let nj = try r.u32("status.jobs")
        guard Int(nj) <= r.remaining / 40 + 1 else { throw ByteReadError(field: "status.jobs", problem: "count \(nj) exceeds the message") }
        var jobs: [Job] = []
        for _ in 0..<nj { jobs.append(try Job.decode(from: &r)) }
        var st = ClusterStatus(build: build, uptime: uptime, workers: workers, jobs: jobs, queuedShards: queued)
        st.policy = try r.string("status.policy")
        st.totals = Totals(try (0..<9).map { _ in try r.u64("status.totals") })
        return st
    }
}

/// Histogram samples the coordinator gathered since a reader last took them (nanoseconds): shard round trips (sent
/// to result), and per completed round of an ML job its reduce time (tree additions and optimizer step together)
/// and, index for index, the optimizer step's part of it (0 for jobs without one).
public struct CoordinatorSamples: Sendable, Equatable {
    public var shards: [UInt64] = []
    public var reduces: [UInt64] = []
    public var optimizers: [UInt64] = []
    /// Per training step that a result completed: from reading that result to the next step's ASSIGNs handed to
    /// the socket — the coordinator's part of the step's critical path (the shell measures it).
    public var turnarounds: [UInt64] = []
    public init(shards: [UInt64] = [], reduces: [UInt64] = [], optimizers: [UInt64] = []) {
        self.shards = shards
        self.reduces = reduces
        self.optimizers = optimizers
    }
}

extension ClusterStatus.Job {
    /// How far the job is, 0…1: steps for a training job, shards otherwise.
    public var progressFraction: Double {
        if steps > 0 { return Double(step) / Double(steps) }
        return total == 0 ? (state == .completed ? 1 : 0) : Double(done) / Double(total)
    }

    /// Seconds left at the recent pace (nil when unknown or finished).
    public var eta: Double? {
        guard state == .running, secondsLeft.isFinite else { return nil }
        return secondsLeft
    }

    /// Items per second over the recent past (nil when unknown): samples/s for a train job.
    public var recentRate: Double? { state == .running && rate.isFinite ? rate : nil }

    /// What its items are called in rates: "samples" for a train job, "items" otherwise.
    public var itemUnit: String { steps > 0 ? "samples" : "items" }
}

extension ClusterStatus.Worker {
    /// Bytes before compression over bytes on the wire (1 when nothing was sent).
    public var compressionRatio: Double { wireBytes == 0 ? 1 : Double(rawBytes) / Double(wireBytes) }
}

/// Where a training job is, told in steps and epochs: "step 120/400, epoch 2/4" (epochs when known; a job whose last
/// epoch is partial counts it: 400 steps of 23 per epoch are 18 epochs).
public struct TrainingPosition: Sendable, Equatable {
    public var step: Int, steps: Int, stepsPerEpoch: Int
    public init(step: Int, steps: Int, stepsPerEpoch: Int) {
        self.step = step
        self.steps = steps
        self.stepsPerEpoch = stepsPerEpoch
    }

    /// The epoch the last step done belongs to, from 1 (nil when steps per epoch are unknown).
    public var epoch: Int? {
        guard stepsPerEpoch > 0 else { return nil }
        return Swift.max(1, (step + stepsPerEpoch - 1) / stepsPerEpoch)
    }

    /// Passes over the training rows the whole job starts, a last partial one included (nil when unknown).
    public var epochs: Int? { stepsPerEpoch > 0 ? (steps + stepsPerEpoch - 1) / stepsPerEpoch : nil }

    public var description: String {
        var s = "step \(step)/\(steps)"
        if let e = epoch, let t = epochs {
            s += ", epoch \(e)/\(t)"
        }
        return s
    }
}

extension ClusterStatus.Job {
    /// Steps and epochs of a training job (nil for other kinds).
    public var position: TrainingPosition? {
        steps > 0 ? TrainingPosition(step: Int(step), steps: Int(steps), stepsPerEpoch: Int(stepsPerEpoch)) : nil
    }
}

extension JobProgress {
    /// Steps and epochs of a training job (nil for other kinds).
    public var position: TrainingPosition? {
        steps > 0 ? TrainingPosition(step: Int(step), steps: Int(steps), stepsPerEpoch: Int(stepsPerEpoch)) : nil
    }
}

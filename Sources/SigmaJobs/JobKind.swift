import Foundation
import SigmaModel

/// One kind of job, whole: its spec (read from YAML or JSON, checked, carried on the wire as `JobSpec`), the files it
/// names, the coordinator's side (`prepare`: the driver of its rounds), a worker's side (`worker`: what runs its
/// shards) and the client's (`report`: what its result says). A kind lives in one folder under `Kinds/`; it runs
/// once it is registered (`JobKinds.standard`, or `JobKinds.adding`). docs/architecture.md, "How to add a job kind".
public protocol JobKind {
    associatedtype Spec: JobKindSpec
    /// Its name: `kind:` in a spec file, and on the wire.
    static var name: String { get }
    /// The spec from a YAML or JSON file's fields (all but `kind` and `policy`; leave none unread: what is left is
    /// refused as unknown); relative paths are resolved against `base`.
    static func parse(_ fields: inout Fields, base: String?) throws -> Spec
    /// Every check the spec gets, wherever it came from, before any of its files is read or anything allocated:
    /// each field in range and every size it asks for within `limits`.
    static func validate(_ spec: Spec, limits: SpecLimits) throws
    /// The spec with each file or folder path it names replaced by `rewrite(path)` (data roots, a worker's cache).
    static func mapPaths(_ spec: Spec, _ rewrite: (SpecPath) throws -> String) rethrows -> Spec
    /// The coordinator's side, on the shell's resolver thread: read what the job needs (its paths are real paths
    /// under the data roots by now), check it, and return the driver of its rounds.
    static func prepare(_ spec: Spec, context: KindContext) throws -> any RoundDriver
    /// A worker's side: the job's state on one compute thread (data, model), which runs its shards.
    static func worker(_ spec: Spec, context: KindContext) throws -> any ShardWorker
    /// The client's side: what a completed job's result payload holds (files to write, lines to print, JSON).
    static func report(_ result: [UInt8], spec: Spec) throws -> JobReport
    /// Items the whole job counts, when the spec alone says (a generated input's rows): a live line then shows
    /// their rate. Default: nil (shards/s).
    static func items(_ spec: Spec) -> (count: UInt64, unit: String)?
    /// The spec to run again when a restarted coordinator resumes the job (its journal knows it had not ended):
    /// a train job continues from its latest checkpoint. Default: the spec as it was.
    static func restarted(_ spec: Spec) -> Spec
    /// The spec a coordinator with a journal runs: a kind adds what resuming after a restart needs (train:
    /// checkpoints into a folder of the coordinator's state, when the spec asks for none). Default: the spec as it is.
    static func journaled(_ spec: Spec, _ defaults: JournalDefaults) -> Spec
    /// Whether a shard's items (rows of a generated input) take microseconds each, so that a worker may run a
    /// short shard of a job naming no file on its poller thread, saving two thread wake-ups. Default: false (a
    /// model's shard counts micro-batches or batches — milliseconds to seconds each — and runs on a compute thread).
    static var quickItems: Bool { get }
}

/// What a journaled coordinator offers a job for resuming after a restart (`JobKind.journaled`).
public struct JournalDefaults: Sendable {
    /// Names a new folder of the job's own in the coordinator's state (created when first written); called only by
    /// a kind that uses one, so other jobs cost the coordinator nothing.
    public var newFolder: @Sendable () -> String
    /// Seconds of training between checkpoints (`coordinator.checkpoint_seconds`).
    public var checkpointSeconds: Double
    public init(newFolder: @escaping @Sendable () -> String, checkpointSeconds: Double) {
        self.newFolder = newFolder
        self.checkpointSeconds = checkpointSeconds
    }
}

extension JobKind {
    public static func items(_ spec: Spec) -> (count: UInt64, unit: String)? { nil }
    public static func restarted(_ spec: Spec) -> Spec { spec }
    public static func journaled(_ spec: Spec, _ defaults: JournalDefaults) -> Spec { spec }
    public static var quickItems: Bool { false }

    /// This kind's spec on the wire.
    public static func spec(_ s: Spec) -> JobSpec { JobSpec(kind: name, s) }
}

/// A file or folder a spec names.
public struct SpecPath: Sendable, Equatable {
    /// The spec field that names it ("input.npy", "model.weights"), for errors.
    public var field: String
    public var path: String
    /// A folder (a model folder): the files in it that are read, and those read when they exist.
    public var folder: (required: [String], optional: [String])? = nil
    /// Read by workers (data, weights, a model folder); false: by the coordinator only (a checkpoint to resume).
    public var workers = true
    /// A model (weights, a checkpoint, a model folder) rather than input data: provenance says which.
    public var model = false

    public init(field: String, path: String, folder: (required: [String], optional: [String])? = nil, workers: Bool = true, model: Bool = false) {
        self.field = field
        self.path = path
        self.folder = folder
        self.workers = workers
        self.model = model
    }

    public static func == (a: SpecPath, b: SpecPath) -> Bool {
        a.field == b.field && a.path == b.path && a.folder?.required == b.folder?.required && a.folder?.optional == b.folder?.optional
            && a.workers == b.workers && a.model == b.model
    }
}

/// What a kind's sides may read, and within which limits.
public struct KindContext: Sendable {
    public var roots: DataRoots
    public var limits: SpecLimits
    public init(roots: DataRoots, limits: SpecLimits = .standard) {
        self.roots = roots
        self.limits = limits
    }
}

/// A job's state on one worker thread: runs its shards, one at a time.
public protocol ShardWorker: AnyObject {
    /// The payload of shard `[start, start+count)` of round `round` (`params`: the round's parameters, if any).
    func run(round: UInt32, params: Frame?, start: UInt64, count: UInt64) throws -> Frame
}

/// What a completed job's result says, for `sigma submit` and `sigma results`.
public struct JobReport: @unchecked Sendable {
    /// Files to write into the job's output folder (name, bytes).
    public var files: [(name: String, data: Data)] = []
    /// Lines to print under the job's summary.
    public var lines: [String] = []
    /// JSON-ready values for `--json` (under "result").
    public var json: [String: Any] = [:]
    public init(files: [(name: String, data: Data)] = [], lines: [String] = [], json: [String: Any] = [:]) {
        self.files = files
        self.lines = lines
        self.json = json
    }
}

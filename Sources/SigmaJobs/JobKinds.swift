import Foundation
import SigmaModel

/// The job kinds a process knows, by name. Every side — the client reading a spec file, the coordinator preparing a
/// job, a worker running its shards — goes through this table, so a kind runs once it is listed here.
public struct JobKinds: Sendable {
    /// The kinds Sigma ships. Registering a kind is one line here (or `JobKinds.standard.adding(MyKind.self)`).
    public static let standard = JobKinds([
        MapReduceKind.self,
        TrainKind.self,
        InferKind.self,
        EvalKind.self,
        EmbedKind.self,
        ServeKind.self,
    ])

    let kinds: [String: any JobKind.Type]
    /// Names in registration order (for messages).
    public let names: [String]
    /// Specs decoded lately (a job's spec is opened by the shell that prepares it, by each thread that runs its
    /// shards, …: decoding it once per process keeps a tiny job's round trip short).
    let recent = OpenedSpecs()

    public init(_ kinds: [any JobKind.Type]) {
        var byName: [String: any JobKind.Type] = [:]
        for k in kinds { byName[k.name] = k }
        self.kinds = byName
        names = kinds.map { $0.name }
    }

    /// These kinds and `kind` (replacing one of the same name).
    public func adding(_ kind: any JobKind.Type) -> JobKinds {
        JobKinds(names.filter { $0 != kind.name }.map { kinds[$0]! } + [kind])
    }

    /// The kind of `spec`; an error when this process does not know it.
    public func kind(_ name: String) throws -> any JobKind.Type {
        guard let k = kinds[name] else {
            throw SpecError(field: "kind", problem: "unknown job kind '\(name)'; expected one of: \(names.joined(separator: ", "))")
        }
        return k
    }

    // MARK: every side's entry points, for a spec of any kind

    /// Parses a YAML or JSON job spec file's text, keeping its `policy:`. Relative paths are resolved against
    /// `baseDirectory`; the spec is checked by `validate(limits:)`, as one from the wire is (`limits` nil: not
    /// checked, for tools that need a spec validation would refuse).
    public func parseFile(_ text: String, baseDirectory: String? = nil, limits: SpecLimits? = .standard) throws -> JobFile {
        var fields = try Fields.document(text)
        let name = try fields.string("kind")
        let policy = try fields.optionalString("policy")
        if let p = policy { _ = try SchedulingPolicy.parse(p) }
        let spec = try kind(name).parsed(&fields, base: baseDirectory)
        try fields.rejectUnknown()
        if let limits { try validate(spec, limits: limits) }
        return JobFile(spec: spec, policy: policy)
    }

    /// Parses a spec (its `policy:` checked and dropped).
    public func parse(_ text: String, baseDirectory: String? = nil, limits: SpecLimits = .standard) throws -> JobSpec {
        try parseFile(text, baseDirectory: baseDirectory, limits: limits).spec
    }

    /// Reads a spec file keeping its `policy:`; errors name the field, never the file's content.
    public func loadFile(path: String, limits: SpecLimits = .standard) throws -> JobFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SpecError(field: "(file)", problem: "cannot read job spec file '\(path)'")
        }
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parseFile(String(decoding: data, as: UTF8.self), baseDirectory: dir, limits: limits)
    }

    /// `spec` decoded by its kind, once: what every side does with it (check, rewrite paths, prepare, run shards).
    public func open(_ spec: JobSpec) throws -> OpenSpec {
        if let known = recent.get(spec) { return known }
        let opened = OpenSpec(spec: spec, typed: try kind(spec.kind).opened(spec))
        recent.put(opened)
        return opened
    }

    /// Every check a spec gets, from a file or the wire: its body decodes as its kind's spec, and that is valid
    /// within `limits`.
    public func validate(_ spec: JobSpec, limits: SpecLimits = .standard) throws {
        try open(spec).validate(limits: limits)
    }

    /// The client's side: what a completed job's result holds.
    public func report(_ result: [UInt8], spec: JobSpec) throws -> JobReport {
        try kind(spec.kind).reported(result, spec: spec)
    }

    /// Items the whole job counts, when its spec alone says (for a live line's rate).
    public func items(_ spec: JobSpec) -> (count: UInt64, unit: String)? {
        (try? kind(spec.kind).countedItems(spec)) ?? nil
    }

    /// The spec a restarted coordinator runs for a job that had not ended (`JobKind.restarted`).
    public func restarted(_ spec: JobSpec) -> JobSpec {
        guard let k = try? kind(spec.kind), let s = try? k.restartedSpec(spec) else { return spec }
        return s
    }

    /// The spec a coordinator with a journal runs (`JobKind.journaled`).
    public func journaled(_ spec: JobSpec, _ defaults: JournalDefaults) -> JobSpec {
        guard let k = try? kind(spec.kind), let s = try? k.journaledSpec(spec, defaults) else { return spec }
        return s
    }

    /// Where the spec asked results to go, if anywhere.
    public func output(_ spec: JobSpec) -> String? {
        (try? kind(spec.kind).outputPath(of: spec)) ?? nil
    }
}

/// A job spec decoded by its kind: every side's operations on it, with no further decoding. `spec` is the job as it
/// was submitted or assigned (what caches are keyed by), whatever its paths were rewritten to since.
public struct OpenSpec: @unchecked Sendable {
    public let spec: JobSpec
    let typed: any TypedSpec

    public var kind: String { spec.kind }
    /// The files and folders it names.
    public var paths: [SpecPath] { typed.paths }
    /// How the job's workers get its files.
    public var inputTransport: InputTransport { typed.inputTransport }
    /// A short shard of it may run on a worker's poller thread: its kind's items are quick and it names no file.
    public var runsInline: Bool { typed.quickItems && paths.isEmpty }
    /// Its wire form as it is now (paths as rewritten).
    public var encoded: JobSpec { typed.encoded }

    /// Every check a spec gets, wherever it came from: its fields, and each size within `limits`.
    public func validate(limits: SpecLimits) throws { try typed.validate(limits: limits) }

    /// The same job with each path replaced by `rewrite(path)`.
    public func mapPaths(_ rewrite: (SpecPath) throws -> String) rethrows -> OpenSpec {
        OpenSpec(spec: spec, typed: try typed.mapPaths(rewrite))
    }

    /// The coordinator's side: its kind reads what the job needs and returns the driver of its rounds.
    public func prepare(context: KindContext) throws -> any RoundDriver { try typed.prepare(context: context) }

    /// A worker's side: the job's state on one compute thread.
    public func worker(context: KindContext) throws -> any ShardWorker { try typed.worker(context: context) }

    /// Every file a worker reads for this job, in a fixed order (what the coordinator serves by index). `exists`
    /// decides the optional files of a folder (asked on the coordinator, which holds them).
    public func workerInputFiles(exists: (String) -> Bool) -> [String] {
        paths.filter(\.workers).flatMap { p -> [String] in
            guard let f = p.folder else { return [p.path] }
            return f.required.map { p.path + "/" + $0 } + f.optional.map { p.path + "/" + $0 }.filter(exists)
        }
    }

    /// The job reading its files at their real paths under `roots`, each checked (a folder's files too).
    public func rooted(_ roots: DataRoots) throws -> OpenSpec {
        try mapPaths { p in
            guard let f = p.folder else { return try roots.file(p.path, field: p.field) }
            let real = try roots.folder(p.path, field: p.field)
            for name in f.required { _ = try roots.file(real + "/" + name, field: p.field) }
            for name in f.optional where FileManager.default.fileExists(atPath: real + "/" + name) {
                _ = try roots.file(real + "/" + name, field: p.field)
            }
            return real
        }
    }

    /// The job reading `local[path]` for each path in `local` (a worker's cached copies); others stay.
    public func localized(_ local: [String: String]) -> OpenSpec {
        mapPaths { local[$0.path] ?? $0.path }
    }
}

/// A kind's typed spec behind `OpenSpec`.
protocol TypedSpec {
    var paths: [SpecPath] { get }
    var inputTransport: InputTransport { get }
    var quickItems: Bool { get }
    var encoded: JobSpec { get }
    func validate(limits: SpecLimits) throws
    func mapPaths(_ rewrite: (SpecPath) throws -> String) rethrows -> any TypedSpec
    func prepare(context: KindContext) throws -> any RoundDriver
    func worker(context: KindContext) throws -> any ShardWorker
}

struct Typed<K: JobKind>: TypedSpec {
    let value: K.Spec

    var paths: [SpecPath] {
        var out: [SpecPath] = []
        _ = K.mapPaths(value) { p in
            out.append(p)
            return p.path
        }
        return out
    }

    var inputTransport: InputTransport { value.inputTransport ?? .shared }
    var quickItems: Bool { K.quickItems }
    var encoded: JobSpec { K.spec(value) }
    func validate(limits: SpecLimits) throws { try K.validate(value, limits: limits) }
    func mapPaths(_ rewrite: (SpecPath) throws -> String) rethrows -> any TypedSpec { Typed(value: try K.mapPaths(value, rewrite)) }

    func prepare(context: KindContext) throws -> any RoundDriver {
        do { try K.validate(value, limits: context.limits) } catch let e as SpecError { throw JobError("\(e)") }
        return try K.prepare(value, context: context)
    }

    func worker(context: KindContext) throws -> any ShardWorker {
        do { try K.validate(value, limits: context.limits) } catch { throw JobError("refused by this worker's limits: \(error)") }
        return try K.worker(value, context: context)
    }
}

// Each kind's typed entry points, reached through `any JobKind.Type`.
extension JobKind {
    static func typed(_ spec: JobSpec) throws -> Spec {
        guard spec.kind == name else { throw JobError("a \(spec.kind) spec given to the \(name) kind") }
        return try spec.decode(as: Spec.self)
    }

    static func opened(_ spec: JobSpec) throws -> any TypedSpec { Typed<Self>(value: try typed(spec)) }

    static func parsed(_ fields: inout Fields, base: String?) throws -> JobSpec {
        self.spec(try parse(&fields, base: base))
    }

    static func countedItems(_ spec: JobSpec) throws -> (count: UInt64, unit: String)? {
        items(try typed(spec))
    }

    static func restartedSpec(_ spec: JobSpec) throws -> JobSpec {
        self.spec(restarted(try typed(spec)))
    }

    static func journaledSpec(_ spec: JobSpec, _ defaults: JournalDefaults) throws -> JobSpec {
        self.spec(journaled(try typed(spec), defaults))
    }

    static func outputPath(of spec: JobSpec) throws -> String? {
        try typed(spec).output
    }

    static func reported(_ result: [UInt8], spec: JobSpec) throws -> JobReport {
        try report(result, spec: try typed(spec))
    }
}

extension JobKind {
    /// `spec`'s typed form if it is of this kind (nil: another kind, or a body that does not decode).
    public static func spec(in spec: JobSpec) -> Spec? {
        spec.kind == name ? try? spec.decode(as: Spec.self) : nil
    }
}

/// The standard kinds' entry points on a spec (what the `sigma` executable ships).
extension JobSpec {
    public static func parse(_ text: String, baseDirectory: String? = nil, limits: SpecLimits = .standard) throws -> JobSpec {
        try JobKinds.standard.parse(text, baseDirectory: baseDirectory, limits: limits)
    }

    public static func parseFile(_ text: String, baseDirectory: String? = nil, limits: SpecLimits = .standard) throws -> JobFile {
        try JobKinds.standard.parseFile(text, baseDirectory: baseDirectory, limits: limits)
    }

    /// A spec as written, without `validate`: for tests and tools that need a spec validation would refuse (to
    /// send it over the wire, say). Structural errors (types, missing and unknown fields) still throw.
    public static func parseUnchecked(_ text: String, baseDirectory: String? = nil) throws -> JobSpec {
        try JobKinds.standard.parseFile(text, baseDirectory: baseDirectory, limits: nil).spec
    }

    public static func loadFile(path: String, limits: SpecLimits = .standard) throws -> JobFile {
        try JobKinds.standard.loadFile(path: path, limits: limits)
    }

    public static func load(path: String, limits: SpecLimits = .standard) throws -> JobSpec {
        try loadFile(path: path, limits: limits).spec
    }

    public func validate(limits: SpecLimits = .standard) throws {
        try JobKinds.standard.validate(self, limits: limits)
    }

    /// Where the spec asked results to go, if anywhere.
    public var output: String? { JobKinds.standard.output(self) }
}

extension JobSpec {
    /// How the job's workers get its files (`.shared` for a spec of a kind this process does not know).
    public var inputTransport: InputTransport { (try? JobKinds.standard.open(self).inputTransport) ?? .shared }

    /// Every file a worker reads for this job, in the order the coordinator serves them.
    public func workerInputFiles(exists: (String) -> Bool) throws -> [String] {
        try JobKinds.standard.open(self).workerInputFiles(exists: exists)
    }

    /// This spec reading `local[path]` for each path in `local`.
    public func localized(_ local: [String: String]) throws -> JobSpec {
        try JobKinds.standard.open(self).localized(local).encoded
    }
}

/// The last few specs a process decoded, by their wire form (bounded; a miss decodes again).
final class OpenedSpecs: @unchecked Sendable {
    private let lock = NSLock()
    private var specs: [JobSpec: OpenSpec] = [:]
    static let capacity = 64

    func get(_ spec: JobSpec) -> OpenSpec? {
        lock.lock()
        defer { lock.unlock() }
        return specs[spec]
    }

    func put(_ spec: OpenSpec) {
        lock.lock()
        defer { lock.unlock() }
        if specs.count >= Self.capacity { specs.removeAll(keepingCapacity: true) }
        specs[spec.spec] = spec
    }
}

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
    ])

    let kinds: [String: any JobKind.Type]
    /// Names in registration order (for messages).
    public let names: [String]

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

    /// Every check a spec gets, from a file or the wire: its body decodes as its kind's spec, and that is valid
    /// within `limits`.
    public func validate(_ spec: JobSpec, limits: SpecLimits = .standard) throws {
        try kind(spec.kind).validated(spec, limits: limits)
    }

    /// The files and folders `spec` names.
    public func paths(_ spec: JobSpec) throws -> [SpecPath] {
        try kind(spec.kind).paths(of: spec)
    }

    /// `spec` with each path replaced by `rewrite(path)`.
    public func mapPaths(_ spec: JobSpec, _ rewrite: (SpecPath) throws -> String) throws -> JobSpec {
        try kind(spec.kind).mapped(spec, rewrite)
    }

    /// How the job's workers get its files.
    public func inputTransport(_ spec: JobSpec) throws -> InputTransport {
        try kind(spec.kind).transport(of: spec)
    }

    /// The coordinator's side: checked against `context` (limits, files under its roots), the job's driver.
    public func prepare(_ spec: JobSpec, context: KindContext) throws -> any RoundDriver {
        try kind(spec.kind).prepared(spec, context: context)
    }

    /// A worker's side: checked against `context`, the job's state that runs its shards.
    public func worker(_ spec: JobSpec, context: KindContext) throws -> any ShardWorker {
        try kind(spec.kind).shardWorker(spec, context: context)
    }

    /// The client's side: what a completed job's result holds.
    public func report(_ result: [UInt8], spec: JobSpec) throws -> JobReport {
        try kind(spec.kind).reported(result, spec: spec)
    }

    /// Items the whole job counts, when its spec alone says (for a live line's rate).
    public func items(_ spec: JobSpec) -> (count: UInt64, unit: String)? {
        (try? kind(spec.kind).countedItems(spec)) ?? nil
    }

    /// Where the spec asked results to go, if anywhere.
    public func output(_ spec: JobSpec) -> String? {
        (try? kind(spec.kind).outputPath(of: spec)) ?? nil
    }

    /// Every file a worker reads for this job, in a fixed order (what the coordinator serves by index). `exists`
    /// decides the optional files of a folder (asked on the coordinator, which holds them).
    public func workerInputFiles(_ spec: JobSpec, exists: (String) -> Bool) throws -> [String] {
        try paths(spec).filter(\.workers).flatMap { p -> [String] in
            guard let f = p.folder else { return [p.path] }
            return f.required.map { p.path + "/" + $0 } + f.optional.map { p.path + "/" + $0 }.filter(exists)
        }
    }

    /// `spec` reading its files at their real paths under `roots`, each checked (a folder's files too).
    public func rooted(_ spec: JobSpec, roots: DataRoots) throws -> JobSpec {
        try mapPaths(spec) { p in
            guard let f = p.folder else { return try roots.file(p.path, field: p.field) }
            let real = try roots.folder(p.path, field: p.field)
            for name in f.required { _ = try roots.file(real + "/" + name, field: p.field) }
            for name in f.optional where FileManager.default.fileExists(atPath: real + "/" + name) {
                _ = try roots.file(real + "/" + name, field: p.field)
            }
            return real
        }
    }

    /// `spec` reading `local[path]` for each path in `local` (a worker's cached copies); others stay.
    public func localized(_ spec: JobSpec, _ local: [String: String]) throws -> JobSpec {
        try mapPaths(spec) { local[$0.path] ?? $0.path }
    }
}

// Each kind's typed entry points, reached through `any JobKind.Type`.
extension JobKind {
    static func typed(_ spec: JobSpec) throws -> Spec {
        guard spec.kind == name else { throw JobError("a \(spec.kind) spec given to the \(name) kind") }
        return try spec.decode(as: Spec.self)
    }

    static func parsed(_ fields: inout Fields, base: String?) throws -> JobSpec {
        self.spec(try parse(&fields, base: base))
    }

    static func validated(_ spec: JobSpec, limits: SpecLimits) throws {
        try validate(typed(spec), limits: limits)
    }

    static func paths(of spec: JobSpec) throws -> [SpecPath] {
        var out: [SpecPath] = []
        _ = mapPaths(try typed(spec)) { p in
            out.append(p)
            return p.path
        }
        return out
    }

    static func mapped(_ spec: JobSpec, _ rewrite: (SpecPath) throws -> String) throws -> JobSpec {
        self.spec(try mapPaths(try typed(spec), rewrite))
    }

    static func transport(of spec: JobSpec) throws -> InputTransport {
        try typed(spec).inputTransport ?? .shared
    }

    static func countedItems(_ spec: JobSpec) throws -> (count: UInt64, unit: String)? {
        items(try typed(spec))
    }

    static func outputPath(of spec: JobSpec) throws -> String? {
        try typed(spec).output
    }

    static func prepared(_ spec: JobSpec, context: KindContext) throws -> any RoundDriver {
        let s = try typed(spec)
        do { try validate(s, limits: context.limits) } catch let e as SpecError { throw JobError("\(e)") }
        return try prepare(s, context: context)
    }

    static func shardWorker(_ spec: JobSpec, context: KindContext) throws -> any ShardWorker {
        let s = try typed(spec)
        do { try validate(s, limits: context.limits) } catch { throw JobError("refused by this worker's limits: \(error)") }
        return try worker(s, context: context)
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
    public var inputTransport: InputTransport { (try? JobKinds.standard.inputTransport(self)) ?? .shared }

    /// Every file a worker reads for this job, in the order the coordinator serves them.
    public func workerInputFiles(exists: (String) -> Bool) throws -> [String] {
        try JobKinds.standard.workerInputFiles(self, exists: exists)
    }

    /// This spec reading `local[path]` for each path in `local`.
    public func localized(_ local: [String: String]) throws -> JobSpec {
        try JobKinds.standard.localized(self, local)
    }
}

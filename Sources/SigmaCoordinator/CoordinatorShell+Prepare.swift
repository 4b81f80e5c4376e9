import Foundation
import Logging
import SigmaCoordinatorCore
import SigmaEngine
import SigmaJobs
import SigmaModel
import SigmaProtocol
import SigmaTransport
import Synchronization

// The shell's part of a submission: its kind prepares it (reading what the job needs under the data roots), the
// files its workers will fetch, the provenance digests.
extension CoordinatorShell {
    /// A submission's answer: the job's driver (its kind read and checked what the job needs: only files under
    /// `roots`, and only once the spec and the sizes their headers claim are within `limits`), the files workers
    /// will fetch (`input_transport: coordinator`) and the provenance digests, read in the same pass.
    static func resolve(_ spec: JobSpec, kinds: JobKinds, roots: DataRoots, limits: SpecLimits) -> (Result<any RoundDriver, JobError>, InputDigests) {
        do { return resolve(try kinds.open(spec), kinds: kinds, roots: roots, limits: limits) } catch {
            return (.failure(error as? JobError ?? JobError("\(error)")), InputDigests())
        }
    }

    static func resolve(_ opened: OpenSpec, kinds: JobKinds, roots: DataRoots, limits: SpecLimits) -> (Result<any RoundDriver, JobError>, InputDigests) {
        do {
            let driver = try kinds.prepare(opened, roots: roots, limits: limits)
            var files: [InputFile] = [], known: [String: String] = [:]
            if opened.inputTransport == .coordinator { (files, known) = try inputFiles(opened, roots: roots) }
            var digests = opened.paths.isEmpty ? InputDigests() : digests(opened, known: known)
            digests.files = files
            return (.success(driver), digests)
        } catch let e as JobError {
            return (.failure(e), InputDigests())
        } catch {
            return (.failure(JobError("\(error)")), InputDigests())
        }
    }

    /// Content digests of a job's input and model files (provenance shown by `sigma job`); "" where there is no
    /// file or it cannot be read (resolve has already said what is wrong with the job).
    static func digests(_ spec: OpenSpec, known: [String: String] = [:]) -> InputDigests {
        let paths = spec.paths
        func d(model: Bool) -> String {
            let files = paths.filter { $0.model == model }.flatMap { p in p.folder.map { $0.required.map { p.path + "/" + $0 } } ?? [p.path] }
            return (try? Digest.files(files, known: known)) ?? ""
        }
        return InputDigests(input: d(model: false), model: d(model: true))
    }

    /// The files a job's workers will fetch (`input_transport: coordinator`): size and SHA-256 of each, as submitted,
    /// and their provenance digests by path (read in the same pass). Each must be a regular file under `roots`; the
    /// workers know them by the spec's paths.
    static func inputFiles(_ spec: OpenSpec, roots: DataRoots) throws -> ([InputFile], [String: String]) {
        var known: [String: String] = [:]
        let files = try spec.workerInputFiles(exists: { FileManager.default.fileExists(atPath: $0) }).map { path in
            let real = try roots.file(path, field: "input_transport coordinator")
            do {
                let (digest, sha, size) = try Digest.fileAndSHA256(real)
                known[path] = digest
                return InputFile(path: path, size: size, sha256: sha)
            } catch {
                throw JobError("input_transport coordinator: cannot read '\(path)' to serve it to workers")
            }
        }
        return (files, known)
    }

    /// What the journal holds of an earlier run, each job that had not ended prepared again by its kind (reading its
    /// files, as at submission: a file that changed or went fails that job, naming it).
    static func restored(_ journal: Journal, options: Options, logger: Logger) throws -> (next: JobID, jobs: [RestoredJob]) {
        var (next, jobs) = try journal.read(keep: options.core.keepFinishedJobs)
        for i in jobs.indices where !jobs[i].state.isFinal {
            jobs[i].job.spec = options.kinds.restarted(jobs[i].job.spec)
            let (input, digests) = resolve(jobs[i].job.spec, kinds: options.kinds, roots: options.dataRoots, limits: options.core.specLimits)
            jobs[i].input = input
            jobs[i].digests = digests
        }
        let open = jobs.filter { !$0.state.isFinal }.count
        logger.info("journal \(journal.path): \(jobs.count - open) ended jobs kept, \(open) to resume; next job id \(next)")
        return (next, jobs)
    }
}

extension CoordinatorShell.Options {
    /// The core's settings, with this machine's shared-memory key when same-host workers are offered shared memory
    /// (the core then knows which workers share its memory: `CoordinatorConfig.sameMachineCollectiveFrom`).
    var coreConfig: CoordinatorConfig {
        var c = core
        c.sharedMemoryKey = sharedMemory ? SharedMemory.hostKey : nil
        return c
    }
}

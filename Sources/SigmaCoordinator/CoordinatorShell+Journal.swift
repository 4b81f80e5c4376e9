import Foundation
import Logging
import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaTransport

// The poller thread's side of the journal: a round's entries written before what they made durable is sent.
extension CoordinatorShell.Loop {
    /// Writes this round's journal entries in one transaction, then sends what they made durable.
    mutating func flush() {
        let filed = shared.filedShards.withLock { f in defer { f.removeAll() }; return f }
        guard let journal, !(journalBatch.isEmpty && held.isEmpty && filed.isEmpty) else { return }
        do {
            try journal.write(journalBatch, filed: filed)
        } catch {
            logger.critical("\(error): what this round acknowledges is not durable (a restart may run it again)")
        }
        endsSinceTrim += journalBatch.reduce(0) { if case .ended = $1 { $0 + 1 } else { $0 } }
        if endsSinceTrim >= 64 {
            endsSinceTrim = 0
            do { try journal.trim(keep: options.core.keepFinishedJobs) } catch { logger.error("\(error)") }
        }
        checkpoints?.journaled(journalBatch)
        journalBatch.removeAll(keepingCapacity: true)
        let actions = held
        held.removeAll(keepingCapacity: true)
        performNow(actions)
    }

    /// The spec this coordinator runs for a submission: with a journal, its kind's `journaled` form (a train job
    /// that asks for no checkpoints gets a folder of its own under the state folder's `checkpoints/`).
    func journaled(_ spec: JobSpec) -> JobSpec {
        guard let checkpoints else { return spec }
        return options.kinds.journaled(spec, JournalDefaults(newFolder: { checkpoints.newFolder() }, checkpointSeconds: options.checkpointSeconds))
    }

    /// The journal's jobs, before the first message is read.
    mutating func restore(next: JobID, _ jobs: [RestoredJob]) {
        perform(core.handle(.restore(next: next, jobs: jobs), now: monotonicNanos()))
        flush()
    }

    /// The journal's deployments, deployed again (their replicas placed as workers register); one whose spec no longer
    /// holds (its weights gone, its limits changed) is logged and leaves the journal.
    mutating func redeploy(_ specs: [(spec: JobSpec, owner: String)]) {
        for (spec, owner) in specs {
            let config = CoordinatorShell.deployment(spec, kinds: options.kinds, limits: options.core.specLimits)
            if case .failure(let e) = config {
                logger.error("deployment '\(spec.name)' from the journal cannot be deployed again: \(e.message); deploy it again with: sigma deploy SPEC")
                journalBatch.append(.undeployed(name: spec.name))
                continue
            }
            // (as the client that made it, so that it still controls it; a trusted principal: no role check again)
            let who = owner.isEmpty ? Principal.trusted
                : owner.hasPrefix("name:") ? Principal(name: String(owner.dropFirst(5)), role: nil) : Principal(name: "journal", key: owner, role: nil)
            perform(core.handle(.deploy(LocalRequests.peer, request: 0, config, from: who), now: monotonicNanos()))
        }
        if !specs.isEmpty { logger.info("journal: \(specs.count) deployment(s) deployed again") }
        flush()
    }
}

/// Checkpoint folders a journaled coordinator gives train jobs that ask for none (`JobKind.journaled`):
/// `<state>/checkpoints/<random name>`, deleted when their job ends, or at start when no resumed job names them.
final class AutoCheckpoints: @unchecked Sendable {   // (used by the poller thread only, after start)
    let folder: String
    /// Names handed out (to train jobs that asked for no checkpoints) whose job is not accepted yet; the folder of
    /// each accepted job that has one.
    private var offered: Set<String> = []
    private var byJob: [JobID: String] = [:]

    init(stateFolder: String) throws {
        folder = stateFolder + "/checkpoints"
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            throw JournalError(file: folder, problem: "cannot create the checkpoints folder (\(error.localizedDescription)); give a writable --state-dir")
        }
    }

    /// A new folder's path (not created: the job's kind creates it if it runs).
    func newFolder() -> String {
        let name = (0..<4).map { _ in String(format: "%08x", UInt32.random(in: .min ... .max)) }.joined()
        if offered.count >= 10_000 { offered.removeAll() }   // (submissions refused before acceptance)
        offered.insert(name)
        return folder + "/" + name
    }

    /// Which job took which folder, from its journaled spec; an ended job's folder goes.
    func journaled(_ entries: [JournalEntry]) {
        for e in entries {
            switch e {
            case .accepted(let j) where !offered.isEmpty:
                if let name = name(in: j.spec) {
                    offered.remove(name)
                    byJob[j.id] = name
                }
            case .ended(let job, _, _, _, _, _, _):
                if let name = byJob.removeValue(forKey: job) { try? FileManager.default.removeItem(atPath: folder + "/" + name) }
            default: break
            }
        }
    }

    /// At start: the folders of resumed jobs stay (their checkpoints are where they continue from); others go.
    func restore(_ jobs: [RestoredJob]) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        offered = Set(names)
        for r in jobs where !r.state.isFinal {
            if let name = name(in: r.job.spec) {
                byJob[r.job.id] = name
                offered.remove(name)
            }
        }
        for name in offered { try? FileManager.default.removeItem(atPath: folder + "/" + name) }
        offered = []
    }

    /// The offered folder name a spec's JSON names, if any.
    private func name(in spec: JobSpec) -> String? {
        let body = String(decoding: spec.body, as: UTF8.self)
        return offered.first { body.contains($0) }
    }
}

import Logging
import SigmaCoordinatorCore
import SigmaModel
import SigmaTransport

// The poller thread's side of the journal: a round's entries written before what they made durable is sent.
extension CoordinatorShell.Loop {
    /// Writes this round's journal entries in one transaction, then sends what they made durable.
    mutating func flush() {
        guard let journal, !(journalBatch.isEmpty && held.isEmpty) else { return }
        do {
            try journal.write(journalBatch)
        } catch {
            logger.critical("\(error): what this round acknowledges is not durable (a restart may run it again)")
        }
        endsSinceTrim += journalBatch.reduce(0) { if case .ended = $1 { $0 + 1 } else { $0 } }
        if endsSinceTrim >= 64 {
            endsSinceTrim = 0
            do { try journal.trim(keep: options.core.keepFinishedJobs) } catch { logger.error("\(error)") }
        }
        journalBatch.removeAll(keepingCapacity: true)
        let actions = held
        held.removeAll(keepingCapacity: true)
        performNow(actions)
    }

    /// The journal's jobs, before the first message is read.
    mutating func restore(next: JobID, _ jobs: [RestoredJob]) {
        perform(core.handle(.restore(next: next, jobs: jobs), now: monotonicNanos()))
        flush()
    }
}

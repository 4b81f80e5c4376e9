import SigmaCoordinatorCore
import SigmaJobs
import SigmaModel
import SigmaProtocol

/// What the coordinator's shell answers to `.resolveInput`: the job's kind prepares it within `limits` (a map-reduce
/// job over a file is taken to have `rows` rows: no file is read here).
func shellPrepare(_ s: Submit, rows: UInt64, limits: SpecLimits = .standard) -> Result<any RoundDriver, JobError> {
    do {
        do { try JobKinds.standard.validate(s.spec, limits: limits) } catch let e as SpecError { throw JobError("\(e)") }
        if let m = MapReduceKind.spec(in: s.spec) {
            return .success(try MapReduceKind.driver(m, rows: m.input.generatedCount ?? rows, limits: limits))
        }
        return .success(try JobKinds.standard.prepare(s.spec, roots: .currentDirectory(), limits: limits))
    } catch let e as JobError {
        return .failure(e)
    } catch {
        return .failure(JobError("\(error)"))
    }
}

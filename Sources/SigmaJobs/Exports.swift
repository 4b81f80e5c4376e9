// SigmaJobs builds on what the coordinator core knows of jobs (rounds, partials, results): whoever imports SigmaJobs
// sees those too.
@_exported import SigmaJobCore

import ArgumentParser
import Foundation
import SigmaJobs
import SigmaModel

/// `--data-root DIR` (repeatable) of the commands that read job files: the coordinator and the worker.
struct DataRootOptions: ParsableArguments {
    @Option(name: .customLong("data-root"), help: ArgumentHelp(
        "A folder job files may be read from (coordinator: and checkpoints written into); repeat for several (default: cluster.yaml data_roots, else the current folder).",
        valueName: "dir"))
    var dataRoots: [String] = []

    /// `--data-root`, else the config's `data_roots`, else the current folder; each must be a folder.
    func roots(_ cfg: ClusterConfig) throws -> DataRoots {
        let folders = !dataRoots.isEmpty ? dataRoots : !cfg.dataRoots.isEmpty ? cfg.dataRoots : [FileManager.default.currentDirectoryPath]
        do { return try DataRoots(folders) } catch { throw CLIError.usage("\(error) (--data-root / cluster.yaml data_roots)") }
    }
}

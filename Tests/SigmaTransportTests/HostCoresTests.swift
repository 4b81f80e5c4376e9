import Foundation
import SigmaWorker
import Testing

/// Workers on one host share its cores (issue 16: compute threads × BLAS threads never exceed the cores).
@Suite struct HostCoresTests {
    @Test func budgetNeverExceedsTheFreeCoresAndSaysWhy() {
        // Asked for nothing: every free core, quietly.
        #expect(CoreBudget(requested: nil, cores: 8, free: 8) == CoreBudget(requested: 8, cores: 8, free: 8))
        #expect(CoreBudget(requested: nil, cores: 8, free: 8).threads == 8)
        #expect(CoreBudget(requested: nil, cores: 8, free: 3).threads == 3)
        #expect(CoreBudget(requested: nil, cores: 8, free: 3).warning == nil)
        // Asked for what is free: as asked.
        #expect(CoreBudget(requested: 2, cores: 8, free: 2).threads == 2)
        #expect(CoreBudget(requested: 2, cores: 8, free: 2).warning == nil)
        // More than free, more than the host, nothing free: fewer threads, and a warning naming the numbers.
        let short = CoreBudget(requested: 6, cores: 8, free: 2)
        #expect(short.threads == 2 && short.warning?.contains("only 2 of this host's 8 cores are free") == true)
        let over = CoreBudget(requested: 64, cores: 8, free: 8)
        #expect(over.threads == 8 && over.warning?.contains("--threads 64 is more than this host's 8 cores") == true)
        let none = CoreBudget(requested: 1, cores: 2, free: 0)
        #expect(none.threads == 1 && none.warning?.contains("all 2 cores of this host are held") == true)
        for cores in 1...8 {
            for free in 0...cores {
                for r in [nil, 1, 2, 5, 100] as [Int?] {
                    let b = CoreBudget(requested: r, cores: cores, free: free)
                    #expect(b.threads >= 1 && b.threads <= max(1, free), "requested \(String(describing: r)) cores \(cores) free \(free): \(b.threads)")
                }
            }
        }
    }

    /// Claims are real locks: a second claim on the same folder gets only what the first left, and gets the cores
    /// back once the first lets go.
    @Test func claimsOnOneHostShareItsCores() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-cores-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = HostCoreClaim(requested: 3, cores: 4, directory: dir)
        #expect(first.budget.threads == 3 && first.budget.warning == nil)
        let second = HostCoreClaim(requested: nil, cores: 4, directory: dir)
        #expect(second.budget.threads == 1)
        let third = HostCoreClaim(requested: 2, cores: 4, directory: dir)
        #expect(third.budget.threads == 1 && third.budget.warning?.contains("all 4 cores") == true)
        first.release()
        let fourth = HostCoreClaim(requested: 2, cores: 4, directory: dir)
        #expect(fourth.budget.threads == 2 && fourth.budget.warning == nil)
        second.release(); third.release(); fourth.release()
        // Off: no folder, the request stands (capped by the host).
        #expect(HostCoreClaim(requested: 3, cores: 4, directory: nil).budget.threads == 3)
    }
}

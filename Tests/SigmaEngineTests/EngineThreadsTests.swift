import Glibc
@testable import SigmaEngine
import Testing

/// The engine's own threads (docs/architecture.md, "Threads in the engine"): products split by rows or columns over
/// `PassTeam`, element-wise passes split by ranges — the same bits as one thread, whatever the count.
@Suite(.serialized) struct EngineThreadsTests {
    /// Runs `body` with the engine on `threads` threads, then puts the count back.
    func on<T>(_ threads: Int, _ body: () -> T) -> T {
        let saved = BLASInfo.threads
        BLASInfo.setThreads(threads)
        defer { BLASInfo.setThreads(saved) }
        return body()
    }

    func bits(_ t: Tensor) -> [UInt32] { t.scalars.map(\.bitPattern) }

    @Test func aProductIsSplitAlongItsLongerSideAtAlignedBounds() throws {
        // rows: more rows than columns; every bound but the last a multiple of 64, the last the whole extent
        let rows = try #require(BLAS.productSplit(m: 1000, n: 300, k: 64, threads: 3, align: (64, 64)))
        #expect(rows.byRows && rows.bounds == [0, 320, 640, 1000])
        // columns: a batch of 256 rows against 1024 outputs (a training step's forward): the 256-row operand is the
        // one each part packs again
        let cols = try #require(BLAS.productSplit(m: 256, n: 1024, k: 784, threads: 2, align: (64, 64)))
        #expect(!cols.byRows && cols.bounds == [0, 512, 1024])
        // a 10-wide output is split by rows; a 10-row one by columns
        #expect(BLAS.productSplit(m: 2048, n: 10, k: 1024, threads: 2, align: (64, 64))?.byRows == true)
        #expect(BLAS.productSplit(m: 10, n: 2048, k: 1024, threads: 2, align: (64, 64))?.byRows == false)
        // every part keeps 2²¹ multiply-adds or more: fewer parts than threads where three would be smaller, and none
        // for a product whose parts would go to OpenBLAS's small-matrix kernel (100³ and under on the AVX-512 sets)
        #expect(BLAS.productSplit(m: 1000, n: 100, k: 64, threads: 3, align: (64, 64))?.bounds == [0, 512, 1000])
        #expect(BLAS.productSplit(m: 300, n: 165, k: 70, threads: 3, align: (64, 64)) == nil)
        #expect(BLAS.productSplit(m: 256, n: 10, k: 1024, threads: 2, align: (64, 64)) == nil)
        // no more parts than 64-wide slices; none for small products or narrow ones
        #expect(BLAS.productSplit(m: 200, n: 100, k: 4096, threads: 8, align: (64, 64))?.bounds == [0, 64, 128, 200])
        #expect(BLAS.productSplit(m: 64, n: 64, k: 64, threads: 4, align: (64, 64)) == nil)
        #expect(BLAS.productSplit(m: 100, n: 100, k: 100_000, threads: 4, align: (64, 64)) == nil)
        // a kernel set no cut keeps the bits of: never split
        #expect(BLAS.productSplit(m: 1000, n: 300, k: 64, threads: 3, align: (nil, nil)) == nil)
        // rows only (Haswell and Zen: 24-row tiles, and rounding that depends on the width): a wide product is split by
        // rows all the same, at the multiples of 24 nearest the even shares
        #expect(BLAS.productSplit(m: 256, n: 1024, k: 784, threads: 2, align: (24, nil))?.bounds == [0, 120, 256])
        #expect(BLAS.productSplit(m: 1000, n: 300, k: 64, threads: 3, align: (96, nil))?.bounds == [0, 288, 672, 1000])
        #expect(BLAS.productSplit(m: 40, n: 4096, k: 4096, threads: 2, align: (24, nil)) == nil)
    }

    /// Products of every transpose form, odd sizes (partial tiles, K over OpenBLAS's block, where its own threads
    /// block K differently from one thread), with and without an initial C: bitwise equal on 1, 2, 3 and 5 threads.
    @Test func splitProductsEqualOneThreadBitwise() {
        var rng = SeededRandom(seed: 41)
        let shapes: [(m: Int, n: Int, k: Int)] = [(256, 1024, 784), (300, 1000, 513), (1000, 300, 256), (130, 777, 1100)]
        for s in shapes {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = Tensor.uniform(ta ? [s.k, s.m] : [s.m, s.k], low: -1, high: 1, rng: &rng)
                let b = Tensor.uniform(tb ? [s.n, s.k] : [s.k, s.n], low: -1, high: 1, rng: &rng)
                let one = on(1) { bits(Kernels.matmul(a, b, transA: ta, transB: tb)) }
                for threads in [2, 3, 5] {
                    #expect(on(threads) { bits(Kernels.matmul(a, b, transA: ta, transB: tb)) } == one, "\(s) transA \(ta) transB \(tb), \(threads) threads")
                }
            }
            // beta 1: the bias rows are the product's initial C
            let x = Tensor.uniform([s.m, s.k], low: -1, high: 1, rng: &rng), w = Tensor.uniform([s.n, s.k], low: -1, high: 1, rng: &rng)
            let bias = Tensor.uniform([s.n], low: -1, high: 1, rng: &rng)
            let one = on(1) { bits(Kernels.linear(x, w, bias)) }
            #expect(on(3) { bits(Kernels.linear(x, w, bias)) } == one, "linear \(s)")
        }
    }

    /// The team really runs the parts at once, on as many threads as parts; a second caller meanwhile is told no.
    @Test func theTeamRunsEveryPartOnItsOwnThread() {
        let ids = UnsafeMutablePointer<pthread_t>.allocate(capacity: 4)
        ids.initialize(repeating: 0, count: 4)
        let nestedRefused = UnsafeMutablePointer<Bool>.allocate(capacity: 1)
        nestedRefused.initialize(to: false)
        defer { ids.deallocate(); nestedRefused.deallocate() }
        let (shared, refused) = (Unchecked(ids), Unchecked(nestedRefused))
        var ran = false
        for _ in 0..<1000 where !ran {   // (another suite's product may hold the team for a moment)
            ran = PassTeam.shared.run(parts: 4) { k in
                shared.v[k] = pthread_self()
                if k == 0 { refused.v.pointee = !PassTeam.shared.run(parts: 2) { _ in } }
            }
            if !ran { usleep(1000) }
        }
        #expect(ran)
        #expect(Set((0..<4).map { UInt(ids[$0]) }).count == 4, "each part on its own thread")
        #expect(ids[0] == pthread_self(), "part 0 runs on the caller")
        #expect(nestedRefused.pointee, "a caller while the team is held is told no")
    }

    /// Element-wise kernels split over the engine's threads (ReLU, its backward, a bias gradient's row sums) and one
    /// whole SGD step of the `sigma bench mlp` model: bitwise the same on 1, 2 and 3 threads.
    @Test func aTrainingStepIsBitwiseTheSameOnOneTwoOrThreeThreads() {
        var rng = SeededRandom(seed: 5)
        let x = Tensor.uniform([256, 784], low: -1, high: 1, rng: &rng)
        let y = (0..<256).map { _ in Int32(rng.next() % 10) }
        let g = Tensor.uniform([256, 1024], low: -1, high: 1, rng: &rng), h = Tensor.uniform([256, 1024], low: -1, high: 1, rng: &rng)
        for threads in [2, 3] {
            #expect(on(threads) { bits(Kernels.unary(.relu, h)) } == on(1) { bits(Kernels.unary(.relu, h)) })
            #expect(on(threads) { bits(Kernels.unaryBackward(.relu, x: h, y: h, g: g)) } == on(1) { bits(Kernels.unaryBackward(.relu, x: h, y: h, g: g)) })
            #expect(on(threads) { bits(Kernels.sumTo(g, shape: [1024])) } == on(1) { bits(Kernels.sumTo(g, shape: [1024])) })
        }
        func trained(threads: Int) -> [[UInt32]] {
            on(threads) {
                let model = Sequential.mlp([784, 1024, 1024, 10], seed: 1)
                let opt = SGD(learningRate: 0.01, momentum: 0.9)
                for _ in 0..<2 {
                    let graph = Graph()
                    opt.zeroGrad(model.parameters)
                    graph.backward(from: model(graph.constant(x)).crossEntropy(y))
                    opt.step(model.parameters)
                }
                return model.parameters.map { bits($0.value) }
            }
        }
        // (the model's three layers are one feature-major chain: `LinearChain`)
        let one = trained(threads: 1)
        for threads in [2, 3] { #expect(trained(threads: threads) == one, "\(threads) threads") }
    }
}

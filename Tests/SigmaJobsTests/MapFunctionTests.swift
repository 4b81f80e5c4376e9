import Foundation
import SigmaJobs
import SigmaModel
import Testing

/// The map functions (issue 22: log, exp, clip, lists applied in order) against NumPy float64 on the same values
/// (Fixtures/make_map_functions.py): count exact, min and max within 2 ulps (libm and NumPy's exp/log may differ in
/// the last bit), the sum within 1e-13 of the exact sum (math.fsum) — 1,006 values, each within an ulp.
@Suite struct MapFunctionTests {
    struct Reference: Decodable { let sum: Double?, min: Double?, max: Double?, count: Int }

    @Test func everyFunctionAgreesWithNumPy() throws {
        let refs = try JSONDecoder().decode([String: Reference].self, from: Data(contentsOf: URL(fileURLWithPath: fixtures + "/map_functions.json")))
        #expect(refs.count == 6)
        for (map, ref) in refs {
            let job = try JobSpec.parse("kind: map-reduce\ninput: {npy: \(fixtures)/map_input.npy}\nmap: \(map)\nreduce: [sum, min, max, count]\n")
            let spec = try #require(MapReduceKind.spec(in: job), "\(map)")
            let p = try MapReduceKernel.runLocal(spec)
            #expect(p.value(.count) == Double(ref.count), "\(map)")
            guard let sum = ref.sum, let lo = ref.min, let hi = ref.max else {
                #expect(p.total.isNaN && p.value(.min)!.isNaN && p.value(.max)!.isNaN, "\(map): NumPy gives NaN")
                continue
            }
            #expect(abs(p.total - sum) <= 1e-13 * abs(sum), "\(map): sum \(p.total) vs \(sum)")
            #expect(abs(p.value(.min)! - lo) <= 2 * lo.ulp && abs(p.value(.max)! - hi) <= 2 * hi.ulp, "\(map): min/max \(p.value(.min)!), \(p.value(.max)!) vs \(lo), \(hi)")
            // Any split gives the same partials combined in order.
            var split = spec
            split.sharding = .count(7)
            var combined = Partial()
            for r in split.sharding.ranges(rows: 1006) { combined.combine(try MapReduceKernel.run(split, start: r.start, count: r.count)) }
            #expect(combined.value(.min).map(\.bitPattern) == p.value(.min).map(\.bitPattern) && combined.count == p.count, "\(map)")
        }
    }

    @Test func listsApplyInOrderAndBadFunctionsAreNamed() throws {
        let f = ElementFunction.compose([.abs, .affine(a: 2, b: 0), .square])
        #expect(f.apply(-1.5) == 9 && ElementFunction.clip(low: 0, high: 1).apply(.nan).isNaN)
        func problem(_ map: String) -> String {
            do {
                _ = try JobSpec.parse("kind: map-reduce\ninput: {generate: range, count: 10}\nmap: \(map)\nreduce: [sum]\n")
                return "accepted"
            } catch { return "\(error)" }
        }
        #expect(problem("exq").contains("did you mean 'exp'"))
        #expect(problem("clip").contains("{clip: {low: 0, high: 1}}"))
        #expect(problem("{clip: {low: 2, high: 1}}").contains("low 2.0 is above high 1.0"))
        #expect(problem("[]").contains("1 to 64 functions"))
        #expect(problem("[abs, [square]]").contains("map[1]"))
        #expect(problem("[abs, {affine: {c: 1}}]").contains("map[1].affine.c"))
        // From the wire too: a clip whose bounds are out of order is refused by the kind's checks.
        let bad = MapReduceSpec(input: .range(count: 10, start: 0, step: 1), map: .compose([.clip(low: 1, high: 0)]), reduce: [.sum])
        #expect(throws: SpecError.self) { try JobSpec.mapReduce(bad).validate() }
    }
}

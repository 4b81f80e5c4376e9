import CZeroMQ
import Foundation
import SigmaModel
import SigmaTransport
import Testing

@Suite struct CurveTests {
    /// ZeroMQ RFC 32's test vector, libzmq's own encoder on random keys, and what must not decode.
    @Test func z85MatchesTheRfcAndLibzmq() {
        let hello: [UInt8] = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]
        #expect(Z85.encode(hello) == "HelloWorld")
        #expect(Z85.decode("HelloWorld") == hello)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let key = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var out = [CChar](repeating: 0, count: 41)
            #expect(zmq_z85_encode(&out, key, 32) != nil)
            let theirs = String(decoding: out.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            #expect(Z85.encode(key) == theirs)
            #expect(Z85.decode(theirs) == key && Z85.isKey(theirs))
        }
        #expect(Z85.encode([1, 2, 3]) == nil)
        #expect(Z85.decode("Hello") != nil && Z85.decode("Hell") == nil)   // length must be a multiple of 5
        #expect(Z85.decode("Hell\"") == nil)                                 // '"' is not in the alphabet
        #expect(Z85.decode("#####") == nil)                                  // 85⁵ − 1 > 2³² − 1
        #expect(!Z85.isKey("HelloWorld"))
    }

    @Test func keyFilesRoundTripAndBadOnesNameTheProblem() throws {
        let (pub, secret) = try Curve.newKeyPair()
        #expect(Curve.publicKey(ofSecret: secret) == pub)
        let server = try Curve.newKeyPair().publicKey
        let k = CurveKeyFile(name: "worker-b", publicKey: pub, secretKey: secret, coordinatorKey: server, role: .worker)
        #expect(try CurveKeyFile.parse(k.secretFileText!, file: "w.key") == k)
        #expect(try CurveKeyFile.parse(k.publicFileText, file: "w.pub") == CurveKeyFile(name: "worker-b", publicKey: pub, role: .worker))
        // A public key from before roles is enrolled as a client, the least a key file can ask for.
        #expect(try CurveKeyFile.parse("name = old\npublic = \(pub)\n", file: "old.pub").enrolledRole == .client)
        // Keys may hold '#': only whole lines are comments.
        let hashy = CurveKeyFile(name: "h", publicKey: "#" + String(pub.dropFirst()))
        if Z85.isKey(hashy.publicKey) { #expect(try CurveKeyFile.parse(hashy.publicFileText, file: "h.pub") == hashy) }
        #expect(try Curve.verified(k, file: "w.key") == (pub, secret))
        var mixed = k
        mixed.publicKey = server
        #expect { _ = try Curve.verified(mixed, file: "w.key") } throws: { "\($0)".contains("does not belong") }

        // Errors name the file, the line and the field, never what the file holds (it may hold a secret key).
        func fails(_ text: String, _ needle: String) {
            #expect { _ = try CurveKeyFile.parse(text, file: "x.key") } throws: { e in
                "\(e)".hasPrefix("x.key: ") && "\(e)".contains(needle) && !"\(e)".contains(pub.prefix(10)) && !"\(e)".contains("red")
                    && !"\(e)".contains("etc") && !"\(e)".contains("root")
            }
        }
        fails("name = a\n", "no 'public' key")
        fails("public = abc\n", "not a CURVE key")
        fails("public = \(pub)\nsecret = \(pub.dropLast())\n", "'secret' is not a CURVE key")
        fails("public = \(pub)\ncolour = red\n", "line 2: unknown field")
        fails("public = \(pub)\nrole = root\n", "'role' must be worker, client or admin")
        fails("public = \(pub)\npublic = \(pub)\n", "given twice")
        // ('=' is a Z85 character: a key that starts with it would make "public =…" a field after all, so none here)
        fails("public \(pub.replacingOccurrences(of: "=", with: "."))\n", "expected 'field = value'")
        fails("name = ../etc\npublic = \(pub)\n", "'name' must be")
    }

    @Test func zapAdmitsEnrolledCurveKeysOnly() throws {
        let (pub, _) = try Curve.newKeyPair()
        let raw = Z85.decode(pub)!
        let w1 = Principal(name: "w1", key: pub, role: .worker)
        let lookup: (String, ZAP.Credential) -> Principal? = { domain, c in domain == "d" && c == .curve(key: pub) ? w1 : nil }
        func request(_ mechanism: String, _ credentials: [[UInt8]], domain: String = "d") -> [[UInt8]] {
            [Array("1.0".utf8), [7, 7], Array(domain.utf8), Array("10.0.0.9".utf8), [], Array(mechanism.utf8)] + credentials
        }
        let ok = ZAP.decide(request("CURVE", [raw]), lookup: lookup)
        #expect(ok.admitted && ok.reply == [Array("1.0".utf8), [7, 7], Array("200".utf8), Array("OK".utf8), Array("worker w1 \(pub)".utf8), []])
        // The user id carries the principal to every message of the connection.
        #expect(Principal(userID: "worker w1 \(pub)") == w1)
        #expect(Principal(userID: Principal.trusted.userID) == .trusted)
        #expect(Principal(userID: "root w1 -") == nil && Principal(userID: "w1") == nil)
        let other = try Curve.newKeyPair().publicKey
        let refused = ZAP.decide(request("CURVE", [Z85.decode(other)!]), lookup: lookup)
        #expect(!refused.admitted && refused.reply[2] == Array("400".utf8) && refused.note.contains(other) && refused.note.contains("10.0.0.9"))
        #expect(!ZAP.decide(request("CURVE", [raw], domain: "elsewhere"), lookup: lookup).admitted)
        #expect(ZAP.decide(request("NULL", []), lookup: lookup).reply[2] == Array("400".utf8))
        #expect(ZAP.decide(request("CURVE", [Array(raw.prefix(31))]), lookup: lookup).reply[2] == Array("400".utf8))
        #expect(ZAP.decide([Array("1.0".utf8), [1]], lookup: lookup).reply[2] == Array("500".utf8))
        // PLAIN carries the local token: admitted as the trusted local user only with the right token.
        let gate = ZAPService.Gate.token("s3cret-token")
        let local: (String, ZAP.Credential) -> Principal? = { _, c in gate.admit(c) }
        let right = ZAP.decide(request("PLAIN", [Array("local".utf8), Array("s3cret-token".utf8)]), lookup: local)
        #expect(right.admitted && right.reply[4] == Array(Principal.trusted.userID.utf8))
        #expect(!ZAP.decide(request("PLAIN", [Array("local".utf8), Array("s3cret-tokeN".utf8)]), lookup: local).admitted)
        #expect(!ZAP.decide(request("PLAIN", [Array("local".utf8), Array("s3cret".utf8)]), lookup: local).admitted)
        #expect(!ZAP.decide(request("CURVE", [raw]), lookup: local).admitted)
        #expect(!ZAP.decide(request("PLAIN", [Array("local".utf8), Array("s3cret-token".utf8)]), lookup: lookup).admitted)
        #expect(ZAP.decide(request("CURVE", [raw]).enumerated().map { $0.offset == 0 ? Array("2.0".utf8) : $0.element }, lookup: lookup).reply[2] == Array("500".utf8))
    }

    /// The allow folder is read again when it changes: a copied-in key is admitted, a deleted one refused, and a
    /// broken file skipped with its reason.
    @Test func allowListFollowsItsFolder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-allow-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try Curve.newKeyPair().publicKey, b = try Curve.newKeyPair().publicKey
        try CurveKeyFile(name: "a", publicKey: a, role: .admin).publicFileText.write(toFile: dir + "/a.pub", atomically: true, encoding: .utf8)
        let list = try AllowList(folder: dir)
        #expect(list.name(of: a) == "a" && list.name(of: b) == nil)
        #expect(list.principal(of: a) == Principal(name: "a", key: a, role: .admin))
        try CurveKeyFile(name: "b", publicKey: b, role: .worker).publicFileText.write(toFile: dir + "/b.pub", atomically: true, encoding: .utf8)
        try "public = nonsense\n".write(toFile: dir + "/broken.pub", atomically: true, encoding: .utf8)
        #expect(list.name(of: b) == "b")
        #expect(list.skipped.count == 1)
        #expect(list.skipped.first?.contains("broken.pub") == true)
        try FileManager.default.removeItem(atPath: dir + "/a.pub")
        #expect(list.name(of: a) == nil && list.name(of: b) == "b")
        // A key file rewritten in place (the folder itself unchanged) is read again too.
        let c = try Curve.newKeyPair().publicKey
        let fh = try #require(FileHandle(forWritingAtPath: dir + "/b.pub"))
        try fh.truncate(atOffset: 0)
        try fh.write(contentsOf: Data(CurveKeyFile(name: "c", publicKey: c, role: .client).publicFileText.utf8))
        try fh.close()
        #expect(list.name(of: c) == "c" && list.name(of: b) == nil && list.principal(of: c)?.role == .client)
        #expect { _ = try AllowList(folder: dir + "/missing") } throws: { "\($0)".contains("no such folder") }
        // Whoever can write the folder decides who gets in: a key file others may write is skipped, a folder others
        // may write admits nobody (and is refused at start), until fixed.
        chmod(dir + "/b.pub", 0o666)
        #expect(list.name(of: c) == nil && list.skipped.contains { $0.contains("b.pub") && $0.contains("writable by others") })
        chmod(dir + "/b.pub", 0o644)
        #expect(list.name(of: c) == "c")
        chmod(dir, 0o777)
        #expect(list.name(of: c) == nil && list.skipped.first?.contains("chmod go-w") == true)
        #expect { _ = try AllowList(folder: dir) } throws: { "\($0)".contains("writable by others") }
        chmod(dir, 0o755)
        #expect(list.name(of: c) == "c")
        // A key file reached through a symlink (how Kubernetes mounts a ConfigMap: NAME.pub -> ..data/NAME.pub) counts
        // by the file it leads to: admitted when that file is closed to others, skipped when it is not.
        let d = try Curve.newKeyPair().publicKey
        try FileManager.default.createDirectory(atPath: dir + "/..data", withIntermediateDirectories: true)
        try CurveKeyFile(name: "d", publicKey: d, role: .worker).publicFileText.write(toFile: dir + "/..data/d.pub", atomically: true, encoding: .utf8)
        chmod(dir + "/..data/d.pub", 0o644)
        try FileManager.default.createSymbolicLink(atPath: dir + "/d.pub", withDestinationPath: "..data/d.pub")
        #expect(list.principal(of: d)?.role == .worker)
        chmod(dir + "/..data/d.pub", 0o666)
        #expect(list.name(of: d) == nil && list.skipped.contains { $0.contains("d.pub") && $0.contains("writable by others") })
    }
}

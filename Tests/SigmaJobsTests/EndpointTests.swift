import SigmaModel
import Testing

/// One endpoint form, `tcp://HOST:PORT`, from whatever a user types (issue 20).
@Suite struct EndpointTests {
    @Test(arguments: [
        ("tcp://10.0.0.5:7700", "tcp://10.0.0.5:7700"), ("10.0.0.5:7800", "tcp://10.0.0.5:7800"), ("hostA", "tcp://hostA:7700"),
        ("17700", "tcp://127.0.0.1:17700"), (":17700", "tcp://127.0.0.1:17700"), ("TCP://node-1.lan:9000", "tcp://node-1.lan:9000"),
        ("tcp://[::1]:7700", "tcp://[::1]:7700"), ("[fe80::1]", "tcp://[fe80::1]:7700"), (" tcp://127.0.0.1:1 ", "tcp://127.0.0.1:1"),
    ])
    func acceptedFormsAreNormalised(_ text: String, _ endpoint: String) throws {
        #expect(try Endpoint.parse(text).description == endpoint)
    }

    @Test(arguments: [
        ("http://127.0.0.1:7701", "web address"), ("https://hostA", "web address"), ("tcp://tcp://127.0.0.1:7700", "two schemes"),
        ("ipc:///tmp/sigma", "only tcp://"), ("tcp://127.0.0.1:70000", "port '70000'"), ("hostA:port", "port 'port'"),
        ("tcp://127.0.0.1:0", "port '0'"), ("::1", "brackets"), ("tcp://hostA:7700/jobs", "path"), ("", "empty"), ("host name", "not a host"),
    ])
    func mistakesAreNamed(_ text: String, _ problem: String) {
        #expect {
            _ = try Endpoint.parse(text, field: "--coordinator")
        } throws: { e in
            guard let s = e as? SpecError else { return false }
            return s.field == "--coordinator" && s.problem.contains(problem) && s.problem.contains("tcp://HOST:PORT")
        }
    }

    /// Addresses to listen on: port 0 (a free port) is allowed, and a port is optional.
    @Test func bindAddressesMayOmitThePortOrAskForAnyFreeOne() throws {
        #expect(try Endpoint.components("0.0.0.0", field: "--listen", bind: true) == ("0.0.0.0", nil))
        #expect(try Endpoint.components("tcp://127.0.0.1:0", field: "--listen", bind: true) == ("127.0.0.1", 0))
        #expect(try Endpoint.components("7800", field: "--listen", bind: true) == ("127.0.0.1", 7800))
        #expect(try Endpoint.components("tcp://*:7700", field: "--listen", bind: true) == ("*", 7700))
    }
}

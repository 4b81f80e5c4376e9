import ArgumentParser
import Foundation
import SigmaClient
import SigmaModel
import SigmaProtocol
import SigmaDashboard
import SigmaTerminal

struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "Live full-screen dashboard of the cluster: workers, jobs, totals; refreshed every second.",
        discussion: """
        Example:
          sigma top
          sigma top --once                 # one frame on stdout, for scripts
          sigma top --json                 # its figures, once (as status --json)
        Keys: s cycles the worker sort (id, cpu, throughput, rtt, in-flight); q or Ctrl-C quits.
        Works in an 80×24 terminal (over SSH too); bigger terminals show more rows.
        """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var client: ClientOptions
    @Flag(help: "Print one frame and exit.") var once = false
    @Option(help: "Seconds between refreshes.") var interval: Double = 1

    func run() async throws {
        do {
            let c = try client.connect(common, probe: once || client.json)   // (the live view waits for a coordinator that is not up yet)
            defer { c.close() }
            if client.json {
                // (one snapshot of what the view shows, as `sigma status --json` prints it)
                let s = try await mapClientError { try await c.status(timeout: client.timeout) }
                print(jsonString(s.jsonObject))
                return
            }
            if once {
                let s = try await mapClientError { try await c.status(timeout: client.timeout) }
                let size = terminalSize()
                var view = TopView(status: s, sort: .id)
                view.deployments = (try? await c.deployments(timeout: client.timeout)) ?? []
                print(view.render(width: size.width, height: size.height).joined(separator: "\n"))
                return
            }
            let terminal = RawTerminal()
            defer { terminal.restore() }
            var sort = TopView.Sort.id
            var last: ClusterStatus? = nil
            var deployments: [DeploymentStatus] = []
            var lastAt = Date()
            var problem = ""
            var unreachableSince: Date? = nil
            while true {
                do {
                    // (a coordinator that went away is noticed within 3 s; the same connection reaches it again
                    // when it is back — a restarted one answers with its journaled jobs)
                    last = try await c.status(timeout: min(client.timeout, 3))
                    deployments = (try? await c.deployments(timeout: min(client.timeout, 3))) ?? deployments
                    lastAt = Date()
                    problem = ""
                    unreachableSince = nil
                } catch ClientError.noAnswer {
                    let since = unreachableSince ?? Date().addingTimeInterval(-min(client.timeout, 3))
                    unreachableSince = since
                    // (short: it must fit an 80-column terminal)
                    problem = "unreachable for \(Int(Date().timeIntervalSince(since))) s: \(c.endpoint), retrying"
                        + (last == nil ? "" : " (figures \(Int(Date().timeIntervalSince(lastAt))) s old)")
                } catch {
                    problem = "\(error)"
                }
                let size = terminalSize()
                var lines = last.map { s in
                    var view = TopView(status: s, sort: sort)
                    view.deployments = deployments
                    return view.render(width: size.width, height: size.height)
                }
                    ?? ["sigma top — waiting for the coordinator at \(c.endpoint)"]
                if !problem.isEmpty { lines.insert(String(("! " + problem).prefix(size.width)), at: 0) }
                terminal.draw(Array(lines.prefix(size.height)))
                // Keys are polled (never a blocking read) until the next refresh.
                let until = Date().addingTimeInterval(max(0.1, interval))
                var redraw = false
                while Date() < until, !redraw {
                    for key in terminal.keys() {
                        switch key {
                        case UInt8(ascii: "q"), 3: return
                        case UInt8(ascii: "s"):
                            sort = sort.next
                            redraw = true
                        default: break
                        }
                    }
                    if !redraw { try await Task.sleep(nanoseconds: 50_000_000) }
                }
            }
        } catch { exitWith(error) }
    }
}


func terminalSize() -> (width: Int, height: Int) {
    var ws = winsize()
    if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0, ws.ws_row > 0 {
        return (Int(ws.ws_col), Int(ws.ws_row))
    }
    return (80, 24)
}

/// The terminal in raw mode on the alternate screen while `sigma top` runs; restored on exit.
final class RawTerminal {
    var saved = termios()
    let isTTY = isatty(STDIN_FILENO) == 1

    init() {
        if isTTY {
            tcgetattr(STDIN_FILENO, &saved)
            var raw = saved
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
            tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        }
        write("\u{1B}[?1049h\u{1B}[?25l")
    }

    func restore() {
        write("\u{1B}[?25h\u{1B}[?1049l")
        if isTTY { tcsetattr(STDIN_FILENO, TCSANOW, &saved) }
    }

    func draw(_ lines: [String]) {
        write("\u{1B}[H" + lines.map { $0 + "\u{1B}[K" }.joined(separator: "\r\n") + "\u{1B}[J")
    }

    /// Keys typed since the last call (never blocks).
    func keys() -> [UInt8] {
        var out: [UInt8] = []
        var p = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        while poll(&p, 1, 0) > 0, p.revents & Int16(POLLIN) != 0 {
            var b: UInt8 = 0
            guard read(STDIN_FILENO, &b, 1) == 1 else { break }
            out.append(b)
        }
        return out
    }

    func write(_ s: String) {
        FileHandle.standardOutput.write(Data(s.utf8))
    }
}

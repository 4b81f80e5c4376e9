import Foundation

/// A PNG screenshot as RGB pixels, for tests that look at what a browser drew. The PNG is parsed and unfiltered
/// here; only zlib's inflate is borrowed, from Python's standard library (python3 is on every Debian with Swift).
struct Picture {
    let width: Int, height: Int
    /// RGB, row after row.
    let rgb: [UInt8]

    /// No pixels (before a first screenshot is read).
    static let empty = Picture(width: 0, height: 0, rgb: [])

    static func load(png path: String) async throws -> Picture {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard data.count > 33, data[0..<8].elementsEqual([137, 80, 78, 71, 13, 10, 26, 10]) else { throw SigmaTestError("\(path) is not a PNG") }
        func u32(_ i: Int) -> Int { Int(data[i]) << 24 | Int(data[i + 1]) << 16 | Int(data[i + 2]) << 8 | Int(data[i + 3]) }
        var i = 8, width = 0, height = 0, channels = 0
        var idat: [UInt8] = []
        while i + 8 <= data.count {
            let n = u32(i), type = String(decoding: data[(i + 4)..<(i + 8)], as: UTF8.self)
            guard i + 12 + n <= data.count else { throw SigmaTestError("\(path): a chunk runs past the end") }
            let body = data[(i + 8)..<(i + 8 + n)]
            if type == "IHDR" {
                width = u32(i + 8)
                height = u32(i + 12)
                let depth = body[body.startIndex + 8], color = body[body.startIndex + 9], interlace = body[body.startIndex + 12]
                guard depth == 8, color == 2 || color == 6, interlace == 0 else { throw SigmaTestError("\(path): PNG kind not read here (depth \(depth), color \(color), interlace \(interlace))") }
                channels = color == 6 ? 4 : 3
            } else if type == "IDAT" {
                idat += body
            }
            i += 12 + n
        }
        let compressed = path + ".zlib", raw = path + ".raw"
        defer { try? FileManager.default.removeItem(atPath: compressed); try? FileManager.default.removeItem(atPath: raw) }
        try Data(idat).write(to: URL(fileURLWithPath: compressed))
        let py = await runToolAsync("/usr/bin/python3", ["-c", "import sys,zlib;open(sys.argv[2],'wb').write(zlib.decompress(open(sys.argv[1],'rb').read()))", compressed, raw])
        guard py.status == 0 else { throw SigmaTestError("inflating \(path) failed: \(py.err)") }
        let filtered = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
        let stride = width * channels
        guard width > 0, filtered.count == height * (stride + 1) else { throw SigmaTestError("\(path): \(filtered.count) bytes of scanlines for \(width)×\(height)") }
        var out = [UInt8](repeating: 0, count: height * stride), rgb = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            let filter = filtered[y * (stride + 1)], src = y * (stride + 1) + 1, row = y * stride
            for x in 0..<stride {
                let a = x >= channels ? Int(out[row + x - channels]) : 0, b = y > 0 ? Int(out[row - stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(out[row - stride + x - channels]) : 0
                let v = Int(filtered[src + x])
                let predicted: Int
                switch filter {
                case 0: predicted = 0
                case 1: predicted = a
                case 2: predicted = b
                case 3: predicted = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
                default: throw SigmaTestError("\(path): unknown PNG filter \(filter)")
                }
                out[row + x] = UInt8((v + predicted) & 0xff)
            }
            for x in 0..<width { for k in 0..<3 { rgb[(y * width + x) * 3 + k] = out[row + x * channels + k] } }
        }
        return Picture(width: width, height: height, rgb: rgb)
    }

    /// Whether pixel (x, y) is `hex` ("#rrggbb") within `tolerance` on every channel.
    func matches(_ x: Int, _ y: Int, _ hex: String, tolerance: Int = 24) -> Bool {
        let v = Int(hex.dropFirst(), radix: 16)!, i = (y * width + x) * 3
        return abs(Int(rgb[i]) - (v >> 16 & 0xff)) <= tolerance && abs(Int(rgb[i + 1]) - (v >> 8 & 0xff)) <= tolerance
            && abs(Int(rgb[i + 2]) - (v & 0xff)) <= tolerance
    }

    /// Every pixel of colour `hex`, as (x, y).
    func find(_ hex: String, tolerance: Int = 24) -> [(x: Int, y: Int)] {
        var hits: [(x: Int, y: Int)] = []
        for y in 0..<height { for x in 0..<width where matches(x, y, hex, tolerance: tolerance) { hits.append((x, y)) } }
        return hits
    }

    /// The bands of consecutive rows holding at least `minimum` pixels of `hex` with x ≥ `fromX`: (first row, rows).
    func bands(_ hex: String, fromX: Int = 0, minimum: Int = 5) -> [(y: Int, rows: Int)] {
        var out: [(y: Int, rows: Int)] = []
        var start: Int? = nil
        for y in 0...height {
            let full = y < height && (fromX..<width).lazy.filter { matches($0, y, hex) }.count >= minimum
            if full, start == nil { start = y }
            if !full, let s = start { out.append((s, y - s)); start = nil }
        }
        return out
    }
}

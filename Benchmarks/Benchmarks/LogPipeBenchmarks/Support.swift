import Foundation

/// Benchmark input: the file named by LOGPIPE_BENCH_CORPUS (the shared bench
/// corpus, as scripts/bench-micro.sh passes it), else 50,000 lines generated
/// here in the corpus' formats (syslog, JSON, logfmt, access log, plain).
final class Corpus: Sendable {
    static let shared = Corpus()
    let data: [UInt8]

    private init() {
        if let path = ProcessInfo.processInfo.environment["LOGPIPE_BENCH_CORPUS"],
            let contents = FileManager.default.contents(atPath: path)
        {
            data = Array(contents)
        } else {
            data = Array(Self.generate(lines: 50_000).utf8)
        }
    }

    static func generate(lines: Int) -> String {
        let levels = ["ERROR", "WARN", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "INFO", "DEBUG", "INFO"]
        var text = ""
        var state: UInt64 = 1
        for index in 0..<lines {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let host = "web-\(state >> 59)"
            let level = levels[Int((state >> 40) % 10)]
            let id = state >> 20
            switch index % 5 {
            case 0:
                text += "<134>Nov 27 01:02:03 \(host) app[\(id % 999)]: \(level) request \(id) took \(id % 97) ms\n"
            case 1:
                text +=
                    #"{"ts":"2026-11-27T01:02:03Z","host":"\#(host)","level":"\#(level.lowercased())","msg":"job \#(id) finished","attempt":\#(id % 5)}"#
                    + "\n"
            case 2:
                text +=
                    "ts=2026-11-27T01:02:03Z host=\(host) level=\(level.lowercased()) msg=\"cache miss\" key=k\(id)\n"
            case 3:
                text +=
                    #"10.0.\#(id % 255).\#(id % 253) - - [27/Nov/2026:01:02:03 +0000] "GET /api/v1/items/\#(id) HTTP/1.1" 200 \#(id % 9999) "-" "curl/8.0""#
                    + "\n"
            default:
                text +=
                    "2026-11-27 01:02:03,123 \(level) [worker-\(id % 16)] com.example.Service - processed batch \(id)\n"
            }
        }
        return text
    }

    /// The first lines whose bytes (with newlines) fit in `limit`.
    func bytes(upTo limit: Int) -> [UInt8] {
        var end = min(limit, data.count)
        while end > 0, data[end - 1] != 0x0A { end -= 1 }
        return Array(data[..<end])
    }

    /// `count` lines (without newlines), repeating the corpus if it is shorter.
    func lines(_ count: Int) -> [[UInt8]] {
        var result: [[UInt8]] = []
        result.reserveCapacity(count)
        var start = 0
        while result.count < count {
            guard let newline = data[start...].firstIndex(of: 0x0A) else {
                start = 0
                continue
            }
            result.append(Array(data[start..<newline]))
            start = newline + 1 < data.count ? newline + 1 : 0
        }
        return result
    }

    /// Writes `count` lines to `path`, repeating the corpus if it is shorter.
    func write(lines count: Int, to path: String) throws {
        var output: [UInt8] = []
        for line in lines(count) {
            output += line
            output.append(0x0A)
        }
        try Data(output).write(to: URL(fileURLWithPath: path))
    }
}

/// A private nats-server on a free loopback port, stopped by `stop()`.
final class LocalNATSServer {
    let process = Process()
    let directory: URL
    let url: String

    static var executable: String? {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/sbin").split(separator: ":")
        return paths.map { "\($0)/nats-server" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
    static var available: Bool { executable != nil }

    struct StartError: Error, CustomStringConvertible {
        var description: String
    }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("logpipe-bench-nats-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let log = directory.appendingPathComponent("server.log").path
        process.executableURL = URL(fileURLWithPath: Self.executable ?? "/usr/sbin/nats-server")
        process.arguments = ["-a", "127.0.0.1", "-p", "-1", "-l", log]
        try process.run()
        for _ in 0..<100 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8),
                let range = text.range(of: "client connections on 127.0.0.1:")
            {
                let port = text[range.upperBound...].prefix { $0.isNumber }
                url = "nats://127.0.0.1:\(port)"
                return
            }
            usleep(100_000)
        }
        process.terminate()
        throw StartError(description: "nats-server did not start (see \(log))")
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}

import Foundation

/// A private nats-server for a test: a free loopback port, a temporary store
/// directory, optional configuration, stopped (and its store removed) by
/// `stop()`.
public final class NATSServer: @unchecked Sendable {
    // @unchecked: the mutable process handle is only touched by the test
    // that owns the server, one call at a time.
    public private(set) var port: Int = 0
    public let directory: String
    private var process: Process?
    private let configuration: String?
    private let jetstream: Bool

    public var url: String { "nats://127.0.0.1:\(port)" }

    /// Starts a server; `configuration` is nats-server config text (without
    /// `listen`/`port`, which are set here).
    public init(configuration: String? = nil, jetstream: Bool = true) async throws {
        directory = NSTemporaryDirectory() + "logpipe-nats-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.configuration = configuration
        self.jetstream = jetstream
        try await start(port: -1)
    }

    public static var binary: String? {
        ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Starts the server (again), on `port` (-1: a random free port).
    /// Waits without blocking a thread of the cooperative pool (tests share it).
    public func start(port requested: Int? = nil) async throws {
        guard let binary = Self.binary else {
            throw TestSupportError("nats-server is not installed (scripts/setup.sh installs it)")
        }
        let log = directory + "/server.log"
        try? FileManager.default.removeItem(atPath: log)
        var arguments = ["-a", "127.0.0.1", "-p", String(requested ?? port), "-sd", directory + "/store", "-l", log]
        if jetstream { arguments.append("-js") }
        if let configuration {
            try configuration.write(toFile: directory + "/server.conf", atomically: true, encoding: .utf8)
            arguments += ["-c", directory + "/server.conf"]
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: log, encoding: .utf8),
                let range = text.range(of: "Listening for client connections on 127.0.0.1:")
            {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let found = Int(digits), text.contains("Server is ready") {
                    port = found
                    return
                }
            }
            if !process.isRunning {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw TestSupportError("nats-server exited at start: \(text.suffix(800))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupportError("nats-server did not become ready within 10 s")
    }

    /// Stops the server process (the store stays, for a restart).
    public func kill() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// Stops the server and removes its directory.
    public func stop() {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The server's log so far.
    public var log: String { (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "" }

    deinit { stop() }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

import Foundation
import NATSClient

#if canImport(Glibc)
    import Glibc
#endif

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
        directory = try TestDirectories.make(prefix: "logpipe-nats")
        self.configuration = configuration
        self.jetstream = jetstream
        try await start(port: -1)
    }

    /// The server binary: `LOGPIPE_NATS_SERVER` when set (scripts/test.sh
    /// runs the NATS suites a second time with the current release), else
    /// the system's.
    public static var binary: String? {
        if let chosen = ProcessInfo.processInfo.environment["LOGPIPE_NATS_SERVER"], !chosen.isEmpty {
            return chosen
        }
        return ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].first {
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
        // Only a safety net: on a busy machine a start can take long; the
        // wait ends as soon as the server says it is ready.
        let deadline = Date().addingTimeInterval(120)
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
        throw TestSupportError("nats-server did not become ready within 120 s")
    }

    /// Stops the server process (the store stays, for a restart).
    public func kill() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// Kills the server with SIGKILL, as a crash would (it tells its
    /// clients nothing); the store stays, for a restart.
    public func crash() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Stops the server and removes its directory.
    public func stop() {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The server's log so far.
    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered; `resume()` thaws it.
    /// Returns once the kernel reports the process stopped.
    public func freeze() async throws {
        guard let process else { throw TestSupportError("freeze: the server was not started") }
        let pid = process.processIdentifier
        guard Glibc.kill(pid, SIGSTOP) == 0 else {
            throw TestSupportError("freeze: kill(\(pid), SIGSTOP) failed: \(String(cString: strerror(errno)))")
        }
        // /proc/<pid>/stat: "pid (comm) STATE ..."; T is stopped.
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            if let close = stat.lastIndex(of: ")"), stat[close...].dropFirst(2).first == "T" { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestSupportError("freeze: nats-server \(pid) did not stop")
    }

    /// Thaws a frozen server (SIGCONT).
    public func resume() {
        if let process { Glibc.kill(process.processIdentifier, SIGCONT) }
    }

    public var log: String { (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "" }

    deinit { stop() }
}

extension NATSServer {
    /// How many messages stream `name` holds (`nil`: no such stream).
    public func streamMessages(_ name: String) async throws -> Int64? {
        let connection = try await NATSConnection.connect(NATSOptions.forTests(url))
        let info = try await JetStreamContext(connection: connection).streamInfo(name)
        await connection.close()
        return info?.state.messages
    }

    /// Waits until stream `name` holds at least `count` messages, on one
    /// connection (the caller's time limit catches a stall).
    public func waitForStream(_ name: String, messages count: Int64) async throws {
        let connection = try await NATSConnection.connect(NATSOptions.forTests(url))
        while try await JetStreamContext(connection: connection).streamInfo(name)?.state.messages ?? 0 < count {
            try await Task.sleep(for: .milliseconds(20))
        }
        await connection.close()
    }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Three nats-server processes routed into one cluster with JetStream, on
/// free loopback ports, each with its own store; nodes can be stopped and
/// started again.
public final class NATSCluster: @unchecked Sendable {
    // @unchecked: owned by one test, used one call at a time.
    public let directory: String
    public let clientPorts: [Int]
    let routePorts: [Int]
    var processes: [Process?]

    public var urls: [String] { clientPorts.map { "nats://127.0.0.1:\($0)" } }

    public init() async throws {
        directory = try TestDirectories.make(prefix: "logpipe-cluster")
        var ports: [Int] = []
        for _ in 0..<6 { ports.append(try Self.freePort(excluding: ports)) }
        clientPorts = Array(ports[0..<3])
        routePorts = Array(ports[3..<6])
        processes = [nil, nil, nil]
        for node in 0..<3 { try start(node) }
        for node in 0..<3 { try await waitReady(node) }
        // JetStream needs a meta leader before streams can be created.
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if (0..<3).contains(where: {
                log($0).contains("JetStream cluster new metadata leader")
                    || log($0).contains("Self is new JetStream cluster metadata leader")
            }) {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSupportError("the cluster elected no JetStream leader within 30 s")
    }

    static func freePort(excluding taken: [Int]) throws -> Int {
        for _ in 0..<50 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = 0
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                    bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
                }
            }
            let port = Int(UInt16(bigEndian: address.sin_port))
            if bound, port > 0, !taken.contains(port) { return port }
        }
        throw TestSupportError("no free loopback port")
    }

    func log(_ node: Int) -> String {
        (try? String(contentsOfFile: directory + "/n\(node).log", encoding: .utf8)) ?? ""
    }

    /// Starts node `node` (0, 1 or 2), with its store kept across restarts.
    public func start(_ node: Int) throws {
        guard let binary = NATSServer.binary else { throw TestSupportError("nats-server is not installed") }
        let routes = (0..<3).filter { $0 != node }.map { "nats-route://127.0.0.1:\(routePorts[$0])" }
        let configuration = """
            server_name: n\(node)
            listen: 127.0.0.1:\(clientPorts[node])
            jetstream { store_dir: "\(directory)/store-n\(node)" }
            cluster {
              name: logpipe-test
              listen: 127.0.0.1:\(routePorts[node])
              routes: [\(routes.joined(separator: ", "))]
            }
            """
        try configuration.write(toFile: directory + "/n\(node).conf", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-c", directory + "/n\(node).conf", "-l", directory + "/n\(node).log"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try? FileManager.default.removeItem(atPath: directory + "/n\(node).log")
        try process.run()
        processes[node] = process
    }

    public func waitReady(_ node: Int) async throws {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if log(node).contains("Server is ready") { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupportError("cluster node n\(node) did not become ready")
    }

    /// Stops node `node`.
    public func stop(_ node: Int) {
        guard let process = processes[node], process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
        processes[node] = nil
    }

    /// Stops every node and removes the stores.
    public func shutdown() {
        for node in 0..<3 { stop(node) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { shutdown() }
}

extension NATSOptions {
    /// Options for a test's own client: the same as an application's, but
    /// a connect timeout long enough for a busy machine (the suite runs
    /// many servers and clients at once on two cores).
    public static func forTests(_ url: String) -> NATSOptions {
        var options = NATSOptions(servers: [url])
        options.connectTimeout = .seconds(60)
        return options
    }
}

extension JetStreamContext {
    /// Waits until the server holds a pull request of `consumer` on
    /// `stream` (num_waiting): a request sent just now may still be on its
    /// way, and a busy machine can take longer than any fixed pause.
    public func waitForWaitingRequest(stream: String, consumer: String) async throws {
        while try await consumerInfo(stream: stream, name: consumer)?.num_waiting ?? 0 < 1 {
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Creates durable `consumer` on `stream` with `max_waiting: 1` and
    /// fills that one slot with a long poll of `expires` from a consumer of
    /// its own, once the server holds it: other pull requests are refused
    /// (409) until it ends. Returns its configuration, the holder and the
    /// poll (it ends empty when `expires` passes on an empty stream).
    public func holdTheOnlyPullSlot(stream: String, consumer: String, expires: Duration) async throws -> (
        config: ConsumerConfig, holder: PullConsumer, poll: Task<PullConsumer.Fetched, any Error>
    ) {
        var config = ConsumerConfig(durable: consumer, filterSubject: nil)
        config.max_waiting = 1
        try await ensureConsumer(stream: stream, config)
        let (holder, _) = try await PullConsumer.bind(
            self, stream: stream, config: config, options: .init(batch: 10, expires: expires))
        let poll = Task { try await holder.fetch() }
        try await waitForWaitingRequest(stream: stream, consumer: consumer)
        return (config, holder, poll)
    }
}

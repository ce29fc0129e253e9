import Foundation
import NATSTestSupport
import Synchronization
import Testing

/// Runs the real `logpipe` binary built next to the tests.
enum CLI {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func binary(_ name: String) -> String {
        if name == "logpipe", let path = ProcessInfo.processInfo.environment["LOGPIPE_BIN"] { return path }
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name)
                .path,
            URL(fileURLWithPath: Bundle.main.bundlePath).appendingPathComponent(name).path,
            URL(fileURLWithPath: Bundle.main.bundlePath).deletingLastPathComponent().appendingPathComponent(name).path,
            packageRoot + "/.build/debug/" + name,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// A started process whose output goes to temporary files.
    final class Running: @unchecked Sendable {
        // Only touched from the test that owns it.
        let process = Process()
        let stdoutPath: String
        let stderrPath: String
        let stdinPipe: Pipe?
        private let exited = Mutex<Bool>(false)

        init(
            _ arguments: [String], executable: String = CLI.binary("logpipe"), stdinPath: String? = nil,
            pipeStdin: Bool = false, environment: [String: String] = [:]
        ) throws {
            let directory = try makeTemporaryDirectory()
            stdoutPath = directory + "/stdout"
            stderrPath = directory + "/stderr"
            _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: CLI.packageRoot)
            var env = ProcessInfo.processInfo.environment
            for (key, value) in environment { env[key] = value }
            process.environment = env
            process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
            process.standardError = FileHandle(forWritingAtPath: stderrPath)
            if pipeStdin {
                let pipe = Pipe()
                stdinPipe = pipe
                process.standardInput = pipe
            } else if let stdinPath {
                stdinPipe = nil
                process.standardInput = FileHandle(forReadingAtPath: stdinPath)
            } else {
                stdinPipe = nil
                process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
            }
            try process.run()
        }

        var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

        func signal(_ number: Int32) { kill(process.processIdentifier, number) }

        /// Waits for the process to end; kills it after `timeout` (a safety net
        /// for a hung process, long enough for a debug build on a busy machine).
        func wait(timeout: Duration = .seconds(600)) async throws -> Result {
            let deadline = ContinuousClock.now + timeout
            while process.isRunning {
                if ContinuousClock.now > deadline {
                    process.terminate()
                    Issue.record("logpipe \(process.arguments ?? []) did not finish within \(timeout); killed")
                    kill(process.processIdentifier, SIGKILL)
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            process.waitUntilExit()
            return Result(
                status: process.terminationStatus,
                stdout: (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "",
                stderr: stderr
            )
        }
    }

    /// Runs `logpipe` with `arguments` to completion.
    static func run(_ arguments: [String], stdinPath: String? = nil, environment: [String: String] = [:]) async throws
        -> Result
    {
        try await Running(arguments, stdinPath: stdinPath, environment: environment).wait()
    }
}

func makeTemporaryDirectory() throws -> String {
    try TestDirectories.make(prefix: "logpipe-cli")
}

func write(_ text: String, to path: String) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

/// Waits until `measure()` reaches `target`, however long that takes while
/// it moves; records an issue only when it stood still for `stall` (a busy
/// machine slows progress down, a hang stops it).
func eventually(reaches target: Int, stall: Duration = .seconds(120), _ measure: () -> Int) async throws {
    var last = measure()
    var lastMove = ContinuousClock.now
    while last < target {
        if ContinuousClock.now - lastMove > stall {
            Issue.record("stuck at \(last) of \(target) for \(stall)")
            return
        }
        try await Task.sleep(for: .milliseconds(100))
        let now = measure()
        if now != last {
            last = now
            lastMove = .now
        }
    }
}

/// Waits until `condition` holds, polling; records an issue after `timeout`.
func eventually(timeout: Duration = .seconds(120), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("condition not reached within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// Waits until the asynchronous `condition` holds, polling; records an
/// issue after `timeout`.
func eventually(timeout: Duration = .seconds(120), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !(await condition()) {
        if ContinuousClock.now > deadline {
            Issue.record("condition not reached within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}

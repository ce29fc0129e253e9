import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The service files: the systemd unit, sd_notify, the install script.
@Suite struct PackagingTests {
    static func shell(_ command: String, environment: [String: String] = [:]) async throws -> CLI.Result {
        try await CLI.Running(["-c", command], executable: "/bin/bash", environment: environment).wait()
    }

    /// `systemd-analyze verify` accepts the unit without a word (it exits 0
    /// on many mistakes, so any output fails the test too).
    @Test func theUnitPassesSystemdAnalyzeVerify() async throws {
        let analyzer = "/usr/bin/systemd-analyze"
        try #require(
            FileManager.default.isExecutableFile(atPath: analyzer),
            "systemd-analyze is needed (scripts/setup.sh installs the systemd package)")
        let directory = try makeTemporaryDirectory()
        let unit = try String(contentsOfFile: CLI.packageRoot + "/packaging/logpipe.service", encoding: .utf8)
        #expect(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        #expect(unit.contains("ProtectSystem=strict") && unit.contains("ReadWritePaths=/var/lib/logpipe"))
        #expect(unit.contains("NoNewPrivileges=yes"))
        try unit.replacingOccurrences(of: "/usr/local/bin/logpipe", with: CLI.binary("logpipe"))
            .write(toFile: directory + "/logpipe.service", atomically: true, encoding: .utf8)
        let result = try await Self.shell("\(analyzer) verify --man=no '\(directory)/logpipe.service'")
        #expect(result.status == 0)
        #expect(result.stdout.isEmpty && result.stderr.isEmpty, "\(result.stdout)\(result.stderr)")
    }

    /// The install script stages the binary, the unit, the example pipeline
    /// (which validates), the completions; a second run keeps the pipeline.
    @Test func installStagesEverythingAndKeepsAnEditedPipeline() async throws {
        let root = try makeTemporaryDirectory() + "/root"
        let command =
            "\(CLI.packageRoot)/scripts/install.sh --root '\(root)' --binary '\(CLI.binary("logpipe"))' --no-man"
        let first = try await Self.shell(command)
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        for path in [
            "/usr/local/bin/logpipe", "/etc/systemd/system/logpipe.service", "/etc/logpipe/pipeline.yaml",
            "/usr/share/bash-completion/completions/logpipe", "/usr/share/zsh/vendor-completions/_logpipe",
            "/usr/share/fish/vendor_completions.d/logpipe.fish",
        ] {
            #expect(FileManager.default.fileExists(atPath: root + path), "\(path) missing")
        }
        let bash = try String(contentsOfFile: root + "/usr/share/bash-completion/completions/logpipe", encoding: .utf8)
        #expect(bash.contains("_logpipe") && bash.contains("--api-address"))
        let validate = try await CLI.run(["validate", root + "/etc/logpipe/pipeline.yaml"])
        #expect(validate.status == 0, "\(validate.stderr)")

        try "# edited\n".write(toFile: root + "/etc/logpipe/pipeline.yaml", atomically: true, encoding: .utf8)
        let second = try await Self.shell(command)
        #expect(second.status == 0)
        #expect(second.stdout.contains("keeping"))
        #expect(try String(contentsOfFile: root + "/etc/logpipe/pipeline.yaml", encoding: .utf8) == "# edited\n")
    }

    /// Started with `NOTIFY_SOCKET` (as systemd does for Type=notify), the
    /// run says READY=1 once its stages started, RELOADING=1 then READY=1 on
    /// SIGHUP, and STOPPING=1 when SIGTERM makes it drain.
    @Test func notifiesSystemdWhenReadyAndWhenStopping() async throws {
        let directory = try makeTemporaryDirectory()
        let socketPath = directory + "/notify.sock"
        let listener = try NotifySocket(path: socketPath)
        defer { listener.close() }
        try write(
            """
            data_dir: \(directory)/data
            sources:
              demo: { type: demo_logs, count: 0, rate: 100 }
            sinks:
              out: { type: file, inputs: [demo], path: "\(directory)/out.log" }
            """,
            to: directory + "/p.yaml"
        )
        let running = try CLI.Running(
            ["run", directory + "/p.yaml", "--status-interval", "0.2"], environment: ["NOTIFY_SOCKET": socketPath])
        let ready = try #require(await listener.next { $0.contains("READY=1") }, "\(running.stderr)")
        #expect(ready.contains("STATUS=running"))
        #expect(await listener.next { $0.hasPrefix("STATUS=") && $0.contains("demo[out=") } != nil)
        // A reload: RELOADING=1 with the monotonic time systemd asks for, then READY=1 again.
        running.signal(SIGHUP)
        let reloading = try #require(await listener.next { $0.contains("RELOADING=1") })
        #expect(reloading.contains("MONOTONIC_USEC="))
        #expect(await listener.next { $0.contains("READY=1") } != nil)
        running.signal(SIGTERM)
        #expect(await listener.next { $0.contains("STOPPING=1") } != nil)
        let result = try await running.wait()
        #expect(result.status == 0, "\(result.stderr)")
    }
}

/// A Unix datagram socket standing in for systemd's notify socket.
final class NotifySocket: Sendable {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, bound == 0 else { throw CocoaError(.fileWriteUnknown) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram matching `wanted`, within two minutes.
    func next(_ wanted: @escaping @Sendable (String) -> Bool) async -> String? {
        let fd = self.fd
        return await Task.detached {
            let deadline = ContinuousClock.now + .seconds(120)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while ContinuousClock.now < deadline {
                let count = recv(fd, &buffer, buffer.count, 0)
                guard count > 0 else { continue }
                let message = String(decoding: buffer[..<count], as: UTF8.self)
                if wanted(message) { return message }
            }
            return nil
        }.value
    }

    func close() { _ = Glibc.close(fd) }
}

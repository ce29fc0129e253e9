import Foundation
import Testing

/// The `exec` transform through the real binary: a file read once, the
/// shipped Python plugin, a file written.
@Suite struct ExecCommandTests {
    /// A directory with `app.log` holding `log`, and `p.yaml` reading it once
    /// through the exec transform `name` (its options in `stage`, in block
    /// style) into `out.log`.
    static func pipeline(log: String, name: String, stage: String) throws -> String {
        let directory = try makeTemporaryDirectory()
        try write(log, to: directory + "/app.log")
        try write(
            """
            data_dir: \(directory)/data
            sources:
              in: { type: file, include: ['\(directory)/app.log'], once: true }
            transforms:
              \(name):
                type: exec
                inputs: [in]
            \(stage.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
            sinks:
              out: { type: file, inputs: [\(name)], path: "\(directory)/out.log" }
            """,
            to: directory + "/p.yaml")
        return directory
    }

    @Test func theExamplePluginRunsInAPipelineFile() async throws {
        let lines = (0..<3_000).map { index in
            switch index % 3 {
            case 0: "user u\(index)@example.com logged in"
            case 1: "GET /healthz 200"
            default: "call \(index) Authorization: Bearer tok\(index)"
            }
        }
        let directory = try Self.pipeline(
            log: lines.joined(separator: "\n") + "\n", name: "redact",
            stage: "command: [python3, -u, '\(CLI.packageRoot)/examples/plugins/redact.py']")
        let result = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        let out = try String(contentsOfFile: directory + "/out.log", encoding: .utf8).split(separator: "\n")
        let expected = lines.enumerated().compactMap { index, _ -> String? in
            switch index % 3 {
            case 0: "user <email> logged in"
            case 1: nil
            default: "call \(index) Authorization: Bearer <token>"
            }
        }
        #expect(out.map(String.init) == expected)
        #expect(result.stderr.contains("acknowledged=3000 unacknowledged=0"), "\(result.stderr)")
    }

    /// A line the plugin dies on every time is dropped under
    /// `on_failure: drop`, and the run's last line says so even with --quiet.
    @Test func aDroppedPoisonLineIsNamedAtTheEnd() async throws {
        let directory = try Self.pipeline(
            log: "ok 1\npoison\nok 2\n", name: "check",
            stage: #"""
                command: [sh, -c, 'while IFS= read -r l; do [ "$l" != poison ] || exit 1; printf "%s\n" "$l"; done']
                max_attempts: 2
                on_failure: drop
                """#)
        let result = try await CLI.run(["run", "--quiet", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try String(contentsOfFile: directory + "/out.log", encoding: .utf8) == "ok 1\nok 2\n")
        #expect(result.stderr.contains("some records were not delivered"), "\(result.stderr)")
        #expect(result.stderr.contains("check.failed_records=1"))
        #expect(result.stderr.contains("dropping the line 'poison' (on_failure: drop)"))
    }

    /// The plugin's stderr reaches logpipe's log with the stage's name; a
    /// flood is cut to 20 lines a second and the rest counted.
    @Test func thePluginsStderrIsLoggedAndAFloodIsCounted() async throws {
        let directory = try Self.pipeline(
            log: (0..<2_000).map { "line \($0)\n" }.joined(), name: "noisy",
            stage: #"""
                command: [sh, -c, 'while IFS= read -r l; do echo "checked $l" >&2; printf "%s\n" "$l"; done']
                """#)
        let result = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("stage=noisy [LogPipe] child stderr: checked line 0"), "\(result.stderr)")
        let logged = result.stderr.components(separatedBy: "child stderr: ").count - 1
        #expect(logged >= 20 && logged < 2_000)
        #expect(result.stderr.contains("noisy.stderr_lines_suppressed="), "\(result.stderr.suffix(500))")
        #expect(
            try String(contentsOfFile: directory + "/out.log", encoding: .utf8).split(separator: "\n").count == 2_000)
    }
}

import ArgumentParser
import Foundation
import LogPipe
import Logging

@main
struct LogPipeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logpipe",
        abstract: "Ships and processes logs: sources, filters and sinks wired by a pipeline file.",
        version: LogPipeVersion.current,
        subcommands: [RunCommand.self, ValidateCommand.self, GraphCommand.self, StagesCommand.self]
    )
}

/// Exit codes of `logpipe run`, documented in docs/cli.md.
enum ExitStatus {
    static let configurationError: Int32 = 1
    static let stageFailed: Int32 = 2
    static let shutdownTimedOut: Int32 = 3
    /// A second SIGINT/SIGTERM ended the run at once.
    static let aborted: Int32 = 4
}

func printDiagnostics(_ diagnostics: [Diagnostic]) {
    for diagnostic in diagnostics {
        FileHandle.standardError.write(Data((diagnostic.description + "\n").utf8))
    }
}

func standardError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

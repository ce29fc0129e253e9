import LogPipe
import LogPipeAPI
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What SIGHUP and `POST /reload` do: read the pipeline file again, with
/// the same `--set` overrides, and apply it to the running pipeline.
///
/// A file with errors changes nothing: every diagnostic is logged, the
/// failed reload is counted (`logpipe_reloads_total{result="failed"}`) and
/// the pipeline keeps running as it was.
struct PipelineReloader: Sendable {
    let file: String
    let overrides: [String]
    /// `--api-address`, which wins over the file's `api.address`.
    let apiAddressOverride: String?
    let runner: PipelineRunner
    let logger: Logger
    let notifier: SystemdNotifier
    /// Shows a loader's diagnostics (as text, or as JSON log lines).
    let showDiagnostics: @Sendable ([Diagnostic]) -> Void

    func reload(trigger: String) async -> APIResponder.ReloadOutcome {
        logger.notice("\(trigger): reloading \(file)")
        // systemd shows the unit as reloading until READY=1 comes again.
        notifier.notify("RELOADING=1\nMONOTONIC_USEC=\(Self.monotonicMicroseconds())")
        defer { notifier.notify("READY=1\nSTATUS=running \(file)") }
        let loaded = PipelineLoader(registry: .all()).load(file: file, overrides: overrides)
        showDiagnostics(loaded.diagnostics)
        guard var pipeline = loaded.pipeline else {
            runner.countFailedReload()
            logger.error(
                "reload failed: \(file) has \(loaded.errors.count) error(s); the pipeline keeps running unchanged")
            return .invalid(loaded.errors.map { "\($0)" })
        }
        if let apiAddressOverride { pipeline.settings.apiAddress = apiAddressOverride }
        do {
            return .applied(try await runner.reload(to: pipeline))
        } catch {
            logger.error("reload failed: \(error)")
            return .refused(error)
        }
    }

    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}

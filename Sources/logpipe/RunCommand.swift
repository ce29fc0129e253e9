import ArgumentParser
import CoreMetrics
import Dispatch
import Foundation
import LogPipe
import LogPipeAPI
import LogPipeBase
import LogPipeNATS
import Logging
import Prometheus
import ServiceLifecycle

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a pipeline until its sources end, or until SIGINT/SIGTERM drains it."
    )

    @Argument(help: "The pipeline file (YAML).")
    var file: String

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp("Override an option: stage.option=value (repeatable).", valueName: "stage.option=value"))
    var overrides: [String] = []

    @Flag(
        name: .shortAndLong,
        help: "No status lines, no final summary, and only warnings and errors logged (unless --log-level is given).")
    var quiet = false

    @Option(
        help: ArgumentHelp(
            "Seconds between status lines (default 5, shown when stderr is a terminal; given explicitly, status lines are also logged when it is not, e.g. under systemd).",
            valueName: "seconds"))
    var statusInterval: Double?

    @Option(
        help: ArgumentHelp(
            "How logpipe's own log lines look: text, or json (one object per line: time, level, stage, message, metadata).",
            valueName: "format"))
    var logFormat: String = "text"

    @Option(
        help: ArgumentHelp(
            "Log level: trace, debug, info, notice, warning, error, critical (default: info; warning with --quiet).",
            valueName: "level"))
    var logLevel: String?

    @Option(
        help: ArgumentHelp(
            "Serve /metrics (Prometheus), /health, /ready and POST /reload on this address (overrides the pipeline file's api.address; port 0 picks a free port).",
            valueName: "host:port"))
    var apiAddress: String?

    func run() async throws {
        Allocator.tune()
        let logLevel = self.logLevel ?? (quiet ? "warning" : "info")
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError(
                "unknown log level '\(logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
        switch logFormat {
        case "text":
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case "json":
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
        default:
            throw ValidationError("unknown log format '\(logFormat)'; use text or json")
        }
        let logger = Logger(label: "logpipe")
        // What logpipe itself says: a plain line, or a JSON log line.
        let json = logFormat == "json"
        let say: @Sendable (Logger.Level, String) -> Void = { level, message in
            if json {
                logger.log(level: level, "\(message)")
            } else {
                standardError("logpipe: " + message)
            }
        }

        let showDiagnostics: @Sendable ([Diagnostic]) -> Void = { diagnostics in
            if json {
                for diagnostic in diagnostics {
                    logger.log(level: diagnostic.severity == .error ? .error : .warning, "\(diagnostic)")
                }
            } else {
                printDiagnostics(diagnostics)
            }
        }
        let result = PipelineLoader(registry: .all()).load(file: file, overrides: overrides)
        showDiagnostics(result.diagnostics)
        guard var pipeline = result.pipeline else {
            say(.error, "\(file) has \(result.errors.count) error(s); nothing was started")
            throw ExitCode(ExitStatus.configurationError)
        }

        // The API endpoint, when asked for: metrics go to a Prometheus
        // registry it serves; it listens before the pipeline starts, so an
        // address in use stops the run before anything is read.
        let apiAddress = self.apiAddress ?? pipeline.settings.apiAddress
        pipeline.settings.apiAddress = apiAddress
        let registry = PrometheusCollectorRegistry()
        if let apiAddress {
            do {
                _ = try APIServer.parse(address: apiAddress)
            } catch {
                say(.error, "\(error)")
                throw ExitCode(ExitStatus.configurationError)
            }
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        }
        let runner = PipelineRunner(pipeline: pipeline, logger: logger)
        // Under systemd (Type=notify): READY once every stage started,
        // STATUS with each status line, RELOADING while a reload applies,
        // STOPPING when draining.
        let notifier = SystemdNotifier()
        let reloader = PipelineReloader(
            file: file, overrides: overrides, apiAddressOverride: self.apiAddress, runner: runner, logger: logger,
            notifier: notifier, showDiagnostics: showDiagnostics)
        var server: APIServer?
        if let apiAddress {
            do {
                server = try await APIServer.start(
                    address: apiAddress,
                    responder: APIResponder(
                        runner: runner, registry: registry,
                        reload: { await reloader.reload(trigger: "POST /reload received") }), logger: logger)
            } catch {
                say(.error, "\(error); nothing was started")
                throw ExitCode(ExitStatus.configurationError)
            }
        }
        let readiness = Task {
            guard notifier.isActive else { return }
            await runner.waitUntilStarted()
            notifier.notify("READY=1\nSTATUS=running \(file)")
        }
        let signals = SignalHandling.install { signal, count in
            if signal == SIGHUP {
                Task { _ = await reloader.reload(trigger: "SIGHUP received") }
                return
            }
            if count == 1 {
                logger.notice("stopping: draining in-flight records (signal again to abort)")
                notifier.notify("STOPPING=1\nSTATUS=draining in-flight records")
                runner.stop()
            } else {
                // A second signal means the operator will not wait: end the
                // process now. Nothing acknowledged is lost: checkpoints and
                // ledgers only ever cover acknowledged records, and what was
                // in flight is read again (as after kill -9).
                let unacknowledged = runner.progress().unacknowledged
                say(
                    .critical,
                    "aborted by a second signal with \(unacknowledged) record(s) unacknowledged; they will be read again where the source can replay"
                )
                runner.stop(immediately: true)
                _exit(ExitStatus.aborted)
            }
        }
        defer { signals.cancel() }

        // On a terminal the status line is written as it is; elsewhere
        // (systemd, a file) only when --status-interval was given, as a log
        // line (so it is JSON with --log-format json).
        let interval = statusInterval ?? 5
        let onTerminal = isatty(2) == 1 && logFormat == "text"
        let showStatus = !quiet && interval > 0 && (onTerminal || statusInterval != nil)
        let statusTask = Task {
            guard showStatus || notifier.isActive, interval > 0 else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                if Task.isCancelled { break }
                let line = StatusFormatter.statusLine(runner.progress())
                let status = line.dropFirst("logpipe: ".count)
                notifier.notify("STATUS=\(status.prefix(1000))")
                guard showStatus else { continue }
                if onTerminal {
                    standardError(line)
                } else {
                    logger.info("\(status)")
                }
            }
        }
        // The pipeline and the API endpoint run as one ServiceGroup: SIGTERM
        // or SIGINT shuts it down gracefully, the pipeline first (its
        // sources stop and in-flight records drain, while /ready says
        // "stopping" and /metrics still answers), then the endpoint. A
        // pipeline that ends by itself ends the group too.
        let pipelineService = PipelineService(runner: runner)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let server { services.append(.init(service: APIServerService(server: server))) }
        services.append(
            .init(
                service: pipelineService, successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup))
        var groupLogger = logger
        groupLogger.logLevel = max(logger.logLevel, .notice)  // not its start-up chatter
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: groupLogger))
        var groupError: (any Error)?
        do {
            try await group.run()
        } catch {
            groupError = error
        }
        statusTask.cancel()
        readiness.cancel()
        notifier.notify("STOPPING=1")
        await server?.stop()
        guard let summary = pipelineService.summary else {
            // The runner refused to start (an invalid graph, a locked data_dir).
            say(.error, "\(groupError.map { "\($0)" } ?? "the pipeline did not run"); nothing was started")
            throw ExitCode(ExitStatus.configurationError)
        }

        if !quiet {
            say(.notice, String(StatusFormatter.summaryLine(summary).dropFirst("logpipe: ".count)))
        }
        // Records given up under a policy are said even with --quiet: the
        // run may still end with status 0, as the options asked.
        let notDelivered = summary.progress.stages.flatMap { stage in
            StatusFormatter.notDeliveredCounters.compactMap { name in
                stage.counters[name].map { "\(stage.name).\(name)=\($0)" }
            }
        }
        if !notDelivered.isEmpty {
            say(
                .warning,
                "some records were not delivered, as the options say (on_oversize, on_rejected, on_failure) or because they could not be read: \(notDelivered.joined(separator: ", "))"
            )
        }
        if let failure = summary.failure {
            say(.error, "\(failure)")
            throw ExitCode(ExitStatus.stageFailed)
        }
        if summary.timedOut || summary.progress.unacknowledged > 0 {
            say(
                .error,
                "shutdown deadline (\(Units.format(runner.settings.shutdownTimeout))) passed with \(summary.progress.unacknowledged) record(s) unacknowledged; they will be read again where the source can replay (raise shutdown_timeout or fix the stuck sink)"
            )
            throw ExitCode(ExitStatus.shutdownTimedOut)
        }
    }
}

/// Turns SIGINT and SIGTERM into calls of `handler` with the signal and the
/// count of stopping signals so far; SIGHUP is passed on without counting
/// (its default action would kill the process, and `systemctl reload` sends it).
struct SignalHandling {
    private let sources: [any DispatchSourceSignal]

    static func install(_ handler: @escaping @Sendable (Int32, Int) -> Void) -> SignalHandling {
        signal(SIGPIPE, SIG_IGN)
        let counter = SignalCounter()
        let sources = [SIGINT, SIGTERM, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { handler(number, number == SIGHUP ? 0 : counter.increment()) }
            source.resume()
            return source
        }
        return SignalHandling(sources: sources)
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}

final class SignalCounter: Sendable {
    private let count = LockedBox(0)
    func increment() -> Int {
        count.withLock {
            $0 += 1; return $0
        }
    }
}

enum StatusFormatter {
    /// Counters of records a stage gave up on (by policy or necessity).
    static let notDeliveredCounters = [
        "oversize_messages", "rejected", "files_missed", "unreadable_files", "failed_records",
    ]

    static func rate(_ count: Int, _ elapsed: Duration) -> String {
        let seconds = elapsed.inSeconds
        guard seconds > 0 else { return "-" }
        return abbreviated(Double(count) / seconds) + "/s"
    }

    static func abbreviated(_ value: Double) -> String {
        if value >= 1e6 { return String(format: "%.2fM", value / 1e6) }
        if value >= 1e4 { return String(format: "%.1fk", value / 1e3) }
        return String(format: "%.0f", value)
    }

    static func seconds(_ elapsed: Duration) -> String {
        String(format: "%.2fs", elapsed.inSeconds)
    }

    static func stageCounts(_ progress: PipelineProgress) -> String {
        progress.stages.map { stage in
            switch stage.kind {
            case .source: "\(stage.name)[out=\(stage.recordsOut)]"
            case .transform: "\(stage.name)[in=\(stage.recordsIn) out=\(stage.recordsOut)]"
            case .sink: "\(stage.name)[in=\(stage.recordsIn)]"
            }
        }.joined(separator: " ")
    }

    static func counters(_ progress: PipelineProgress) -> String {
        let events = progress.stages.flatMap { stage in
            stage.counters.sorted { $0.key < $1.key }.map { "\(stage.name).\($0.key)=\($0.value)" }
        }
        return events.isEmpty ? "" : "; " + events.joined(separator: ", ")
    }

    static func statusLine(_ progress: PipelineProgress) -> String {
        let waiting = progress.stages.compactMap { stage in stage.waitingFor.map { "\(stage.name) waits for \($0)" } }
        return
            "logpipe: [\(seconds(progress.elapsed))] \(stageCounts(progress)); \(rate(progress.emitted, progress.elapsed)); unacknowledged=\(progress.unacknowledged)\(counters(progress))"
            + (waiting.isEmpty ? "" : "; " + waiting.joined(separator: ", "))
    }

    static func summaryLine(_ summary: RunSummary) -> String {
        let progress = summary.progress
        let state =
            summary.failure != nil ? "failed" : summary.timedOut ? "stopped at the shutdown deadline" : "finished"
        return
            "logpipe: \(state) in \(seconds(progress.elapsed)): \(progress.emitted) records (\(rate(progress.emitted, progress.elapsed))); \(stageCounts(progress)); acknowledged=\(progress.acknowledged) unacknowledged=\(progress.unacknowledged)\(counters(progress))"
    }
}

/// The API endpoint in the ServiceGroup: it listens until the group shuts
/// down (after the pipeline drained), then closes.
struct APIServerService: Service {
    let server: APIServer

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
    }
}

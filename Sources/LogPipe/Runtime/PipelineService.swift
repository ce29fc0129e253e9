import ServiceLifecycle
import Synchronization

/// A pipeline as a swift-service-lifecycle `Service`, to run in an
/// application's `ServiceGroup` beside its other services.
///
/// A graceful shutdown of the group (SIGTERM, SIGINT, another service
/// ending) stops the pipeline the way ``PipelineRunner/stop(immediately:)``
/// does: sources stop reading and in-flight records drain. Cancellation
/// ends it at once. When the pipeline ends by itself (its sources ended),
/// `run()` returns: give it `successTerminationBehavior:
/// .gracefullyShutdownGroup` so that the group ends with it (by default a
/// service that returns is an error to the group).
///
/// ```swift
/// let pipeline = PipelineService(runner: PipelineRunner(pipeline: myPipeline))
/// let group = ServiceGroup(
///     configuration: .init(
///         services: [.init(service: pipeline, successTerminationBehavior: .gracefullyShutdownGroup)],
///         gracefulShutdownSignals: [.sigterm], logger: logger))
/// try await group.run()
/// print(pipeline.summary?.isClean ?? false)
/// ```
public final class PipelineService: Service, Sendable {
    /// The runner it runs (for ``PipelineRunner/progress()`` while it runs).
    public let runner: PipelineRunner
    private let result = Mutex<RunSummary?>(nil)

    /// A service that runs `runner`.
    public init(runner: PipelineRunner) {
        self.runner = runner
    }

    /// How the run ended, once `run()` returned.
    public var summary: RunSummary? { result.withLock { $0 } }

    /// Runs the pipeline until it ends or the group shuts down.
    ///
    /// - Throws: ``PipelineError/stageFailed(stage:underlying:)`` when a
    ///   stage failed, ``PipelineError/shutdownTimedOut(unacknowledged:)``
    ///   when the shutdown deadline passed with records unacknowledged, or
    ///   the errors of ``PipelineRunner/run()`` before anything started.
    ///   ``summary`` holds the counters either way.
    public func run() async throws {
        let runner = self.runner
        let summary = try await withGracefulShutdownHandler {
            try await runner.run()
        } onGracefulShutdown: {
            runner.stop()
        }
        result.withLock { $0 = summary }
        if let failure = summary.failure { throw failure }
        if summary.timedOut || summary.progress.unacknowledged > 0 {
            throw PipelineError.shutdownTimedOut(unacknowledged: summary.progress.unacknowledged)
        }
    }
}

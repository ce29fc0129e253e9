import CoreMetrics
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a stage is in its life.
public enum StageState: String, Sendable, Equatable {
    /// Not started yet (the pipeline has not started).
    case starting
    /// Running and able to work.
    case running
    /// Running, but waiting for something it needs (a server, a stream):
    /// see ``StageProgress/waitingFor``.
    case waiting
    /// Returned (its input ended, or the pipeline stopped).
    case finished
    /// Threw an error; the pipeline stops.
    case failed
}

/// Counters of one stage at a moment in time.
public struct StageProgress: Sendable {
    /// The stage's name.
    public var name: String
    /// The stage's role.
    public var kind: StageKind
    /// Records received from upstream.
    public var recordsIn: Int
    /// Records sent downstream.
    public var recordsOut: Int
    /// Named event counters (for example `oversize_lines`, `write_retries`).
    public var counters: [String: Int]
    /// What the stage waits for before it can work (a server, a stream);
    /// `nil` when it is ready.
    public var waitingFor: String? = nil
    /// Where the stage is in its life.
    public var state: StageState = .running
    /// Records a sink acknowledged as delivered.
    public var recordsDelivered: Int = 0
    /// Batches waiting in the stage's input (transforms and sinks; 0 for sources).
    public var queuedBatches: Int = 0
    /// How many batches its input holds before senders wait (0 for sources).
    public var inputCapacity: Int = 0
    /// Records this source emitted that are not acknowledged yet (sources).
    public var unacknowledgedRecords: Int = 0
    /// How long the oldest of them has waited (sources; nil when none waits).
    public var oldestUnacknowledgedAge: Duration? = nil
    /// Named gauges (for example `checkpoint_lag_bytes`).
    public var gauges: [String: Double] = [:]
    /// Bytes of the lines received from upstream.
    public var bytesIn: Int = 0
    /// Bytes of the lines sent downstream.
    public var bytesOut: Int = 0
}

/// Where a pipeline run is in its life.
public enum PipelinePhase: String, Sendable, Equatable {
    /// ``PipelineRunner/run()`` was not called yet.
    case notStarted = "not started"
    /// Stages run.
    case running
    /// A shutdown was asked: sources stopped, in-flight records drain.
    case stopping
    /// ``PipelineRunner/run()`` returned.
    case ended
}

/// A view of a running (or finished) pipeline's counters.
public struct PipelineProgress: Sendable {
    /// Where the run is.
    public var phase: PipelinePhase = .running
    /// Time since the pipeline started.
    public var elapsed: Duration
    /// Records emitted by all sources.
    public var emitted: Int
    /// Records every downstream branch is done with.
    public var acknowledged: Int
    /// Records emitted but not yet acknowledged.
    public var unacknowledged: Int { emitted - acknowledged }
    /// Per-stage counters in pipeline order.
    public var stages: [StageProgress]
}

/// How a pipeline run ended.
public struct RunSummary: Sendable {
    /// The counters when the run ended.
    public var progress: PipelineProgress
    /// True when a graceful shutdown gave up waiting for acknowledgements.
    public var timedOut: Bool
    /// The first stage failure, if a stage threw; the pipeline stopped then.
    public var failure: PipelineError?

    /// True when every emitted record was acknowledged and no stage failed.
    public var isClean: Bool { failure == nil && !timedOut && progress.unacknowledged == 0 }
}

/// Runs a ``Pipeline``: starts every stage, connects them with bounded
/// channels, and ends when the sources are done and every record is
/// acknowledged, or when ``stop(immediately:)`` was called and the in-flight records
/// drained (or the shutdown deadline passed).
public final class PipelineRunner: Sendable {
    private enum Outcome: Sendable {
        case stageFinished
        case stageFailed(String, any Error)
        case deadline
        case watchdogEnded
    }

    private let pipeline: Pipeline
    private let logger: Logger
    private let stopSignal = StopSignal()
    /// Fired once every stage was started.
    private let startedSignal = StopSignal()
    private let abort = Atomic<Bool>(false)
    private let ledger = DeliveryCounters()
    private let metrics: [String: StageMetrics]
    private let started = Mutex<ContinuousClock.Instant?>(nil)
    private let ended = Atomic<Bool>(false)
    /// Per stage: its state (set as stages start and end) and its input.
    private let stages: Mutex<[String: (state: StageState, input: BoundedChannel<Batch>?)]>
    private let metricsFactory: (any MetricsFactory)?
    private let metricsInterval: Duration
    /// Per source: its batches not fully acknowledged.
    private let outstanding: [String: OutstandingBatches]

    /// Prepares a run of `pipeline`. Nothing starts until ``run()``.
    ///
    /// - Parameters:
    ///   - pipeline: the graph to run.
    ///   - logger: the runtime's logger; each stage's logger adds its name
    ///     as `stage` metadata.
    ///   - metricsFactory: where the run's counters and gauges go (named
    ///     `logpipe_*`, listed in the operations guide); by default the
    ///     backend bootstrapped in `MetricsSystem`, and none when nothing was
    ///     bootstrapped.
    ///   - metricsInterval: how often they are updated (they are sampled,
    ///     never counted per record).
    public init(
        pipeline: Pipeline, logger: Logger = Logger(label: "logpipe"), metricsFactory: (any MetricsFactory)? = nil,
        metricsInterval: Duration = .seconds(1)
    ) {
        self.pipeline = pipeline
        self.logger = logger
        self.metrics = Dictionary(uniqueKeysWithValues: pipeline.nodes.map { ($0.name, StageMetrics()) })
        self.stages = Mutex(
            Dictionary(uniqueKeysWithValues: pipeline.nodes.map { ($0.name, (StageState.starting, nil)) }))
        if let metricsFactory {
            self.metricsFactory = metricsFactory
        } else {
            let bootstrapped = MetricsSystem.factory
            self.metricsFactory = bootstrapped is NOOPMetricsHandler ? nil : bootstrapped
        }
        self.metricsInterval = metricsInterval
        self.outstanding = Dictionary(
            uniqueKeysWithValues: pipeline.nodes.filter { $0.stage.kind == .source }.map {
                ($0.name, OutstandingBatches())
            })
    }

    /// Starts a graceful shutdown: sources stop reading, in-flight records
    /// drain to the sinks, and ``run()`` returns once they are acknowledged
    /// or the pipeline's shutdown timeout passed. With `immediately`, stages
    /// are cancelled at once instead (what a second Ctrl-C does).
    public func stop(immediately: Bool = false) {
        if immediately { abort.store(true, ordering: .releasing) }
        stopSignal.stop()
    }

    /// The current counters.
    public func progress() -> PipelineProgress {
        let start = started.withLock { $0 }
        let stages = self.stages.withLock { $0 }
        let phase: PipelinePhase =
            start == nil
            ? .notStarted
            : ended.load(ordering: .acquiring) ? .ended : stopSignal.isStopped ? .stopping : .running
        return PipelineProgress(
            phase: phase,
            elapsed: start.map { ContinuousClock.now - $0 } ?? .zero,
            emitted: ledger.emitted,
            acknowledged: ledger.acknowledged,
            stages: pipeline.nodes.map { node in
                let metrics = self.metrics[node.name]!
                let stage = stages[node.name]
                let waitingFor = metrics.waitingFor
                let unacknowledged = self.outstanding[node.name]?.snapshot
                var state = stage?.state ?? .starting
                if state == .running, waitingFor != nil { state = .waiting }
                return StageProgress(
                    name: node.name,
                    kind: node.stage.kind,
                    recordsIn: metrics.recordsIn.load(ordering: .relaxed),
                    recordsOut: metrics.recordsOut.load(ordering: .relaxed),
                    counters: metrics.namedCounters,
                    waitingFor: waitingFor,
                    state: state,
                    recordsDelivered: metrics.recordsDelivered.load(ordering: .relaxed),
                    queuedBatches: stage?.input?.bufferedCount ?? 0,
                    inputCapacity: stage?.input == nil ? 0 : pipeline.settings.edgeCapacity,
                    unacknowledgedRecords: unacknowledged?.records ?? 0,
                    oldestUnacknowledgedAge: unacknowledged?.oldest.map { ContinuousClock.now - $0 },
                    gauges: metrics.namedGauges,
                    bytesIn: metrics.bytesIn.load(ordering: .relaxed),
                    bytesOut: metrics.bytesOut.load(ordering: .relaxed)
                )
            }
        )
    }

    /// Returns once ``run()`` started every stage (at once if it did).
    public func waitUntilStarted() async {
        await startedSignal.wait()
    }

    private func setState(_ state: StageState, of name: String) {
        stages.withLock { $0[name]?.state = state }
    }

    /// Runs the pipeline to its end.
    ///
    /// - Returns: counters and how the run ended; a stage failure is reported
    ///   in ``RunSummary/failure``, not thrown.
    /// - Throws: ``PipelineError/invalidGraph(_:)`` before anything starts, or
    ///   ``PipelineError/alreadyStarted`` if this runner ran before.
    public func run() async throws -> RunSummary {
        try pipeline.validate()
        let alreadyStarted = started.withLock { start in
            defer { start = start ?? .now }
            return start != nil
        }
        if alreadyStarted { throw PipelineError.alreadyStarted }
        let settings = pipeline.settings
        let locks = try lockStateDirectories(settings.dataDirectory)
        defer { for lock in locks { lock.release() } }
        let hostname = Host.name
        var inputs: [String: BoundedChannel<Batch>] = [:]
        for node in pipeline.nodes where node.stage.kind != .source {
            inputs[node.name] = BoundedChannel(capacity: settings.edgeCapacity, producers: node.inputs.count)
        }
        stages.withLock { stages in
            for (name, channel) in inputs { stages[name]?.input = channel }
        }
        let timedOut = Atomic<Bool>(false)
        var failure: PipelineError?
        let reporter = metricsFactory.map { factory in
            let interval = metricsInterval
            return Task {
                var published = PipelineMetrics(factory: factory)
                while !Task.isCancelled {
                    published.publish(self.progress())
                    do { try await Task.sleep(for: interval) } catch { break }
                }
                return published
            }
        }

        await withTaskGroup(of: Outcome.self) { group in
            for node in pipeline.nodes {
                var stageLogger = logger
                stageLogger[metadataKey: "stage"] = "\(node.name)"
                let context = StageContext(
                    name: node.name,
                    logger: stageLogger,
                    metrics: metrics[node.name]!,
                    dataDirectory: settings.dataDirectory,
                    hostname: hostname
                )
                let output = BatchOutput(
                    channels: pipeline.consumers(of: node.name).map { inputs[$0]! },
                    metrics: context.metrics
                )
                let input = inputs[node.name].map { BatchInput(channel: $0, metrics: context.metrics) }
                group.addTask {
                    await self.runNode(node, context: context, input: input, output: output)
                }
            }
            group.addTask { await self.watchdog(timeout: settings.shutdownTimeout) }
            startedSignal.stop()

            var running = pipeline.nodes.count
            while let outcome = await group.next() {
                switch outcome {
                case .stageFinished:
                    running -= 1
                    if running == 0 { group.cancelAll() }
                case .stageFailed(let name, let error):
                    running -= 1
                    if failure == nil {
                        failure = .stageFailed(stage: name, underlying: error)
                        logger.error("stage '\(name)' failed, stopping the pipeline: \(error)")
                        stopSignal.stop()
                        group.cancelAll()
                    }
                    if running == 0 { group.cancelAll() }
                case .deadline:
                    timedOut.store(true, ordering: .relaxed)
                    group.cancelAll()
                case .watchdogEnded:
                    break
                }
            }
        }

        if failure == nil, !timedOut.load(ordering: .relaxed), ledger.outstanding > 0 {
            // Every stage returned, but a sink may still be finishing its
            // acknowledgements; give it the shutdown timeout.
            let deadline = ContinuousClock.now + settings.shutdownTimeout
            while ledger.outstanding > 0, ContinuousClock.now < deadline, !abort.load(ordering: .acquiring) {
                try? await Task.sleep(for: .milliseconds(10))
            }
            if ledger.outstanding > 0 { timedOut.store(true, ordering: .relaxed) }
        }
        ended.store(true, ordering: .releasing)
        if let reporter {
            reporter.cancel()
            var published = await reporter.value
            published.publish(progress())  // the last counts
        }
        return RunSummary(progress: progress(), timedOut: timedOut.load(ordering: .relaxed), failure: failure)
    }

    /// Locks the state directory of every stage that keeps state, before
    /// any stage starts: a second process on the same state fails here with
    /// the holder's name instead of overwriting checkpoints or ledgers.
    private func lockStateDirectories(_ dataDirectory: String) throws -> [StateLock] {
        var locks: [StateLock] = []
        for node in pipeline.nodes {
            let stateful: (any StatefulStage)? =
                switch node.stage {
                case .source(let source): source as? any StatefulStage
                case .transform(let transform): transform as? any StatefulStage
                case .sink(let sink): sink as? any StatefulStage
                }
            guard let stateful, stateful.keepsState else { continue }
            do {
                locks.append(try StateLock.acquire(dataDirectory: dataDirectory, stage: node.name))
            } catch {
                for lock in locks { lock.release() }
                throw PipelineError.stateUnavailable(stage: node.name, reason: "\(error)")
            }
        }
        return locks
    }

    private func runNode(_ node: Pipeline.Node, context: StageContext, input: BatchInput?, output: BatchOutput) async
        -> Outcome
    {
        defer {
            output.finish()
            // A stage that returned stops receiving: wake its producers with an
            // error instead of leaving them suspended on a full channel.
            input?.channel.close()
        }
        setState(.running, of: node.name)
        do {
            switch node.stage {
            case .source(let source):
                let latency = metricsFactory.map { factory in
                    CoreMetrics.Timer(
                        label: "logpipe_delivery_latency_seconds", dimensions: [("stage", node.name)],
                        factory: factory)
                }
                try await source.run(
                    SourceContext(
                        stage: context, output: output, stopSignal: stopSignal, ledger: ledger,
                        outstanding: outstanding[node.name]!, latency: latency)
                )
            case .transform(let transform):
                try await transform.run(input: input!, output: output, context: context)
            case .sink(let sink):
                try await sink.run(input: input!, context: context)
            }
            setState(.finished, of: node.name)
            return .stageFinished
        } catch {
            if Task.isCancelled, error is CancellationError || error is ChannelClosedError {
                setState(.finished, of: node.name)
                return .stageFinished
            }
            setState(.failed, of: node.name)
            return .stageFailed(node.name, error)
        }
    }

    private func watchdog(timeout: Duration) async -> Outcome {
        await stopSignal.wait()
        if Task.isCancelled { return .watchdogEnded }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if abort.load(ordering: .acquiring) { return .deadline }
            do {
                try await Task.sleep(for: .milliseconds(50))
            } catch {
                return .watchdogEnded
            }
        }
        return .deadline
    }
}

enum Host {
    /// The machine's host name, or `localhost` if it cannot be read.
    static let name: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }()
}

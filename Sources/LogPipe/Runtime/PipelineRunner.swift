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
    /// Per-stage counters in pipeline order (stages a reload removed
    /// follow while they drain).
    public var stages: [StageProgress]
    /// Reloads applied.
    public var reloads: Int = 0
    /// Reloads refused (the new file had errors, or could not be applied).
    public var failedReloads: Int = 0
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
/// drained (or the shutdown deadline passed). While it runs,
/// ``reload(to:)`` applies a changed graph without stopping the stages
/// that did not change.
public final class PipelineRunner: Sendable {
    private enum Outcome: Sendable {
        case stageFinished
        case stageFailed(String, any Error)
        case deadline
        case watchdogEnded
        case spawn([StageSlot])
    }

    /// The graph as it runs now: the last applied pipeline, a slot per
    /// stage, and the slots a reload removed that still drain.
    private struct Topology {
        var pipeline: Pipeline
        var slots: [String: StageSlot]
        var draining: [StageSlot] = []
    }

    private let logger: Logger
    private let stopSignal = StopSignal()
    /// Fired once every stage was started.
    private let startedSignal = StopSignal()
    private let abort = Atomic<Bool>(false)
    private let ledger = DeliveryCounters()
    private let started = Mutex<ContinuousClock.Instant?>(nil)
    private let ended = Atomic<Bool>(false)
    private let topology: Mutex<Topology>
    private let metricsFactory: (any MetricsFactory)?
    private let metricsInterval: Duration
    /// Slots a reload added, for the run loop to start.
    private let spawns = BoundedChannel<[StageSlot]>(capacity: 64)
    private let reloading = Atomic<Bool>(false)
    private let reloadCounts = Mutex((applied: 0, failed: 0))
    /// State directory locks by stage name, held while the stage runs.
    private let locks = Mutex<[String: StateLock]>([:])

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
        self.logger = logger
        self.topology = Mutex(Topology(pipeline: pipeline, slots: Self.makeSlots(for: pipeline.nodes, in: pipeline)))
        if let metricsFactory {
            self.metricsFactory = metricsFactory
        } else {
            let bootstrapped = MetricsSystem.factory
            self.metricsFactory = bootstrapped is NOOPMetricsHandler ? nil : bootstrapped
        }
        self.metricsInterval = metricsInterval
    }

    /// Slots for `nodes` of `pipeline`, wired to each other; their routes
    /// leave out consumers outside `nodes` (the caller adds those).
    private static func makeSlots(for nodes: [Pipeline.Node], in pipeline: Pipeline) -> [String: StageSlot] {
        var inputs: [String: BoundedChannel<Batch>] = [:]
        for node in nodes where node.stage.kind != .source {
            inputs[node.name] = BoundedChannel(
                capacity: pipeline.settings.edgeCapacity, producers: node.inputs.count)
        }
        var slots: [String: StageSlot] = [:]
        for node in nodes {
            let consumers = pipeline.consumers(of: node.name).compactMap { name in
                inputs[name].map { (name: name, channel: $0) }
            }
            slots[node.name] = StageSlot(node: node, input: inputs[node.name], route: OutputRoute(consumers))
        }
        return slots
    }

    /// The settings of the pipeline running now (the last reload's).
    public var settings: PipelineSettings { topology.withLock { $0.pipeline.settings } }

    /// Starts a graceful shutdown: sources stop reading, in-flight records
    /// drain to the sinks, and ``run()`` returns once they are acknowledged
    /// or the pipeline's shutdown timeout passed. With `immediately`, stages
    /// are cancelled at once instead (what a second Ctrl-C does).
    public func stop(immediately: Bool = false) {
        if immediately { abort.store(true, ordering: .releasing) }
        stopSignal.stop()
    }

    private var phase: PipelinePhase {
        started.withLock { $0 } == nil
            ? .notStarted
            : ended.load(ordering: .acquiring) ? .ended : stopSignal.isStopped ? .stopping : .running
    }

    /// The current counters.
    public func progress() -> PipelineProgress {
        let start = started.withLock { $0 }
        let (pipeline, slots) = topology.withLock { topology in
            (
                topology.pipeline,
                topology.pipeline.nodes.compactMap { topology.slots[$0.name] }
                    + topology.draining.filter { $0.stageState != .finished }
            )
        }
        let reloads = reloadCounts.withLock { $0 }
        return PipelineProgress(
            phase: phase,
            elapsed: start.map { ContinuousClock.now - $0 } ?? .zero,
            emitted: ledger.emitted,
            acknowledged: ledger.acknowledged,
            stages: slots.map { slot in
                let metrics = slot.metrics
                let waitingFor = metrics.waitingFor
                let unacknowledged = slot.outstanding?.snapshot
                var state = slot.stageState
                if state == .running, waitingFor != nil { state = .waiting }
                return StageProgress(
                    name: slot.name,
                    kind: slot.kind,
                    recordsIn: metrics.recordsIn.load(ordering: .relaxed),
                    recordsOut: metrics.recordsOut.load(ordering: .relaxed),
                    counters: metrics.namedCounters,
                    waitingFor: waitingFor,
                    state: state,
                    recordsDelivered: metrics.recordsDelivered.load(ordering: .relaxed),
                    queuedBatches: slot.input?.bufferedCount ?? 0,
                    inputCapacity: slot.input == nil ? 0 : pipeline.settings.edgeCapacity,
                    unacknowledgedRecords: unacknowledged?.records ?? 0,
                    oldestUnacknowledgedAge: unacknowledged?.oldest.map { ContinuousClock.now - $0 },
                    gauges: metrics.namedGauges,
                    bytesIn: metrics.bytesIn.load(ordering: .relaxed),
                    bytesOut: metrics.bytesOut.load(ordering: .relaxed)
                )
            },
            reloads: reloads.applied,
            failedReloads: reloads.failed
        )
    }

    /// Returns once ``run()`` started every stage (at once if it did).
    public func waitUntilStarted() async {
        await startedSignal.wait()
    }

    /// Runs the pipeline to its end.
    ///
    /// - Returns: counters and how the run ended; a stage failure is reported
    ///   in ``RunSummary/failure``, not thrown.
    /// - Throws: ``PipelineError/invalidGraph(_:)`` before anything starts, or
    ///   ``PipelineError/alreadyStarted`` if this runner ran before.
    public func run() async throws -> RunSummary {
        let (pipeline, initialSlots) = topology.withLock { ($0.pipeline, $0.slots) }
        try pipeline.validate()
        let alreadyStarted = started.withLock { start in
            defer { start = start ?? .now }
            return start != nil
        }
        if alreadyStarted { throw PipelineError.alreadyStarted }
        try lockStateDirectories(of: pipeline.nodes, dataDirectory: pipeline.settings.dataDirectory)
        defer {
            for lock in locks.withLock({ $0.values }) { lock.release() }
        }
        let hostname = Host.name
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
                let slot = initialSlots[node.name]!
                group.addTask { await self.runSlot(slot, hostname: hostname) }
            }
            group.addTask { await self.watchdog() }
            group.addTask { await self.nextSpawn() }
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
                case .spawn(let slots):
                    guard !Task.isCancelled else { break }
                    running += slots.count
                    for slot in slots {
                        group.addTask { await self.runSlot(slot, hostname: hostname) }
                    }
                    group.addTask { await self.nextSpawn() }
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

    private func nextSpawn() async -> Outcome {
        guard let slots = await spawns.receive() else { return .watchdogEnded }
        return .spawn(slots)
    }

    /// Locks the state directory of every stage of `nodes` that keeps state
    /// and holds none yet, before it starts: a second process on the same
    /// state fails here with the holder's name instead of overwriting
    /// checkpoints or ledgers. On failure, the locks it took are released.
    private func lockStateDirectories(of nodes: [Pipeline.Node], dataDirectory: String) throws {
        var taken: [String: StateLock] = [:]
        let held = Set(locks.withLock { $0.keys })
        for node in nodes where !held.contains(node.name) {
            let stateful: (any StatefulStage)? =
                switch node.stage {
                case .source(let source): source as? any StatefulStage
                case .transform(let transform): transform as? any StatefulStage
                case .sink(let sink): sink as? any StatefulStage
                }
            guard let stateful, stateful.keepsState else { continue }
            do {
                taken[node.name] = try StateLock.acquire(dataDirectory: dataDirectory, stage: node.name)
            } catch {
                for lock in taken.values { lock.release() }
                throw PipelineError.stateUnavailable(stage: node.name, reason: "\(error)")
            }
        }
        locks.withLock { $0.merge(taken) { first, _ in first } }
    }

    /// Runs the slot's instances one after the other (a reload swaps them)
    /// until one returns with no replacement asked for, then lets go of the
    /// slot's consumers and input.
    private func runSlot(_ slot: StageSlot, hostname: String) async -> Outcome {
        var outcome: Outcome
        while true {
            let instance = slot.currentInstance()
            outcome = await runInstance(instance, of: slot, hostname: hostname)
            var failed = false
            if case .stageFailed = outcome { failed = true }
            // A cancelled run (the shutdown deadline) starts nothing new.
            guard slot.instanceReturned(failed: failed, mayContinue: !Task.isCancelled) else { break }
        }
        slot.route.finishAll()
        // A stage that returned stops receiving: wake its producers with an
        // error instead of leaving them suspended on a full channel.
        slot.input?.close()
        if slot.isRemoved {
            let lock = locks.withLock { $0.removeValue(forKey: slot.name) }
            lock?.release()
            topology.withLock { $0.draining.removeAll { $0 === slot } }
        }
        return outcome
    }

    private func runInstance(
        _ instance: (node: Pipeline.Node, stop: StopSignal, generation: UInt64?), of slot: StageSlot,
        hostname: String
    ) async -> Outcome {
        let node = instance.node
        var stageLogger = logger
        stageLogger[metadataKey: "stage"] = "\(node.name)"
        let context = StageContext(
            name: node.name,
            logger: stageLogger,
            metrics: slot.metrics,
            dataDirectory: settings.dataDirectory,
            hostname: hostname
        )
        let output = BatchOutput(route: slot.route, metrics: slot.metrics)
        let input = slot.input.map { BatchInput(channel: $0, metrics: slot.metrics, generation: instance.generation) }
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
                        stage: context, output: output, stopSignal: stopSignal, instanceStop: instance.stop,
                        ledger: ledger, outstanding: slot.outstanding!, latency: latency)
                )
            case .transform(let transform):
                try await transform.run(input: input!, output: output, context: context)
            case .sink(let sink):
                try await sink.run(input: input!, context: context)
            }
            return .stageFinished
        } catch {
            if Task.isCancelled, error is CancellationError || error is ChannelClosedError {
                return .stageFinished
            }
            return .stageFailed(node.name, error)
        }
    }

    private func watchdog() async -> Outcome {
        await stopSignal.wait()
        if Task.isCancelled { return .watchdogEnded }
        let deadline = ContinuousClock.now + settings.shutdownTimeout
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

    // MARK: Reload

    /// Counts a reload that failed before it reached ``reload(to:)`` (the
    /// new pipeline file did not load), for ``PipelineProgress/failedReloads``.
    public func countFailedReload() {
        reloadCounts.withLock { $0.failed += 1 }
    }

    /// Replaces the running graph with `pipeline`, stage by stage.
    ///
    /// Stages whose name, type and configuration are the same keep running
    /// with their connections, checkpoints and in-flight records. A stage
    /// whose options changed is drained and swapped: the old instance
    /// finishes what it holds and returns (a source once its records are
    /// acknowledged), then the new one takes over its input and output, so
    /// no record is lost, duplicated or reordered. Added stages start;
    /// removed ones drain and stop. Settings apply where they can
    /// (`shutdown_timeout`, `api.max_unacknowledged_age`); the report names
    /// those that wait for a restart. Returns once the swapped and removed
    /// stages finished draining, or after `shutdown_timeout` (the report
    /// then names those still draining).
    ///
    /// - Throws: ``ReloadError``; the running pipeline is unchanged then.
    @discardableResult
    public func reload(to pipeline: Pipeline) async throws(ReloadError) -> ReloadReport {
        do {
            let report = try await applyReload(pipeline)
            reloadCounts.withLock { $0.applied += 1 }
            logger.notice("reloaded the pipeline: \(report)")
            return report
        } catch {
            countFailedReload()
            throw error
        }
    }

    private func applyReload(_ new: Pipeline) async throws(ReloadError) -> ReloadReport {
        guard phase == .running else { throw ReloadError.notRunning(phase) }
        guard !reloading.exchange(true, ordering: .acquiring) else { throw ReloadError.inProgress }
        defer { reloading.store(false, ordering: .releasing) }
        do {
            try new.validate()
        } catch PipelineError.invalidGraph(let problems) {
            throw ReloadError.rejected(problems)
        } catch {
            throw ReloadError.rejected(["\(error)"])
        }
        let old = topology.withLock { $0.pipeline }
        let plan = ReloadPlan(from: old, to: new)
        guard plan.problems.isEmpty else { throw ReloadError.rejected(plan.problems) }

        let addedNodes = new.nodes.filter { plan.added.contains($0.name) }
        do {
            try lockStateDirectories(of: addedNodes, dataDirectory: new.settings.dataDirectory)
        } catch {
            throw ReloadError.rejected(["\(error)"])
        }

        // 1. New slots, wired among themselves; the new graph becomes current.
        let addedSlots = Self.makeSlots(for: addedNodes, in: new)
        let slots: [String: StageSlot] = topology.withLock { topology in
            for name in plan.removed {
                if let slot = topology.slots.removeValue(forKey: name) { topology.draining.append(slot) }
            }
            topology.slots.merge(addedSlots) { first, _ in first }
            topology.pipeline = new
            return topology.slots.merging(
                topology.draining.map { ($0.name, $0) }, uniquingKeysWith: { current, _ in current })
        }
        // 2. Edges into existing consumers from new stages, and every edge
        //    new to an existing producer.
        for (name, slot) in addedSlots {
            for consumer in new.consumers(of: name) where addedSlots[consumer] == nil {
                guard let channel = slots[consumer]?.input else { continue }
                channel.addProducer()
                slot.route.add(consumer, channel)
            }
        }
        for edge in plan.edgesAdded {
            guard let producer = slots[edge.producer], let channel = slots[edge.consumer]?.input else { continue }
            if addedSlots[edge.consumer] == nil { channel.addProducer() }
            producer.route.add(edge.consumer, channel)
        }
        // 3. Start the new stages; drain the changed and removed ones.
        if !addedSlots.isEmpty {
            try? await spawns.send(new.nodes.compactMap { addedSlots[$0.name] })
        }
        var drained: [(String, StopSignal)] = []
        for name in plan.changed {
            guard let slot = slots[name], let node = new.node(named: name) else { continue }
            drained.append((name, slot.replace(with: node)))
        }
        for name in plan.removed {
            guard let slot = slots[name] else { continue }
            drained.append((name, slot.remove()))
        }
        // 4. Edges that go: no more sends, then one producer fewer.
        for edge in plan.edgesRemoved {
            guard let producer = slots[edge.producer], let channel = await producer.route.remove(edge.consumer)
            else { continue }
            channel.finishProducer()
        }
        // 5. Wait for the drains, up to the shutdown timeout.
        let deadline = ContinuousClock.now + new.settings.shutdownTimeout
        var stillDraining: [String] = []
        for (name, ended) in drained {
            if !(await ended.wait(until: deadline)) { stillDraining.append(name) }
        }
        return ReloadReport(
            added: plan.added, removed: plan.removed, changed: plan.changed, unchanged: plan.unchanged,
            stillDraining: stillDraining, notes: plan.notes)
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

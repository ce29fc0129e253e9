import Logging
import Synchronization

/// The three roles a stage can play in a pipeline graph.
public enum StageKind: String, Sendable, Hashable, CaseIterable {
    /// Produces records (reads a file, stdin, a subscription).
    case source
    /// Takes batches from its inputs and sends batches on (filters, partitioner).
    case transform
    /// Takes batches and delivers them somewhere, acknowledging each record.
    case sink

    /// The pipeline-file section for this kind (`sources`, `transforms`, `sinks`).
    public var section: String { rawValue + "s" }
}

/// A stage that produces records.
///
/// `run` reads from wherever the source reads and calls
/// ``SourceContext/emit(_:onAcknowledged:)`` with batches of records. It
/// returns when its input is exhausted (end of file, end of stream) or when
/// ``SourceContext/isStopping`` becomes true, which is how a graceful shutdown
/// begins. Emitting suspends while downstream is full: that is backpressure,
/// and a source must not read ahead without bound while it waits.
public protocol Source: FieldProducer, Sendable {
    /// Produces records until the input ends or the pipeline stops.
    func run(_ context: SourceContext) async throws
}

/// A stage between sources and sinks.
///
/// `run` receives batches from `input` until it ends, and sends batches to
/// `output`. A transform that removes a record must acknowledge it as dropped
/// (``Batch/removeAll(where:)`` does this); otherwise the source never learns
/// the record is done. Most transforms only need ``BatchTransform``.
public protocol Transform: FieldProducer, Sendable {
    /// Processes batches from `input` until it ends.
    func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws
}

/// A transform that works on one batch at a time, in place.
///
/// Conforming types implement ``transform(_:)``; the default `run` loops over
/// the input and sends non-empty results on.
public protocol BatchTransform: Transform {
    /// Rewrites `batch`: change records, or remove them with
    /// ``Batch/removeAll(where:)`` so that they are acknowledged as dropped.
    func transform(_ batch: inout Batch) throws
}

extension BatchTransform {
    /// Applies ``transform(_:)`` to every batch of `input`.
    public func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws {
        for await var batch in input {
            try transform(&batch)
            if !batch.isEmpty {
                try await output.send(batch)
            }
        }
    }
}

/// A stage that delivers records and acknowledges them.
///
/// `run` receives batches until `input` ends. For each batch it delivers the
/// records and then calls ``Batch/acknowledge(_:)``: only then does the source
/// consider them done (commit a file offset, ack a JetStream message). A sink
/// that cannot deliver retries with backoff and keeps the pipeline waiting; it
/// never drops records silently. It should return promptly when its task is
/// cancelled (the shutdown deadline passed).
public protocol Sink: Sendable {
    /// Delivers batches from `input` until it ends.
    func run(input: BatchInput, context: StageContext) async throws
}

/// What every stage gets from the runtime: its name, a logger, counters and
/// the pipeline's settings.
public struct StageContext: Sendable {
    /// The stage's name in the pipeline.
    public let name: String
    /// A logger whose metadata names the stage.
    public let logger: Logger
    /// Counters shown in the status line and the final summary.
    public let metrics: StageMetrics
    /// The pipeline's directory for state such as checkpoints.
    public let dataDirectory: String
    /// The machine's host name, the default `host` of local records.
    public let hostname: String
}

/// The input of a transform or sink: the batches its upstream stages send.
///
/// Iterate it with `for await batch in input`. The sequence ends when every
/// upstream stage finished.
public struct BatchInput: AsyncSequence, Sendable {
    public typealias Element = Batch
    let channel: BoundedChannel<Batch>
    let metrics: StageMetrics
    /// The consumer generation this stage instance receives as (a reload
    /// that swaps the stage ends this input without closing the channel).
    let generation: UInt64?

    init(channel: BoundedChannel<Batch>, metrics: StageMetrics, generation: UInt64? = nil) {
        self.channel = channel
        self.metrics = metrics
        self.generation = generation
    }

    /// Iterates over incoming batches.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let channel: BoundedChannel<Batch>
        let metrics: StageMetrics
        let generation: UInt64?

        public mutating func next() async -> Batch? {
            guard let batch = await channel.receive(generation: generation) else { return nil }
            metrics.recordsIn.add(batch.count, ordering: .relaxed)
            metrics.bytesIn.add(batch.byteCount, ordering: .relaxed)
            return batch
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(channel: channel, metrics: metrics, generation: generation)
    }

    /// The next batch if one is already waiting, without suspending: lets a
    /// sink whose cost is per write (an fsync) take what queued up meanwhile
    /// and write it in one go.
    public func nextIfReady() -> Batch? {
        guard let batch = channel.tryReceive(generation: generation) else { return nil }
        metrics.recordsIn.add(batch.count, ordering: .relaxed)
        metrics.bytesIn.add(batch.byteCount, ordering: .relaxed)
        return batch
    }
}

/// Where a source or transform sends its batches: every downstream stage.
///
/// With several downstream stages (fan-out) each gets the batch, and each
/// record is done only when every branch acknowledged it. `send` waits while
/// any downstream input is full.
public struct BatchOutput: Sendable {
    let route: OutputRoute
    let metrics: StageMetrics

    init(route: OutputRoute, metrics: StageMetrics) {
        self.route = route
        self.metrics = metrics
    }

    /// Sends `batch` to every downstream stage, suspending while any is full.
    public func send(_ batch: Batch) async throws {
        guard !batch.isEmpty else { return }
        metrics.recordsOut.add(batch.count, ordering: .relaxed)
        metrics.bytesOut.add(batch.byteCount, ordering: .relaxed)
        let (channels, ticket) = route.beginSend()
        defer { route.endSend(ticket) }
        if channels.isEmpty {
            // Nobody listens (allowed with a warning): the records are done.
            batch.acknowledge(.dropped)
            return
        }
        batch.retainAcknowledgements(extra: channels.count - 1)
        for channel in channels {
            try await channel.send(batch)
        }
    }

    func finish() {
        route.finishAll()
    }
}

/// The inputs a stage's output goes to, by consumer name. A reload adds and
/// removes consumers between sends: a removed consumer's channel is let go
/// only once no send that could still reach it is in flight.
final class OutputRoute: Sendable {
    private struct State {
        var consumers: [(name: String, channel: BoundedChannel<Batch>)]
        var channels: [BoundedChannel<Batch>]
        /// Bumped by each removal; sends in flight per epoch they began in.
        var epoch: UInt64 = 0
        var inFlight: [UInt64: Int] = [:]
    }

    private let state: Mutex<State>

    init(_ consumers: [(name: String, channel: BoundedChannel<Batch>)]) {
        state = Mutex(State(consumers: consumers, channels: consumers.map(\.channel)))
    }

    /// The consumers' names.
    var consumerNames: [String] { state.withLock { $0.consumers.map(\.name) } }

    func beginSend() -> ([BoundedChannel<Batch>], UInt64) {
        state.withLock { state in
            state.inFlight[state.epoch, default: 0] += 1
            return (state.channels, state.epoch)
        }
    }

    func endSend(_ epoch: UInt64) {
        state.withLock { state in
            state.inFlight[epoch, default: 1] -= 1
            if state.inFlight[epoch] == 0 { state.inFlight[epoch] = nil }
        }
    }

    /// Sends from now on go to `channel` too.
    func add(_ name: String, _ channel: BoundedChannel<Batch>) {
        state.withLock { state in
            state.consumers.append((name, channel))
            state.channels.append(channel)
        }
    }

    /// Sends from now on skip `name`; returns its channel once no send
    /// begun before is still in flight (so the caller may finish it as a
    /// producer without a batch arriving after).
    func remove(_ name: String) async -> BoundedChannel<Batch>? {
        let (removed, epoch): (BoundedChannel<Batch>?, UInt64) = state.withLock { state in
            guard let index = state.consumers.firstIndex(where: { $0.name == name }) else { return (nil, 0) }
            let removed = state.consumers.remove(at: index).channel
            state.channels = state.consumers.map(\.channel)
            state.epoch += 1
            return (removed, state.epoch)
        }
        guard let removed else { return nil }
        // Reloads are rare; a short poll keeps the send path lock-light.
        while state.withLock({ state in state.inFlight.keys.contains { $0 < epoch } }) {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return removed
    }

    /// The stage ended: every consumer loses this producer.
    func finishAll() {
        let channels = state.withLock { state in
            defer {
                state.consumers = []
                state.channels = []
            }
            return state.channels
        }
        for channel in channels { channel.finishProducer() }
    }
}

/// The fields a stage sets, so that templates downstream may name them. The
/// pipeline-file loader uses it to reject a template field no upstream stage
/// sets. Every source and transform declares them (`[]` when it sets none):
/// a stage that could leave them out would switch the check off downstream.
public protocol FieldProducer {
    /// The names of the fields this stage may set (besides the built-in
    /// ones: host, partition, severity, source, origin, subject).
    var producedFields: Set<String> { get }
}

/// A stage with templates among its options, checked by the loader against
/// the fields produced upstream.
public protocol TemplateConsumer {
    /// Each template with the option it came from (`path`, `subject`, ...).
    var templates: [(option: String, template: Template)] { get }
}

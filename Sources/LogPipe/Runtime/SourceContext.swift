import CoreMetrics
import LogPipeBase
import Logging
import Synchronization

/// What a source gets from the runtime: a way to emit batches, the stop
/// signal, and the common ``StageContext``.
public struct SourceContext: Sendable {
    /// Name, logger, metrics and settings shared by every stage kind.
    public let stage: StageContext
    let output: BatchOutput
    let stopSignal: StopSignal
    /// Stops this instance alone (a reload that swaps or removes the source).
    let instanceStop: StopSignal?
    let ledger: DeliveryCounters
    /// This source's batches not fully acknowledged (for the oldest one's age).
    let outstanding: OutstandingBatches
    /// Source-to-acknowledgement time per batch, when metrics are on.
    let latency: CoreMetrics.Timer?

    /// The stage's name in the pipeline.
    public var name: String { stage.name }
    /// A logger whose metadata names the stage.
    public var logger: Logger { stage.logger }
    /// Counters shown in the status line and the final summary.
    public var metrics: StageMetrics { stage.metrics }

    /// True once the pipeline is shutting down; return from `run` soon after.
    /// Also true when a reload replaces or removes this source: it returns
    /// the same way, after its records are acknowledged.
    public var isStopping: Bool { stopSignal.isStopped || instanceStop?.isStopped == true }

    /// Suspends until the pipeline starts shutting down, or a reload stops
    /// this source (or the task is cancelled).
    public func waitForStop() async {
        guard let instanceStop else { return await stopSignal.wait() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.stopSignal.wait() }
            group.addTask { await instanceStop.wait() }
            await group.next()
            group.cancelAll()
        }
    }

    /// Emits records as one batch, suspending while downstream is full.
    ///
    /// The runtime links each record to a new ``AcknowledgementToken`` and
    /// calls `onAcknowledged` as records become done downstream; every record
    /// is reported exactly once. A source that must not lose data (a file
    /// tail, a JetStream consumer) commits progress only from this handler.
    ///
    /// - Returns: the token, to query ``AcknowledgementToken/isComplete``.
    @discardableResult
    public func emit(
        _ records: consuming [Record],
        onAcknowledged: AcknowledgementToken.Handler? = nil
    ) async throws -> AcknowledgementToken? {
        let count = records.count
        guard count > 0 else { return nil }
        let ledger = self.ledger
        let outstanding = self.outstanding
        let latency = self.latency
        let batchID = outstanding.emitted(count)
        let token = AcknowledgementToken(count: count) { token, completed in
            ledger.acknowledged(completed.count)
            if let took = outstanding.acknowledged(batchID, count: completed.count) {
                latency?.recordNanoseconds(took.inNanoseconds)
            }
            onAcknowledged?(token, completed)
        }
        var batch = Batch(records: consume records)
        for index in batch.records.indices {
            batch.records[index].acknowledgement = AcknowledgementSlot(token: token, index: index)
        }
        ledger.emitted(count)
        try await output.send(batch)
        return token
    }
}

/// A one-shot signal that starts the graceful shutdown.
final class StopSignal: Sendable {
    private struct State {
        var stopped = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())
    private let flag = Atomic<Bool>(false)

    var isStopped: Bool { flag.load(ordering: .acquiring) }

    func stop() {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { state in
            guard !state.stopped else { return [] }
            state.stopped = true
            let waiters = Array(state.waiters.values)
            state.waiters.removeAll()
            return waiters
        }
        flag.store(true, ordering: .releasing)
        for waiter in waiters { waiter.resume() }
    }

    /// Waits until the signal fires or `deadline` passes: true if it fired.
    func wait(until deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.wait()
                return true
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            _ = await group.next()
            group.cancelAll()
            return self.isStopped
        }
    }

    func wait() async {
        let id: UInt64 = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if state.stopped || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// Counts records emitted by every source and records fully acknowledged.
final class DeliveryCounters: Sendable {
    private let emittedCount = Atomic<Int>(0)
    private let acknowledgedCount = Atomic<Int>(0)

    func emitted(_ count: Int) { emittedCount.add(count, ordering: .relaxed) }
    func acknowledged(_ count: Int) { acknowledgedCount.add(count, ordering: .relaxed) }

    var emitted: Int { emittedCount.load(ordering: .relaxed) }
    var acknowledged: Int { acknowledgedCount.load(ordering: .relaxed) }
    var outstanding: Int { emitted - acknowledged }
}

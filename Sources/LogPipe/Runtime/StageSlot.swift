import Synchronization

/// One stage of a running pipeline: its input channel, where its output
/// goes, its counters, and the instance running now.
///
/// The ports outlive the instance: a reload that changes the stage's
/// options swaps the instance (the old one drains, then the new one takes
/// the same input and output), so records queued on either side are
/// neither lost nor reordered.
final class StageSlot: Sendable {
    let name: String
    let kind: StageKind
    /// The stage's input (transforms and sinks).
    let input: BoundedChannel<Batch>?
    let route: OutputRoute
    let metrics: StageMetrics
    /// The batches this source emitted that are not fully acknowledged.
    let outstanding: OutstandingBatches?

    private struct State {
        var node: Pipeline.Node
        var state: StageState = .starting
        /// Set by a reload: run this once the current instance returned.
        var replacement: Pipeline.Node?
        /// A reload removed the stage: it ends once drained.
        var removed = false
        var instanceStop = StopSignal()
        var instanceEnded = StopSignal()
    }

    private let state: Mutex<State>

    init(node: Pipeline.Node, input: BoundedChannel<Batch>?, route: OutputRoute) {
        self.name = node.name
        self.kind = node.stage.kind
        self.input = input
        self.route = route
        self.metrics = StageMetrics()
        self.outstanding = node.stage.kind == .source ? OutstandingBatches() : nil
        self.state = Mutex(State(node: node))
    }

    var node: Pipeline.Node { state.withLock { $0.node } }
    var stageState: StageState { state.withLock { $0.state } }
    var isRemoved: Bool { state.withLock { $0.removed } }

    func setState(_ newState: StageState) {
        state.withLock { $0.state = newState }
    }

    /// The instance to run now: its node, the signal that stops it alone,
    /// and the generation it receives its input as.
    func currentInstance() -> (node: Pipeline.Node, stop: StopSignal, generation: UInt64?) {
        let generation = input?.consumerGeneration
        return state.withLock { state in
            state.state = .running
            return (state.node, state.instanceStop, generation)
        }
    }

    /// The current instance returned: true (and the replacement installed)
    /// when a reload asked for one and `mayContinue`; the caller runs it.
    func instanceReturned(failed: Bool, mayContinue: Bool = true) -> Bool {
        let (ended, next): (StopSignal, Bool) = state.withLock { state in
            let ended = state.instanceEnded
            guard !failed, mayContinue, let replacement = state.replacement else {
                state.state = failed ? .failed : .finished
                return (ended, false)
            }
            state.node = replacement
            state.replacement = nil
            state.state = .starting
            state.instanceStop = StopSignal()
            state.instanceEnded = StopSignal()
            return (ended, true)
        }
        if next { metrics.resetForNewInstance() }
        ended.stop()
        return next
    }

    /// Asks the running instance to drain and hand over to `node`; returns
    /// the signal fired once it returned.
    func replace(with node: Pipeline.Node) -> StopSignal {
        let (stop, ended) = state.withLock { state in
            state.replacement = node
            return (state.instanceStop, state.instanceEnded)
        }
        endInstance(stop)
        return ended
    }

    /// Asks the running instance to drain and the stage to end; returns the
    /// signal fired once it did. A transform or sink ends when its producers
    /// let go of its input (the reload removes those edges).
    func remove() -> StopSignal {
        let (stop, ended) = state.withLock { state in
            state.removed = true
            state.replacement = nil
            return (state.instanceStop, state.instanceEnded)
        }
        if kind == .source { stop.stop() }
        return ended
    }

    private func endInstance(_ stop: StopSignal) {
        if kind == .source {
            stop.stop()
        } else {
            input?.detachConsumer()
        }
    }
}

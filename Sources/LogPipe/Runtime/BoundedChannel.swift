import NIOCore
import Synchronization

/// Thrown by ``BoundedChannel/send(_:)`` when the consumer has gone away.
public struct ChannelClosedError: Error, CustomStringConvertible {
    public var description: String { "the downstream stage stopped receiving" }
}

/// A multi-producer, single-consumer queue with a fixed capacity whose `send`
/// suspends while the queue is full.
///
/// This is what makes backpressure real: a producer that outpaces its consumer
/// waits instead of growing memory. (`AsyncStream.Continuation.yield` never
/// waits, so it can only buffer without bound or drop.) Waiting senders are
/// resumed in the order they arrived, so each producer's elements keep their
/// order. The channel ends once every producer called ``finishProducer()`` and
/// the queue is drained.
public final class BoundedChannel<Element: Sendable>: Sendable {
    private struct Waiter {
        var id: UInt64
        var element: Element
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State: ~Copyable {
        var buffer: CircularBuffer<Element>
        var capacity: Int
        var openProducers: Int
        var closed = false
        var nextWaiterID: UInt64 = 0
        var senders: CircularBuffer<Waiter> = CircularBuffer()
        var receiver: CheckedContinuation<Element?, Never>?
        /// Bumped by ``detachConsumer()``: a receive on behalf of an older
        /// consumer ends instead of taking an element.
        var consumerGeneration: UInt64 = 0
    }

    private let state: Mutex<State>

    /// Creates a channel that holds at most `capacity` elements and ends after
    /// `producers` calls to ``finishProducer()``.
    public init(capacity: Int, producers: Int = 1) {
        precondition(capacity > 0, "a channel needs room for at least one element")
        state = Mutex(
            State(buffer: CircularBuffer(initialCapacity: capacity), capacity: capacity, openProducers: producers)
        )
    }

    /// The number of elements queued (not counting suspended senders).
    public var bufferedCount: Int { state.withLock { $0.buffer.count } }

    /// Enqueues `element`, suspending while the channel is full.
    ///
    /// - Throws: `CancellationError` if the sending task is cancelled while it
    ///   waits, ``ChannelClosedError`` if the consumer closed the channel.
    public func send(_ element: Element) async throws {
        switch state.withLock({ Self.offerLocked(&$0, element) }) {
        case .buffered: return
        case .closed: throw ChannelClosedError()
        case .handedTo(let receiver):
            receiver.resume(returning: element)
            return
        case .full, .cancelled: break
        }
        try await suspendingSend(element)
    }

    private func suspendingSend(_ element: Element) async throws {
        let id = state.withLock { state in
            state.nextWaiterID &+= 1
            return state.nextWaiterID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // The channel may have changed since `send` found it full.
                let offer: Offer = state.withLock { state in
                    if Task.isCancelled, !state.closed { return .cancelled }
                    let offer = Self.offerLocked(&state, element)
                    if case .full = offer {
                        state.senders.append(Waiter(id: id, element: element, continuation: continuation))
                    }
                    return offer
                }
                switch offer {
                case .buffered: continuation.resume()
                case .handedTo(let receiver):
                    receiver.resume(returning: element)
                    continuation.resume()
                case .closed: continuation.resume(throwing: ChannelClosedError())
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .full: break
                }
            }
        } onCancel: {
            let waiter: Waiter? = state.withLock { state in
                guard let index = state.senders.firstIndex(where: { $0.id == id }) else { return nil }
                return state.senders.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Marks one producer as finished. After the last one, the consumer
    /// receives the queued elements and then `nil`.
    public func finishProducer() {
        let receiver: CheckedContinuation<Element?, Never>? = state.withLock { state in
            state.openProducers -= 1
            if state.openProducers <= 0, state.buffer.isEmpty, state.senders.isEmpty, let receiver = state.receiver {
                state.receiver = nil
                return receiver
            }
            return nil
        }
        receiver?.resume(returning: nil)
    }

    /// Adds a producer: the channel now ends after one more
    /// ``finishProducer()`` (a stage that starts sending to it on a reload).
    public func addProducer() {
        state.withLock { $0.openProducers += 1 }
    }

    /// The current consumer's generation: pass it to ``receive(generation:)``.
    public var consumerGeneration: UInt64 { state.withLock { $0.consumerGeneration } }

    /// Ends the input of the current consumer without closing the channel:
    /// its waiting and later receives return `nil` (as if every producer
    /// finished) while the queued elements and the producers stay for the
    /// next consumer, which receives with the returned generation. How a
    /// stage is swapped on a reload with nothing lost or reordered.
    @discardableResult
    public func detachConsumer() -> UInt64 {
        let (generation, receiver): (UInt64, CheckedContinuation<Element?, Never>?) = state.withLock { state in
            state.consumerGeneration += 1
            let receiver = state.receiver
            state.receiver = nil
            return (state.consumerGeneration, receiver)
        }
        receiver?.resume(returning: nil)
        return generation
    }

    /// Closes the channel from the consumer side: queued and waiting elements
    /// are discarded and every current and future `send` throws.
    public func close() {
        let (senders, receiver): (CircularBuffer<Waiter>, CheckedContinuation<Element?, Never>?) = state.withLock {
            state in
            state.closed = true
            state.buffer.removeAll()
            let senders = state.senders
            state.senders.removeAll()
            let receiver = state.receiver
            state.receiver = nil
            return (senders, receiver)
        }
        for sender in senders { sender.continuation.resume(throwing: ChannelClosedError()) }
        receiver?.resume(returning: nil)
    }

    /// Takes the next element if one is queued (or a sender waits), without
    /// waiting; `nil` otherwise.
    public func tryReceive(generation: UInt64? = nil) -> Element? {
        let taken: Take = state.withLock { state in Self.takeLocked(&state, generation: generation) }
        guard case .element(let element, let wake) = taken else { return nil }
        wake?.resume()
        return element
    }

    /// Takes the next element, waiting for one; `nil` once every producer
    /// finished and the queue is empty, or when the receiving task is cancelled.
    /// With a `generation` (see ``detachConsumer()``), also `nil` once a
    /// newer consumer took over.
    public func receive(generation: UInt64? = nil) async -> Element? {
        let immediate: Take = state.withLock { state in Self.takeLocked(&state, generation: generation) }
        switch immediate {
        case .element(let element, let wake):
            wake?.resume()
            return element
        case .end: return nil
        case .wait: break
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
                let result: Take = state.withLock { state in
                    let taken = Self.takeLocked(&state, generation: generation)
                    if case .wait = taken {
                        if Task.isCancelled { return .end }
                        state.receiver = continuation
                    }
                    return taken
                }
                switch result {
                case .element(let element, let wake):
                    wake?.resume()
                    continuation.resume(returning: element)
                case .end: continuation.resume(returning: nil)
                case .wait: break
                }
            }
        } onCancel: {
            let receiver = state.withLock { state in
                let receiver = state.receiver
                state.receiver = nil
                return receiver
            }
            receiver?.resume(returning: nil)
        }
    }

    private enum Offer {
        case buffered
        case handedTo(CheckedContinuation<Element?, Never>)
        case closed
        case cancelled
        case full
    }

    /// Queues `element` or hands it to a waiting receiver, if there is room
    /// and no earlier sender is waiting (that keeps senders in order).
    private static func offerLocked(_ state: inout State, _ element: Element) -> Offer {
        if state.closed { return .closed }
        if let receiver = state.receiver {
            state.receiver = nil
            return .handedTo(receiver)
        }
        if state.buffer.count < state.capacity && state.senders.isEmpty {
            state.buffer.append(element)
            return .buffered
        }
        return .full
    }

    private enum Take {
        case element(Element, wake: CheckedContinuation<Void, any Error>?)
        case end
        case wait
    }

    private static func takeLocked(_ state: inout State, generation: UInt64?) -> Take {
        if let generation, generation != state.consumerGeneration { return .end }
        if let element = state.buffer.popFirst() {
            // A slot freed up: move the oldest waiting sender's element in.
            if let waiter = state.senders.popFirst() {
                state.buffer.append(waiter.element)
                return .element(element, wake: waiter.continuation)
            }
            return .element(element, wake: nil)
        }
        if let waiter = state.senders.popFirst() {
            return .element(waiter.element, wake: waiter.continuation)
        }
        if state.openProducers <= 0 || state.closed { return .end }
        return .wait
    }
}

import Synchronization

/// A value that arrives later, completed once from any thread and awaited by
/// any number of tasks; awaiting is cancellable and can time out.
public final class AsyncPromise<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var waiters: [UInt64: CheckedContinuation<Value, any Error>] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// An uncompleted promise.
    public init() {}

    /// Whether the promise was completed.
    public var isCompleted: Bool { state.withLock { $0.result != nil } }

    /// Completes with `value`; later completions are ignored.
    public func succeed(_ value: Value) { complete(.success(value)) }

    /// Completes with `error`; later completions are ignored.
    public func fail(_ error: any Error) { complete(.failure(error)) }

    private func complete(_ result: Result<Value, any Error>) {
        let waiters: [CheckedContinuation<Value, any Error>] = state.withLock { state in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// Waits for the value.
    public func value() async throws -> Value {
        try await wait(timeout: nil, onTimeout: { CancellationError() })
    }

    /// Waits for the value at most `timeout`; then throws `onTimeout`.
    /// The time-out is an entry in `Deadlines` (no task, no timer of its
    /// own): a JetStream sink waits so for every batch it publishes.
    public func value(timeout: Duration, onTimeout: @autoclosure @escaping @Sendable () -> any Error) async throws
        -> Value
    {
        try await wait(timeout: timeout, onTimeout: onTimeout)
    }

    private func wait(timeout: Duration?, onTimeout: @escaping @Sendable () -> any Error) async throws -> Value {
        if let result = state.withLock({ $0.result }) { return try result.get() }
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        let timer = Mutex<UInt64?>(nil)
        defer { if let entry = timer.withLock({ $0 }) { Deadlines.shared.cancel(entry) } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                let ready: Result<Value, any Error>? = state.withLock { state in
                    if let result = state.result { return result }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let ready {
                    continuation.resume(with: ready)
                    return
                }
                guard let timeout else { return }
                let entry = Deadlines.shared.schedule(after: timeout) { [self] in
                    let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
                    waiter?.resume(throwing: onTimeout())
                }
                timer.withLock { $0 = entry }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }
}

import Synchronization

/// Hands a value to `@Sendable` closures run on the blocking pool; safe
/// because the owner awaits each closure before touching the value again, so
/// only one thread uses it at a time.
final class SendableBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// A flag set once from any thread.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}

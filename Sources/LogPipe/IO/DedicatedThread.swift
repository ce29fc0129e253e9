import NIOPosix

/// A thread of its own for a stage whose loop spends its life in system
/// calls that may block (the file source's poll, fstat and pread; the file
/// sink's write and fsync).
///
/// Such calls must not run on Swift's cooperative pool (one thread per core
/// that everything shares), so ``BlockingIO/run(_:)`` hands them to a
/// blocking pool and back: two thread switches per call. A file tailed at
/// 1,000 lines/s, each line its own wake-up, paid that four times a line,
/// which made LogPipe cost several times rsyslog's CPU at the rates hosts
/// really log. A stage that runs its loop on a dedicated thread
/// (``run(_:)``) makes those calls where it is: ``BlockingIO/run(_:)``
/// sees it is on such a thread and calls the body inline. Blocking there
/// only delays the stage itself.
final class DedicatedThread: TaskExecutor, Sendable {
    private let pool: NIOThreadPool

    /// Set on dedicated threads only.
    private static let marker = ThreadSpecificVariable<Marker>()
    private final class Marker: Sendable {}

    init() {
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        pool.submit { _ in DedicatedThread.marker.currentValue = Marker() }
    }

    /// Whether the calling code runs on a dedicated thread (where blocking
    /// is allowed).
    static var isCurrent: Bool { marker.currentValue != nil }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        pool.submit { _ in job.runSynchronously(on: executor) }
    }

    /// Runs `body` with a new dedicated thread as its tasks' executor, and
    /// ends the thread afterwards.
    static func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        let thread = DedicatedThread()
        defer { thread.pool.shutdownGracefully { _ in } }
        return try await withTaskExecutorPreference(thread) { try await body() }
    }
}

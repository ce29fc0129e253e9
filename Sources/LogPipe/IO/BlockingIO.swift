import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs blocking system calls (read, write, fsync) off Swift's cooperative
/// thread pool, which has only one thread per core and must never block.
enum BlockingIO {
    /// A pool of its own so that a stage blocked in `poll` or `fsync` never
    /// delays another stage's work.
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: max(4, System.coreCount * 2))
        pool.start()
        return pool
    }()

    /// Runs `body` on the blocking pool and returns its result; on a
    /// ``DedicatedThread`` (where blocking is allowed), right where it is.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        if DedicatedThread.isCurrent {
            try Task.checkCancellation()
            return try body()
        }
        return try await pool.runIfActive(body)
    }

    /// Runs `body` on the blocking pool even when the calling task is
    /// cancelled: for work that must finish once begun, such as saving the
    /// checkpoint of what was acknowledged while a pipeline is stopping.
    static func runEvenIfCancelled<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        // An unstructured task does not inherit the caller's cancellation.
        try await Task { try await pool.runIfActive(body) }.value
    }
}

/// An `errno` failure of a system call, with what was being done.
public struct SystemCallError: Error, CustomStringConvertible {
    /// The failing call, e.g. `write`.
    public var call: String
    /// What it was done to (a path, `stdout`).
    public var target: String
    /// The `errno` value.
    public var code: Int32

    public var description: String {
        "\(call) \(target): \(String(cString: strerror(code)))"
    }
}

/// A failure whose message says what happened and what to change (an
/// unreadable checkpoint, a locked state directory, files a `once` run
/// could not read).
struct DescribedFailure: Error, CustomStringConvertible {
    var description: String
}

enum FileIO {
    /// Fsyncs `directory`, so that a file created or renamed in it survives
    /// a power loss; a failure to open it is ignored (best effort, as the
    /// file's own fsync already succeeded).
    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// Writes all of `bytes` to `fd`, retrying on partial writes and EINTR.
    /// - Returns: the number of bytes written before an error, and the error.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> (written: Int, errno: Int32?) {
        var written = 0
        while written < bytes.count {
            let result = write(fd, bytes.baseAddress! + written, bytes.count - written)
            if result < 0 {
                if errno == EINTR { continue }
                return (written, errno)
            }
            written += result
        }
        return (written, nil)
    }
}

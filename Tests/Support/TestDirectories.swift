import Foundation
import Synchronization

/// Temporary directories made by tests, removed when the test process exits
/// (set `LOGPIPE_KEEP_TEST_DIRS=1` to keep them for a post-mortem).
public enum TestDirectories {
    private static let made = Mutex<[String]>([])
    private static let registered = Mutex<Bool>(false)

    /// Creates a fresh directory under the system's temporary directory,
    /// named `<prefix>-<uuid>`, and schedules its removal at exit.
    public static func make(prefix: String) throws -> String {
        let path = NSTemporaryDirectory() + prefix + "-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        track(path)
        return path
    }

    /// Schedules removal of `path` at process exit.
    public static func track(_ path: String) {
        made.withLock { $0.append(path) }
        let first = registered.withLock { done in
            defer { done = true }
            return !done
        }
        if first { atexit { TestDirectories.removeAll() } }
    }

    static func removeAll() {
        guard ProcessInfo.processInfo.environment["LOGPIPE_KEEP_TEST_DIRS"] == nil else { return }
        let paths = made.withLock { paths in
            defer { paths.removeAll() }
            return paths
        }
        for path in paths { try? FileManager.default.removeItem(atPath: path) }
    }
}

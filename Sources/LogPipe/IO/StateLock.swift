import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A stage whose state lives in `<data_dir>/<stage name>/` (checkpoints, an
/// exactly-once ledger). The runner locks that directory for the whole run,
/// so two processes never share it: two writers of one checkpoint or ledger
/// overwrite each other's progress, and lines are then lost or sent twice.
public protocol StatefulStage {
    /// Whether this instance keeps state in its directory under `data_dir`.
    var keepsState: Bool { get }
}

/// An exclusive `flock` on `<data_dir>/<stage>/lock`, held until ``release()``
/// or the end of the process. The lock file names its holder (process id, host
/// and command line) so that the error a second process gets says who has it.
/// The kernel drops the lock when the holder dies, even after `kill -9`, so a
/// stale lock file never blocks a restart.
final class StateLock: Sendable {
    /// Why the state directory cannot be used.
    typealias Failure = DescribedFailure

    let path: String
    private let descriptor: Int32

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    /// Creates the stage's state directory if needed, checks that it is
    /// writable, and locks it.
    ///
    /// - Throws: ``Failure`` naming the directory and what to change: not
    ///   creatable, not writable (read-only, full, permissions), or held by
    ///   another process (with that process's id and command line).
    static func acquire(dataDirectory: String, stage: String) throws -> StateLock {
        let directory = dataDirectory + "/" + stage
        let code = makeDirectories(directory)
        if code != 0 {
            throw Failure(
                description:
                    "cannot create the state directory \(directory) for stage '\(stage)': \(String(cString: strerror(code))); set data_dir to a directory this user can write"
            )
        }
        let path = directory + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let code = errno
            throw Failure(
                description:
                    "cannot open \(path) for stage '\(stage)': \(String(cString: strerror(code))); set data_dir to a directory this user can write"
            )
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            let holder = readHolder(fd)
            close(fd)
            if code == EWOULDBLOCK {
                throw Failure(
                    description:
                        "the state of stage '\(stage)' in \(directory) is in use by another process (\(holder.isEmpty ? "holder unknown" : holder)); two runs sharing a stage's state lose or repeat lines: give each run its own data_dir (for example data_dir: /var/lib/logpipe/central-p3), or stop the other process"
                )
            }
            throw Failure(description: "cannot lock \(path): \(String(cString: strerror(code)))")
        }
        let lock = StateLock(path: path, descriptor: fd)
        // Proves the directory takes writes before anything is read: a
        // read-only or full data_dir found only at the first checkpoint
        // means every line is read again on the next start.
        let holder = Array(Self.holderDescription().utf8)
        let written = holder.withUnsafeBytes { bytes -> Int32? in
            if ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 { return errno }
            let (_, failure) = FileIO.writeAll(fd, bytes)
            if let failure { return failure }
            return fsync(fd) == 0 ? nil : errno
        }
        if let written {
            lock.release()
            throw Failure(
                description:
                    "the state directory \(directory) for stage '\(stage)' is not writable: \(String(cString: strerror(written))); free space or set data_dir to a writable directory (checkpoints could not be saved)"
            )
        }
        return lock
    }

    /// Gives the lock up.
    func release() {
        close(descriptor)
    }

    private static func readHolder(_ fd: Int32) -> String {
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = pread(fd, &bytes, bytes.count, 0)
        guard count > 0 else { return "" }
        return String(decoding: bytes.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func holderDescription() -> String {
        let command = CommandLine.arguments.joined(separator: " ")
        return "pid \(getpid()) on \(Host.name): \(command)\n"
    }
}

import Foundation
import LogPipeBase
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// inotify as a wake-up hint and a rename log: the tailer sleeps until a
/// watched directory changes or the poll interval passes, and learns from the
/// events which names were created and what they were renamed to (a file
/// created and rotated away between two scans is found through them). Stat
/// polling stays the source of truth (inotify drops events when its queue
/// overflows; that is reported as ``Event/overflow``).
final class DirectoryWatcher {
    /// One change in a watched directory.
    struct Event: Equatable {
        enum Kind: Equatable {
            case created
            case deleted
            case movedFrom(cookie: UInt32)
            case movedTo(cookie: UInt32)
            /// Events were lost: rescan everything.
            case overflow
        }
        var kind: Kind
        /// The full path (empty for ``Kind/overflow``).
        var path: String
    }

    private let fd: Int32
    /// Readable once the pipeline stops (the read end of a pipe): ends a
    /// ``wait(timeout:stop:)``.
    /// Owned (and closed) by the tailer; -1 when there is none.
    var wakeDescriptor: Int32 = -1
    private var watched: Set<String> = []
    private var directories: [Int32: String] = [:]
    /// Events read while waiting, not yet taken.
    private var pending: [Event] = []
    /// Read into by every drain: the loop drains once per round, and a new
    /// 64 KiB array each time was an allocation per wake-up.
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    init() {
        #if os(Linux)
            fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        #else
            fd = -1
        #endif
    }

    func watch(_ directory: String) {
        guard fd >= 0, !watched.contains(directory) else { return }
        #if os(Linux)
            let mask = UInt32(
                IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CLOSE_WRITE | IN_ATTRIB)
            let descriptor = inotify_add_watch(fd, directory, mask)
            // Not watched yet (the directory does not exist): try again at
            // the next scan.
            guard descriptor >= 0 else { return }
            directories[descriptor] = directory
        #endif
        watched.insert(directory)
    }

    /// Takes the events that arrived so far, without waiting.
    func takeEvents() -> [Event] {
        readAvailable()
        defer { pending.removeAll() }
        return pending
    }

    /// Reads what the descriptor holds now and parses it into ``pending``.
    private func readAvailable() {
        guard fd >= 0 else { return }
        #if os(Linux)
            while true {
                let count = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                guard count > 0 else { return }
                parse(readBuffer.prefix(count))
                // A read that did not fill the buffer took everything there
                // was (events coming later end the next poll): no second
                // read that only says EAGAIN.
                if count < readBuffer.count - 4096 { return }
            }
        #endif
    }

    /// Parses `struct inotify_event` records (wd, mask, cookie, len, name).
    private func parse(_ bytes: ArraySlice<UInt8>) {
        #if os(Linux)
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset + 16 <= raw.count {
                    let descriptor = raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                    let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                    let cookie = raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
                    let length = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                    let nameBytes = raw[(offset + 16)..<min(offset + 16 + length, raw.count)].prefix { $0 != 0 }
                    offset += 16 + length
                    if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                        pending.append(Event(kind: .overflow, path: ""))
                        continue
                    }
                    guard let directory = directories[descriptor], !nameBytes.isEmpty else { continue }
                    let path = directory + "/" + String(decoding: nameBytes, as: UTF8.self)
                    if mask & UInt32(IN_CREATE) != 0 { pending.append(Event(kind: .created, path: path)) }
                    if mask & UInt32(IN_DELETE) != 0 { pending.append(Event(kind: .deleted, path: path)) }
                    if mask & UInt32(IN_MOVED_FROM) != 0 {
                        pending.append(Event(kind: .movedFrom(cookie: cookie), path: path))
                    }
                    if mask & UInt32(IN_MOVED_TO) != 0 {
                        pending.append(Event(kind: .movedTo(cookie: cookie), path: path))
                    }
                }
            }
        #endif
    }

    /// Waits for a change, `timeout`, or the stop (the wake descriptor, or
    /// `stop()` checked every 250 ms).
    /// The events that woke it are kept for ``takeEvents()``.
    func wait(timeout: Duration, stop: @escaping @Sendable () -> Bool) async {
        let fd = self.fd
        let milliseconds = Int32(min(timeout.inMilliseconds, 60_000))
        guard fd >= 0 else {
            try? await Task.sleep(for: timeout)
            return
        }
        let wake = wakeDescriptor
        _ = try? await BlockingIO.run {
            var remaining = milliseconds
            while remaining > 0, !stop() {
                // With a wake descriptor the stop ends the poll; without,
                // the stop is looked at every 250 ms.
                var descriptors = [
                    pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
                ]
                let slice = wake >= 0 ? remaining : min(remaining, 250)
                if poll(&descriptors, wake >= 0 ? 2 : 1, slice) > 0 { return }
                remaining -= slice
            }
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
    }
}

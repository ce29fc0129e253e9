import Dispatch
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Open append-mode files, bounded in number, closed least-recently-used
/// first. Every method blocks and must run on ``BlockingIO``.
final class FileWriterPool: Sendable {
    /// Where a multi-file write stopped: the next chunk and its first
    /// unwritten byte, so a retry neither loses nor repeats bytes.
    struct Progress: Sendable {
        var chunk = 0
        var byte = 0
    }

    struct WriteFailure: Error, CustomStringConvertible {
        var path: String
        var call: String
        var code: Int32
        var progress: Progress

        var description: String { "\(call) \(path): \(String(cString: strerror(code)))" }
    }

    private struct OpenFile {
        var fd: Int32
        var lastUse: UInt64
        var dirty: Bool
    }

    private struct State {
        var files: [String: OpenFile] = [:]
        var clock: UInt64 = 0
        /// Paths opened before: a reopened file (after a failed write, or
        /// closed to make room) may end in the middle of our own record,
        /// which must be continued, not ended.
        var opened: Set<String> = []
    }

    private let state = Mutex(State())
    private let maxOpenFiles: Int
    private let syncBeforeClose: Bool

    /// - Parameters:
    ///   - maxOpenFiles: files kept open at once; the least recently used is
    ///     closed to make room.
    ///   - syncBeforeClose: fsync a file with unsynced writes before closing it.
    init(maxOpenFiles: Int, syncBeforeClose: Bool) {
        self.maxOpenFiles = max(1, maxOpenFiles)
        self.syncBeforeClose = syncBeforeClose
    }

    deinit {
        state.withLock { state in
            for file in state.files.values { close(file.fd) }
        }
    }

    /// The number of files open now.
    var openCount: Int { state.withLock { $0.files.count } }

    /// Appends each chunk to its file, starting at `progress`; with `sync`,
    /// fsyncs every file written before returning.
    func write(_ chunks: [(path: String, bytes: ByteBuffer)], from progress: Progress, sync: Bool) throws(WriteFailure)
    {
        try state.withLock { (state) throws(WriteFailure) in
            var touched: [String] = []
            var position = progress
            while position.chunk < chunks.count {
                let (path, bytes) = chunks[position.chunk]
                let fd = try open(path, in: &state, progress: position)
                let remaining = bytes.readableBytes - position.byte
                let (written, failure) = bytes.withUnsafeReadableBytes { raw in
                    FileIO.writeAll(fd, UnsafeRawBufferPointer(rebasing: raw[position.byte...]))
                }
                state.files[path]?.dirty = true
                if let failure {
                    // Close it so that the retry reopens (the file may have
                    // been removed or its disk replaced).
                    closeFile(path, in: &state)
                    position.byte += written
                    throw WriteFailure(path: path, call: "write", code: failure, progress: position)
                }
                precondition(written == remaining)
                touched.append(path)
                position = Progress(chunk: position.chunk + 1, byte: 0)
            }
            if sync {
                let dirty = touched.compactMap { path in state.files[path].flatMap { $0.dirty ? (path, $0.fd) : nil } }
                // Several files (one per host) are synced side by side: each
                // fsync waits for the disk, and waits overlap.
                let errors = Self.syncConcurrently(dirty.map(\.1))
                for (index, (path, _)) in dirty.enumerated() {
                    if errors[index] != 0 {
                        closeFile(path, in: &state)
                        // Everything was written; only the sync must be redone.
                        throw WriteFailure(
                            path: path, call: "fsync", code: errors[index],
                            progress: Progress(chunk: chunks.count, byte: 0))
                    }
                    state.files[path]?.dirty = false
                }
            }
        }
    }

    /// Fsyncs `descriptors`, up to 8 at a time; returns each call's errno (0: synced).
    static func syncConcurrently(_ descriptors: [Int32]) -> [Int32] {
        guard descriptors.count > 1 else { return descriptors.map { fsync($0) == 0 ? 0 : errno } }
        let errors = Mutex([Int32](repeating: 0, count: descriptors.count))
        let lanes = min(8, descriptors.count)
        DispatchQueue.concurrentPerform(iterations: lanes) { lane in
            var index = lane
            while index < descriptors.count {
                let code = fsync(descriptors[index]) == 0 ? 0 : errno
                if code != 0 { errors.withLock { $0[index] = code } }
                index += lanes
            }
        }
        return errors.withLock { $0 }
    }

    /// Fsyncs every file with unsynced writes.
    func syncAll() throws(WriteFailure) {
        try state.withLock { (state) throws(WriteFailure) in
            for (path, file) in state.files where file.dirty {
                if fsync(file.fd) != 0 {
                    throw WriteFailure(path: path, call: "fsync", code: errno, progress: Progress())
                }
                state.files[path]?.dirty = false
            }
        }
    }

    /// Closes every file (after syncing, if configured).
    func closeAll() {
        state.withLock { state in
            for path in Array(state.files.keys) { closeFile(path, in: &state) }
        }
    }

    private func open(_ path: String, in state: inout State, progress: Progress) throws(WriteFailure) -> Int32 {
        state.clock += 1
        if let file = state.files[path] {
            state.files[path]?.lastUse = state.clock
            return file.fd
        }
        while state.files.count >= maxOpenFiles,
            let oldest = state.files.min(by: { $0.value.lastUse < $1.value.lastUse })
        {
            closeFile(oldest.key, in: &state)
        }
        var fd = Glibc.open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0, errno == ENOENT {
            let parent = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            if !parent.isEmpty {
                let code = makeDirectories(parent)
                if code != 0 {
                    throw WriteFailure(path: parent, call: "mkdir", code: code, progress: progress)
                }
            }
            fd = Glibc.open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        }
        if fd < 0 {
            throw WriteFailure(path: path, call: "open", code: errno, progress: progress)
        }
        // A process killed in the middle of a write can leave a torn last
        // line; end it, so that the next line starts on a line of its own.
        var info = stat()
        var last: UInt8 = 0
        if state.opened.insert(path).inserted, fstat(fd, &info) == 0, info.st_size > 0,
            pread(fd, &last, 1, info.st_size - 1) == 1, last != 0x0A
        {
            var newline: UInt8 = 0x0A
            if Glibc.write(fd, &newline, 1) != 1 {
                let code = errno
                close(fd)
                throw WriteFailure(path: path, call: "write", code: code, progress: progress)
            }
        }
        state.files[path] = OpenFile(fd: fd, lastUse: state.clock, dirty: false)
        return fd
    }

    private func closeFile(_ path: String, in state: inout State) {
        guard let file = state.files.removeValue(forKey: path) else { return }
        if syncBeforeClose, file.dirty { _ = fsync(file.fd) }
        close(file.fd)
    }
}

/// `mkdir -p`; returns 0 or the failing `errno`.
func makeDirectories(_ path: String) -> Int32 {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, 0o755) != 0, errno != EEXIST {
            return errno
        }
    }
    return 0
}

import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// For the file sink's `exactly_once` mode: per output file, its size after
/// the last acknowledged batch and the source offsets written per source
/// stream (as ranges), saved atomically after every batch.
///
/// After a crash, a file longer than its recorded size holds a batch that was
/// written but never acknowledged; it is cut back to the recorded size, and the
/// source delivers those records again. Records whose offset is recorded are
/// already in the file and are skipped. Together: every record exactly once,
/// for sources whose offsets identify records (a JetStream consumer: stream
/// sequences). Records delivered again after a crash are appended where they
/// arrive, so the file's order can differ from the stream's around a crash.
final class WrittenLedger {
    struct FileState: Codable {
        var size: Int64
        /// Per stream, sorted disjoint closed ranges of offsets written.
        var ranges: [String: [[Int64]]]
    }

    struct Stored: Codable {
        var version: Int
        var files: [String: FileState]
    }

    let path: String
    private(set) var files: [String: FileState] = [:]
    private var recovered: Set<String> = []

    init(directory: String, stage: String) {
        path = directory + "/" + stage + "/written.json"
    }

    func load() throws {
        guard FileManager.default.fileExists(atPath: path) else { return }
        do {
            files = try JSONDecoder().decode(Stored.self, from: Data(contentsOf: URL(fileURLWithPath: path))).files
        } catch {
            throw Checkpointer.Failure(
                description:
                    "the exactly-once ledger \(path) is unreadable (\(error)); move it away to start over (records may then be written twice)"
            )
        }
    }

    /// Whether the record is already in `file`.
    func contains(stream: String, offset: Int64, file: String) -> Bool {
        guard let ranges = files[file]?.ranges[stream] else { return false }
        // Binary search for the last range starting at or before `offset`.
        var low = 0
        var high = ranges.count - 1
        var candidate = -1
        while low <= high {
            let middle = (low + high) / 2
            if ranges[middle][0] <= offset {
                candidate = middle
                low = middle + 1
            } else {
                high = middle - 1
            }
        }
        return candidate >= 0 && offset <= ranges[candidate][1]
    }

    /// Before the first write to `file` in this run: cuts off what a crash
    /// left beyond the last acknowledged batch, or, for a file not in the
    /// ledger yet, records its current size (so that a crash during its first
    /// batch can be undone too). Returns the bytes removed and whether the
    /// ledger must be saved before writing.
    func recover(_ file: String) throws -> (cut: Int64, added: Bool) {
        guard recovered.insert(file).inserted else { return (0, false) }
        var info = stat()
        let exists = stat(file, &info) == 0
        let size = exists ? Int64(info.st_size) : 0
        guard let state = files[file] else {
            files[file] = FileState(size: size, ranges: [:])
            return (0, true)
        }
        if size > state.size {
            guard truncate(file, off_t(state.size)) == 0 else {
                throw SystemCallError(call: "truncate", target: file, code: errno)
            }
            return (size - state.size, false)
        }
        return (0, false)
    }

    /// Records that `file` now has `size` bytes and holds `offsets` too.
    func update(_ file: String, size: Int64, offsets: [String: [Int64]]) {
        var state = files[file] ?? FileState(size: 0, ranges: [:])
        state.size = size
        for (stream, added) in offsets {
            var points = (state.ranges[stream] ?? []).map { ($0[0], $0[1]) }
            points += added.map { ($0, $0) }
            points.sort { $0.0 < $1.0 }
            var merged: [[Int64]] = []
            for (low, high) in points {
                if let last = merged.last, low <= last[1] + 1 {
                    merged[merged.count - 1][1] = max(last[1], high)
                } else {
                    merged.append([low, high])
                }
            }
            state.ranges[stream] = merged
        }
        files[file] = state
    }

    /// Saves atomically (temporary file, fsync, rename, fsync directory).
    func save() throws {
        let data = try JSONEncoder().encode(Stored(version: 1, files: files))
        let directory = (path as NSString).deletingLastPathComponent
        if makeDirectories(directory) != 0 {
            throw SystemCallError(call: "mkdir", target: directory, code: errno)
        }
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemCallError(call: "open", target: temporary, code: errno) }
        let (_, writeError) = data.withUnsafeBytes { FileIO.writeAll(fd, $0) }
        let syncFailed = fsync(fd) != 0
        close(fd)
        if let writeError { throw SystemCallError(call: "write", target: temporary, code: writeError) }
        if syncFailed { throw SystemCallError(call: "fsync", target: temporary, code: errno) }
        guard rename(temporary, path) == 0 else { throw SystemCallError(call: "rename", target: path, code: errno) }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }
}

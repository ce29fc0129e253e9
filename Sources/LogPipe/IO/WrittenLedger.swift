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
///
/// Offsets at or below a stream's floor (``Record/offsetFloor``: for a
/// JetStream consumer, its acknowledgement floor) are never delivered again;
/// the ledger forgets their ranges and counts them as written. Without
/// that, one consumer's share of a stream is a range per message (the other
/// partitions' sequences fall between), and the ledger, saved after every
/// batch, would grow with every line ever written.
final class WrittenLedger {
    struct FileState: Codable {
        var size: Int64
        /// Per stream, sorted disjoint closed ranges of offsets written.
        var ranges: [String: [[Int64]]]
    }

    struct Stored: Codable {
        var version: Int
        var files: [String: FileState]
        /// Per stream: offsets at or below are done for good.
        var floors: [String: Int64]?
    }

    let path: String
    private(set) var files: [String: FileState] = [:]
    private(set) var floors: [String: Int64] = [:]
    private var recovered: Set<String> = []

    init(directory: String, stage: String) {
        path = directory + "/" + stage + "/written.json"
    }

    func load() throws {
        guard FileManager.default.fileExists(atPath: path) else { return }
        do {
            let stored = try JSONDecoder().decode(Stored.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            files = stored.files
            floors = stored.floors ?? [:]
        } catch {
            throw Checkpointer.Failure(
                description:
                    "the exactly-once ledger \(path) is unreadable (\(error)); move it away to start over (records may then be written twice)"
            )
        }
    }

    /// Whether the record is already in `file`.
    func contains(stream: String, offset: Int64, file: String) -> Bool {
        if let floor = floors[stream], offset <= floor { return true }
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

    /// The ledger as JSON (the shape of ``Stored``), written by hand: it is
    /// saved after every batch, and JSONEncoder spent ~1 µs per range.
    func encoded() -> String {
        var text = #"{"version":1"#
        if !floors.isEmpty {
            text += #","floors":{"#
            for (index, (stream, floor)) in floors.sorted(by: { $0.key < $1.key }).enumerated() {
                text += (index > 0 ? "," : "") + Self.quoted(stream) + ":" + String(floor)
            }
            text += "}"
        }
        text += #","files":{"#
        for (fileIndex, (file, state)) in files.sorted(by: { $0.key < $1.key }).enumerated() {
            text +=
                (fileIndex > 0 ? "," : "") + Self.quoted(file) + #":{"size":"# + String(state.size) + #","ranges":{"#
            for (streamIndex, (stream, ranges)) in state.ranges.sorted(by: { $0.key < $1.key }).enumerated() {
                text += (streamIndex > 0 ? "," : "") + Self.quoted(stream) + ":["
                for (index, range) in ranges.enumerated() {
                    text += (index > 0 ? ",[" : "[") + String(range[0]) + "," + String(range[1]) + "]"
                }
                text += "]"
            }
            text += "}}"
        }
        return text + "}}"
    }

    /// A JSON string literal.
    static func quoted(_ value: String) -> String {
        var text = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: text.unicodeScalars.append(scalar)
            }
        }
        return text + "\""
    }

    /// Raises the floors of streams (never lowers one) and forgets the
    /// ranges at or below them.
    func raise(floors raised: [String: Int64]) {
        for (stream, floor) in raised where floor > floors[stream, default: Int64.min] {
            floors[stream] = floor
            for file in Array(files.keys) {
                guard let ranges = files[file]?.ranges[stream] else { continue }
                files[file]?.ranges[stream] = ranges.compactMap { range in
                    range[1] <= floor ? nil : [max(range[0], floor + 1), range[1]]
                }
            }
        }
    }

    /// Saves atomically (temporary file, fsync, rename, fsync directory).
    func save() throws {
        let data = Array(encoded().utf8)
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

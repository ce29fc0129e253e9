import Foundation
import LogPipeBase

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// For the file sink's `exactly_once` mode: per output file, its size after
/// the last acknowledged batch and the source offsets written per source
/// stream (as ranges), saved atomically after every batch.
///
/// Before each write the sink saves a ``WriteIntent`` (where it appends and a
/// hash of what). After a crash, a file longer than its recorded size holds
/// a batch that was written but never acknowledged if the intent proves it;
/// it is cut back to the recorded size, and the source delivers those records
/// again. Bytes the intent does not prove to be the sink's own (a line
/// appended by hand, a stale ledger) are never cut: the sink refuses to
/// start and says how to go on. Records whose offset is recorded are
/// already in the file and are skipped. Together: every record exactly once,
/// for sources whose offsets identify records (a JetStream consumer: stream
/// sequences). Records delivered again are appended where they arrive; a
/// source that delivers in order across crashes (the `jetstream` source with
/// `in_order`) keeps each file in the stream's order.
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
    let intentPath: String
    private(set) var files: [String: FileState] = [:]
    private(set) var floors: [String: Int64] = [:]
    /// The last saved intent, by file.
    private(set) var intent: [String: WriteIntent.Append] = [:]
    private var recovered: Set<String> = []
    private var intentDescriptor: Int32 = -1

    init(directory: String, stage: String) {
        path = directory + "/" + stage + "/written.json"
        intentPath = directory + "/" + stage + "/intent"
    }

    deinit {
        if intentDescriptor >= 0 { close(intentDescriptor) }
    }

    func load() throws {
        if let bytes = FileManager.default.contents(atPath: intentPath) {
            // A torn intent decodes to nothing: its files are refused, not cut.
            for append in WriteIntent(decoding: Array(bytes))?.appends ?? [] { intent[append.path] = append }
        }
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
        written(stream: stream, file: file).contains(offset)
    }

    /// What is written of `stream` to `file`, to ask about many offsets
    /// without looking the file and stream up each time.
    func written(stream: String, file: String) -> Written {
        Written(floor: floors[stream], ranges: files[file]?.ranges[stream] ?? [])
    }

    /// The offsets of one stream written to one file.
    struct Written {
        var floor: Int64?
        /// Sorted disjoint closed ranges.
        var ranges: [[Int64]]

        func contains(_ offset: Int64) -> Bool {
            if let floor, offset <= floor { return true }
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
    }

    /// What ``recover(_:)`` found and did.
    struct Recovery: Equatable {
        /// Bytes of this sink's own unacknowledged append that were cut.
        var cut: Int64 = 0
        /// The ledger changed and must be saved before writing.
        var needsSave = false
        /// The file was shorter than recorded (rotated or truncated by
        /// someone else); appending continues at its end.
        var shrunk = false
    }

    /// A file has bytes after the last acknowledged write that the last
    /// intent does not prove to be this sink's own.
    struct ForeignBytes: Error, CustomStringConvertible {
        var path: String
        var recorded: Int64
        var size: Int64

        var description: String {
            "\(path) has \(size - recorded) byte(s) after byte \(recorded), where this sink's last acknowledged write ended, that this sink cannot prove it wrote (appended by something else, or a ledger from another run); nothing was cut. Move \(path) aside to start a new file (everything up to byte \(recorded) stays in it), or, if you know these bytes are LogPipe's own unfinished write, cut them with `truncate -s \(recorded) \(path)`; then start again"
        }
    }

    /// Checks every file the ledger or the last intent names, before the
    /// first write of this run: see ``recover(_:)``.
    func recoverAll() throws -> [String: Recovery] {
        var results: [String: Recovery] = [:]
        for file in Set(files.keys).union(intent.keys).sorted() {
            results[file] = try recover(file)
        }
        return results
    }

    /// Before the first write to `file` in this run: cuts off this sink's
    /// own append that a crash left unacknowledged (proven by the intent
    /// saved before it), or, for a file not in the ledger yet, records its
    /// current size (so that a crash during its first batch can be undone
    /// too), ending a torn last line first.
    ///
    /// - Throws: ``ForeignBytes`` when the file grew past the recorded size
    ///   by bytes the intent does not prove to be ours: those are never cut.
    func recover(_ file: String) throws -> Recovery {
        guard recovered.insert(file).inserted else { return Recovery() }
        let fd = open(file, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            guard errno == ENOENT || errno == ENOTDIR else {
                throw SystemCallError(call: "open", target: file, code: errno)
            }
            // Gone (moved away by its owner): a new file starts at 0.
            if files[file]?.size == 0 { return Recovery() }
            let known = files[file] != nil
            files[file, default: FileState(size: 0, ranges: [:])].size = 0
            return Recovery(needsSave: true, shrunk: known)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemCallError(call: "fstat", target: file, code: errno) }
        let size = Int64(info.st_size)
        guard let recorded = files[file]?.size else {
            var start = size
            var last: UInt8 = 0
            if size > 0, pread(fd, &last, 1, off_t(size - 1)) == 1, last != 0x0A {
                var newline: UInt8 = 0x0A
                guard pwrite(fd, &newline, 1, off_t(size)) == 1 else {
                    throw SystemCallError(call: "write", target: file, code: errno)
                }
                start += 1
            }
            files[file] = FileState(size: start, ranges: [:])
            return Recovery(needsSave: true)
        }
        if size == recorded { return Recovery() }
        if size < recorded {
            files[file]?.size = size
            return Recovery(needsSave: true, shrunk: true)
        }
        guard let append = intent[file], append.start == recorded, WriteIntent.isOwnPrefix(append, fd: fd, size: size)
        else {
            throw ForeignBytes(path: file, recorded: recorded, size: size)
        }
        guard ftruncate(fd, off_t(recorded)) == 0 else {
            throw SystemCallError(call: "truncate", target: file, code: errno)
        }
        guard fsync(fd) == 0 else { throw SystemCallError(call: "fsync", target: file, code: errno) }
        return Recovery(cut: size - recorded)
    }

    /// Saves and syncs what is about to be appended, before it is written.
    func saveIntent(_ appends: [WriteIntent.Append]) throws {
        let bytes = WriteIntent(appends: appends).encoded()
        if intentDescriptor < 0 {
            let directory = (intentPath as NSString).deletingLastPathComponent
            if makeDirectories(directory) != 0 {
                throw SystemCallError(call: "mkdir", target: directory, code: errno)
            }
            intentDescriptor = open(intentPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard intentDescriptor >= 0 else { throw SystemCallError(call: "open", target: intentPath, code: errno) }
            FileIO.syncDirectory(directory)
        }
        let written = bytes.withUnsafeBytes { pwrite(intentDescriptor, $0.baseAddress!, $0.count, 0) }
        guard written == bytes.count else { throw SystemCallError(call: "write", target: intentPath, code: errno) }
        guard ftruncate(intentDescriptor, off_t(bytes.count)) == 0, fdatasync(intentDescriptor) == 0 else {
            throw SystemCallError(call: "fsync", target: intentPath, code: errno)
        }
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

    /// The ledger as JSON (the shape of ``Stored``), written by hand into
    /// bytes: it is saved after every batch with a range per record of the
    /// batch (a partition's sequences are not contiguous), and JSONEncoder
    /// spent ~1 µs per range, string concatenation ~0.3.
    func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(
            64 + files.values.reduce(0) { $0 + 48 + $1.ranges.values.reduce(0) { $0 + $1.count * 24 } })
        func append(_ text: String) { bytes.append(contentsOf: text.utf8) }
        func append(_ number: Int64) {
            if number < 0 {
                // Only Int64.min has no positive counterpart; the text handles it.
                append(String(number))
                return
            }
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of room, backwards
            var count = 0
            var value = UInt64(number)
            withUnsafeMutableBytes(of: &digits) { room in
                repeat {
                    count += 1
                    room[24 - count] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                } while value > 0
                bytes.append(contentsOf: room[(24 - count)...])
            }
        }
        append(#"{"version":1"#)
        if !floors.isEmpty {
            append(#","floors":{"#)
            for (index, (stream, floor)) in floors.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                append(JSONText.quoted(stream))
                bytes.append(UInt8(ascii: ":"))
                append(floor)
            }
            bytes.append(UInt8(ascii: "}"))
        }
        append(#","files":{"#)
        for (fileIndex, (file, state)) in files.sorted(by: { $0.key < $1.key }).enumerated() {
            if fileIndex > 0 { bytes.append(UInt8(ascii: ",")) }
            append(JSONText.quoted(file))
            append(#":{"size":"#)
            append(state.size)
            append(#","ranges":{"#)
            for (streamIndex, (stream, ranges)) in state.ranges.sorted(by: { $0.key < $1.key }).enumerated() {
                if streamIndex > 0 { bytes.append(UInt8(ascii: ",")) }
                append(JSONText.quoted(stream))
                append(":[")
                for (index, range) in ranges.enumerated() {
                    append(index > 0 ? ",[" : "[")
                    append(range[0])
                    bytes.append(UInt8(ascii: ","))
                    append(range[1])
                    bytes.append(UInt8(ascii: "]"))
                }
                bytes.append(UInt8(ascii: "]"))
            }
            append("}}")
        }
        append("}}")
        return bytes
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
        let data = encoded()
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
        FileIO.syncDirectory(directory)
    }
}

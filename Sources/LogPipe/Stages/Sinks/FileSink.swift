import LogPipeBase
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// When the file sink calls `fsync`.
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Never; the kernel writes back when it likes. Records are acknowledged
    /// after `write` returned.
    case never
    /// After every batch, before acknowledging it.
    case batch
    /// Every `fsync_interval`; records are acknowledged after the sync that
    /// covers them.
    case interval
}

/// Appends each record as a line to a file chosen by a path template, such as
/// `/var/log/central/{host}.log`.
///
/// Directories are created as needed. At most `max_open_files` files stay open;
/// the least recently used is closed to make room. Records are acknowledged
/// only after their bytes were written (and synced, per ``FsyncPolicy``). A
/// failing write (read-only directory, full disk) is retried with backoff
/// until it succeeds or the pipeline stops: nothing is dropped, and the
/// pipeline is held back meanwhile.
public struct FileSink: Sink {
    /// How the sink writes.
    public struct Options: StageSettings {
        /// Where each record goes; placeholder values have `/` replaced by
        /// `_`, and a file name over 255 bytes is shortened (see `FileSink.fitted(_:)`).
        public var path: Template
        /// When to fsync.
        public var fsync: FsyncPolicy = .never
        /// The period of ``FsyncPolicy/interval``.
        public var fsyncInterval: Duration = .seconds(1)
        /// Files kept open at once.
        public var maxOpenFiles = 256
        /// First wait after a failed write; it doubles up to ``maxRetryBackoff``.
        public var retryBackoff: Duration = .milliseconds(100)
        /// Longest wait between retries.
        public var maxRetryBackoff: Duration = .seconds(5)
        /// Skip records already written and cut off unacknowledged tails after
        /// a crash (implies fsync after every batch); see `WrittenLedger`.
        public var exactlyOnce = false

        /// Options writing to `path`.
        public init(path: Template) {
            self.path = path
        }

        /// Options without a path yet (`path` is required).
        public init() {
            self.init(path: Template.empty)
        }
    }

    let options: Options

    /// Creates a file sink.
    public init(options: Options) {
        self.options = options
    }

    /// Creates a file sink writing to the path template `path`.
    public init(path: String) throws {
        self.options = Options(path: try Template(path))
    }

    static let definition = StageDefinition.sink(
        "file",
        summary: "Appends each record as a line to a file chosen by a path template.",
        options: [
            StageOption<Options>.template(
                "path", \.path, required: true,
                "Path template, e.g. `/var/log/central/{host}.log`; `/` inside values becomes `_`."),
            .choice(
                "fsync", \.fsync,
                "When to fsync: `never`, after every `batch`, or every `fsync_interval`; records are acknowledged after it."
            ),
            .duration("fsync_interval", \.fsyncInterval, "Period of `fsync: interval`."),
            .integer(
                "max_open_files", \.maxOpenFiles, in: 1...65536,
                "Files kept open at once; the least recently used is closed first."),
            .duration(
                "retry_backoff", \.retryBackoff, "First wait after a failed write; doubles on each failure."),
            .duration("max_retry_backoff", \.maxRetryBackoff, "Longest wait between write retries."),
            .boolean(
                "exactly_once", \.exactlyOnce,
                "Write each record once even when a source delivers it again (a JetStream consumer after a crash): skips records already written and cuts unacknowledged tails; fsyncs every batch (batches queued meanwhile are committed together). Keeps a ledger in data_dir."
            ),
        ]
    ) { settings, options in
        var settings = settings
        if settings.path.text.isEmpty { throw options.error("path", "must not be empty") }
        if settings.exactlyOnce { settings.fsync = .batch }
        if settings.fsync == .interval, settings.fsyncInterval <= .zero {
            throw options.error("fsync_interval", "must be longer than 0 with fsync: interval")
        }
        return FileSink(options: settings)
    }

    /// Keeps a rendered value inside one path component.
    static func escapePathValue(_ value: String) -> String {
        if value.isEmpty || value == "." || value == ".." { return "_" }
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == 0 }) else { return value }
        return String(
            decoding: value.utf8.map { $0 == UInt8(ascii: "/") || $0 == 0 ? UInt8(ascii: "_") : $0 }, as: UTF8.self)
    }

    /// The longest file name (one path component) file systems take.
    static let maxNameBytes = 255

    /// `path` with every component longer than ``maxNameBytes`` shortened to
    /// its first bytes (whole characters), `~` and 16 hex digits of a hash of
    /// the whole component: a record whose rendered name is too long (a host
    /// name made of a line's garbage) still gets a file of its own, the same
    /// one every time, instead of an error no retry can fix.
    static func fitted(_ path: String) -> String {
        guard path.utf8.count > maxNameBytes else { return path }
        let components = path.split(separator: "/", omittingEmptySubsequences: false)
        guard components.contains(where: { $0.utf8.count > maxNameBytes }) else { return path }
        return components.map { component -> String in
            guard component.utf8.count > maxNameBytes else { return String(component) }
            // The file source's content hash, 16 hex digits.
            let hash = Array(component.utf8).withUnsafeBytes { FileFingerprint.of($0, length: $0.count)! }
            let suffix = "~" + hash.description
            var end = component.startIndex
            var size = 0
            while end < component.endIndex {
                let length = component[end].utf8.count
                if size + length > maxNameBytes - suffix.utf8.count { break }
                size += length
                end = component.index(after: end)
            }
            return String(component[..<end]) + suffix
        }.joined(separator: "/")
    }

    public func run(input: BatchInput, context: StageContext) async throws {
        // Writes and fsyncs on a thread of its own: no hand-off to the
        // blocking pool and back per batch (at a few lines per batch, the
        // hand-offs cost more than the writes).
        try await DedicatedThread.run { try await write(input: input, context: context) }
    }

    func write(input: BatchInput, context: StageContext) async throws {
        if options.exactlyOnce {
            try await runExactlyOnce(input: input, context: context)
            return
        }
        let pool = FileWriterPool(maxOpenFiles: options.maxOpenFiles, syncBeforeClose: options.fsync != .never)
        defer { pool.closeAll() }
        let unsynced = LockedBox<[Batch]>([])
        let options = self.options

        try await withThrowingTaskGroup(of: Void.self) { group in
            if options.fsync == .interval {
                group.addTask {
                    while !Task.isCancelled {
                        try await Task.sleep(for: options.fsyncInterval)
                        try await Self.syncAndAcknowledge(
                            pool: pool, unsynced: unsynced, context: context, options: options)
                    }
                }
            }
            for await batch in input {
                let chunks = encode(batch)
                try await Self.writeRetrying(
                    chunks, pool: pool, sync: options.fsync == .batch, context: context, options: options)
                if options.fsync == .interval {
                    unsynced.withLock { $0.append(batch) }
                } else {
                    batch.acknowledge()
                    context.metrics.recordsDelivered.add(batch.count, ordering: .relaxed)
                }
            }
            try await Self.syncAndAcknowledge(pool: pool, unsynced: unsynced, context: context, options: options)
            group.cancelAll()
        }
    }

    /// Records written and synced together at most in exactly-once mode.
    static let groupCommitRecords = 16_384

    /// The exactly-once loop: skip what the ledger says is written, cut
    /// unacknowledged tails, write and fsync, record the new sizes and
    /// offsets, then acknowledge.
    func runExactlyOnce(input: BatchInput, context: StageContext) async throws {
        let pool = FileWriterPool(maxOpenFiles: options.maxOpenFiles, syncBeforeClose: true)
        defer { pool.closeAll() }
        let ledger = WrittenLedger(directory: context.dataDirectory, stage: context.name)
        let ledgerBox = SendableBox(ledger)
        let recovered = try await BlockingIO.run { () throws -> [String: WrittenLedger.Recovery] in
            try ledgerBox.value.load()
            let results = try ledgerBox.value.recoverAll()
            if results.values.contains(where: \.needsSave) { try ledgerBox.value.save() }
            return results
        }
        Self.report(recovered, context: context)
        for await first in input {
            // Group commit: batches that queued up while the last one was
            // synced are written and synced together (one fsync per file
            // and one ledger save for all of them).
            var batch = first
            var grouped = false
            while batch.count < Self.groupCommitRecords, let more = input.nextIfReady() {
                batch.records.append(contentsOf: more.records)
                grouped = true
            }
            let selected = selectUnwritten(batch.records, ledger: ledger, grouped: grouped)
            if selected.skipped > 0 { context.metrics.count("already_written", by: selected.skipped) }
            let chunks = encode(selected.fresh, paths: selected.paths)
            let paths = chunks.map(\.path)
            let recovery = try await BlockingIO.run { () throws -> [String: WrittenLedger.Recovery] in
                var results: [String: WrittenLedger.Recovery] = [:]
                for path in paths { results[path] = try ledgerBox.value.recover(path) }
                if results.values.contains(where: \.needsSave) { try ledgerBox.value.save() }
                // The intent goes to disk before the bytes: after a crash it
                // is the proof that a longer file's tail is ours to cut.
                var appends: [WriteIntent.Append] = []
                for (path, bytes) in chunks {
                    var info = stat()
                    let start = stat(path, &info) == 0 ? Int64(info.st_size) : 0
                    appends.append(
                        bytes.withUnsafeReadableBytes { WriteIntent.append(path: path, start: start, bytes: $0) })
                }
                if !appends.isEmpty { try ledgerBox.value.saveIntent(appends) }
                return results
            }
            Self.report(recovery, context: context)
            try await Self.writeRetrying(chunks, pool: pool, sync: true, context: context, options: options)
            let written = selected.offsets
            let raised = selected.floors
            try await BlockingIO.run {
                ledgerBox.value.raise(floors: raised)
                for path in paths {
                    var info = stat()
                    if stat(path, &info) == 0 {
                        ledgerBox.value.update(path, size: Int64(info.st_size), offsets: written[path] ?? [:])
                    }
                }
                try ledgerBox.value.save()
            }
            batch.acknowledge()
            context.metrics.recordsDelivered.add(batch.count, ordering: .relaxed)
        }
    }

    /// Logs and counts what recovering files found.
    static func report(_ results: [String: WrittenLedger.Recovery], context: StageContext) {
        for (path, result) in results.sorted(by: { $0.key < $1.key }) {
            if result.cut > 0 {
                context.metrics.count("unacknowledged_bytes_cut", by: Int(result.cut))
                context.logger.notice(
                    "cut \(result.cut) unacknowledged byte(s) this sink wrote to \(path) before a crash; those records are delivered again"
                )
            }
            if result.shrunk {
                context.metrics.count("files_shrunk")
                context.logger.notice(
                    "\(path) is shorter than this sink left it (rotated or truncated by someone else); appending continues at its end"
                )
            }
        }
    }

    /// The records not written yet (per the ledger and, for a group of
    /// batches, not earlier in the same group) with the file each goes to,
    /// how many were skipped, the offsets to record per file and stream, and
    /// the highest floor per stream. Records are read in place (a copy costs
    /// a retain and a release per field); a path is rendered once per host
    /// (``PathMemo``), and a run of records of one stream to one file looks
    /// nothing up in a dictionary: this runs for every record a central
    /// consumer writes.
    func selectUnwritten(_ records: [Record], ledger: WrittenLedger, grouped: Bool) -> (
        fresh: [Record], paths: [String], skipped: Int, offsets: [String: [String: [Int64]]], floors: [String: Int64]
    ) {
        // Records are copied only once one is skipped (after a crash or a
        // redelivery): until then the fresh records are `records` itself.
        var fresh: [Record]?
        var paths: [String] = []
        paths.reserveCapacity(records.count)
        var skipped = 0
        var floors: [String: Int64] = [:]
        var memo = PathMemo(template: options.path)
        // Per (file, stream) met in this batch: what the ledger knows, the
        // offsets selected, and (for a group of batches) those seen, since
        // a record delivered again while its first delivery waits in the
        // same group is not in the ledger yet.
        struct Slot {
            var path: String
            var stream: String
            var written: WrittenLedger.Written
            var offsets: [Int64] = []
        }
        var slots: [Slot] = []
        var seen: [String: Set<Int64>] = [:]
        var current = -1
        records.withUnsafeBufferPointer { records in
            for index in records.indices {
                let path = memo.path(for: records[index])
                guard let stream = records[index].streamID, let offset = records[index].offset else {
                    fresh?.append(records[index])
                    paths.append(path)
                    continue
                }
                if let floor = records[index].offsetFloor, floor > floors[stream, default: Int64.min] {
                    floors[stream] = floor
                }
                if current < 0 || slots[current].path != path || slots[current].stream != stream {
                    current =
                        slots.firstIndex { $0.path == path && $0.stream == stream }
                        ?? {
                            slots.append(
                                Slot(path: path, stream: stream, written: ledger.written(stream: stream, file: path)))
                            return slots.count - 1
                        }()
                }
                if slots[current].written.contains(offset)
                    || (grouped && !seen[stream, default: []].insert(offset).inserted)
                {
                    if fresh == nil {
                        fresh = Array(records[..<index])
                        fresh!.reserveCapacity(records.count)
                    }
                    skipped += 1
                    continue
                }
                slots[current].offsets.append(offset)
                fresh?.append(records[index])
                paths.append(path)
            }
        }
        var offsets: [String: [String: [Int64]]] = [:]
        for slot in slots where !slot.offsets.isEmpty {
            offsets[slot.path, default: [:]][slot.stream, default: []].append(contentsOf: slot.offsets)
        }
        return (fresh ?? records, paths, skipped, offsets, floors)
    }

    /// Renders the sink's path for records, once per host when the host is
    /// all the path depends on (the central consumer's `{host}.log`): a
    /// batch holds a few hosts' records, interleaved.
    struct PathMemo {
        let template: Template
        let byHost: Bool
        var paths: [String: String] = [:]
        var lastHost = ""
        var lastPath: String?

        /// Hosts remembered at most (a garbage host per record must not grow it without end).
        static let capacity = 1024

        init(template: Template) {
            self.template = template
            byHost = template.placeholders == ["host"]
        }

        mutating func path(for record: Record) -> String {
            guard byHost else { return FileSink.fitted(template.render(record, escape: FileSink.escapePathValue)) }
            if let lastPath, record.host == lastHost { return lastPath }
            let path =
                paths[record.host]
                ?? {
                    let rendered = FileSink.fitted(template.render(record, escape: FileSink.escapePathValue))
                    if paths.count >= Self.capacity { paths.removeAll(keepingCapacity: true) }
                    paths[record.host] = rendered
                    return rendered
                }()
            lastHost = record.host
            lastPath = path
            return path
        }
    }

    /// One buffer per destination file, lines in record order, each ending in `\n`.
    func encode(_ batch: Batch) -> [(path: String, bytes: ByteBuffer)] {
        let paths =
            options.path.isConstant
            ? []
            : batch.records.withUnsafeBufferPointer { records -> [String] in
                var memo = PathMemo(template: options.path)
                return records.indices.map { memo.path(for: records[$0]) }
            }
        return encode(batch.records, paths: paths)
    }

    /// Like ``encode(_:)`` with each record's path already rendered (not
    /// looked at when the path is constant).
    func encode(_ records: [Record], paths: [String]) -> [(path: String, bytes: ByteBuffer)] {
        guard let first = records.first else { return [] }
        if options.path.isConstant {
            var buffer = ByteBuffer()
            buffer.writeLines(records)
            return [(Self.fitted(options.path.render(first)), buffer)]
        }
        var order: [String] = []
        var buffers: [String: ByteBuffer] = [:]
        records.withUnsafeBufferPointer { records in
            for index in records.indices {
                let path = paths[index]
                if buffers[path] == nil {
                    order.append(path)
                    buffers[path] = ByteBufferAllocator().buffer(capacity: 4096)
                }
                buffers[path]!.writeImmutableBuffer(records[index].bytes)
                buffers[path]!.writeInteger(UInt8(ascii: "\n"))
            }
        }
        return order.map { ($0, buffers[$0]!) }
    }

    static func writeRetrying(
        _ chunks: [(path: String, bytes: ByteBuffer)],
        pool: FileWriterPool,
        sync: Bool,
        context: StageContext,
        options: Options
    ) async throws {
        var progress = FileWriterPool.Progress()
        var backoff = Backoff(initial: options.retryBackoff, maximum: options.maxRetryBackoff)
        var failures = 0
        while true {
            let start = progress
            let result: FileWriterPool.WriteFailure? = try await BlockingIO.run { () -> FileWriterPool.WriteFailure? in
                do throws(FileWriterPool.WriteFailure) {
                    try pool.write(chunks, from: start, sync: sync)
                    return nil
                } catch {
                    return error
                }
            }
            guard let failure = result else {
                if failures > 0 { context.logger.notice("writing works again after \(failures) failed attempt(s)") }
                return
            }
            failures += 1
            progress = failure.progress
            context.metrics.count("write_retries")
            if failures == 1 || failures % 20 == 0 {
                context.logger.error(
                    "cannot write: \(failure); retrying every \(Units.format(options.maxRetryBackoff)) at most, the pipeline waits (fix the permission or free space)"
                )
            }
            try await backoff.sleep()
        }
    }

    static func syncAndAcknowledge(
        pool: FileWriterPool, unsynced: LockedBox<[Batch]>, context: StageContext, options: Options
    )
        async throws
    {
        var backoff = Backoff(initial: options.retryBackoff, maximum: options.maxRetryBackoff)
        while true {
            let pending = unsynced.withLock { batches in
                let taken = batches
                batches.removeAll()
                return taken
            }
            guard !pending.isEmpty else { return }
            let failure: FileWriterPool.WriteFailure? = try await BlockingIO.run { () -> FileWriterPool.WriteFailure? in
                do throws(FileWriterPool.WriteFailure) {
                    try pool.syncAll()
                    return nil
                } catch {
                    return error
                }
            }
            if let failure {
                unsynced.withLock { $0.insert(contentsOf: pending, at: 0) }
                context.metrics.count("write_retries")
                context.logger.error("cannot sync: \(failure); retrying")
                try await backoff.sleep()
                continue
            }
            for batch in pending {
                batch.acknowledge()
                context.metrics.recordsDelivered.add(batch.count, ordering: .relaxed)
            }
            return
        }
    }
}

extension FileSink: StatefulStage {
    /// The exactly-once ledger lives in the stage's state directory.
    public var keepsState: Bool { options.exactlyOnce }
}

extension FileSink: TemplateConsumer {
    public var templates: [(option: String, template: Template)] { [("path", options.path)] }
}

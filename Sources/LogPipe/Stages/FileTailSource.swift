/// Tails files matched by globs, following rotation and truncation, and
/// remembers how far it got in checkpoints that only ever cover lines every
/// sink acknowledged.
///
/// Files are told apart by a fingerprint (a checksum of their first line), so
/// a renamed file is followed, a copytruncate copy resumes where reading
/// stopped, and a new file at an old path is read from its start. inotify wakes
/// the source when a directory changes; a periodic `stat` of every file is the
/// source of truth. Checkpoints (fingerprint, path, offset) go to
/// `<data_dir>/<stage name>/checkpoints.json`, written atomically every
/// `checkpoint_interval` and at shutdown; after a crash, reading resumes at the
/// last checkpoint, so at most the records unacknowledged (or acknowledged
/// within the last interval) are read again.
public struct FileTailSource: Source, FieldProducer, StatefulStage {
    let options: FileTailer.Options

    static let definition = StageDefinition.source(
        "file",
        summary: "Tails files matched by globs; follows rotation and truncation; checkpoints only acknowledged lines.",
        options: LineOptions.specs + [
            OptionSpec(
                "include", .stringList, required: true,
                "Globs of files to read: `*`, `?`, `[...]` within a name, `**` for any directories."),
            OptionSpec("exclude", .stringList, "Globs of files to skip."),
            OptionSpec(
                "read_from", .choice(ReadFrom.allCases.map(\.rawValue)), default: "beginning",
                "Where a file without a checkpoint starts; `end` applies only to files present at startup."),
            OptionSpec(
                "once", .boolean, default: "false",
                "Read every matched file to its end, then finish (back-fills, benchmarks)."),
            OptionSpec(
                "fingerprint", .choice(FingerprintStrategy.allCases.map(\.rawValue)), default: "checksum",
                "How files are told apart: `checksum` of the first line (follows copies) or `device_inode`."),
            OptionSpec(
                "scan_interval", .duration, default: "1s",
                "How often the globs are expanded again to find new and rotated files."),
            OptionSpec(
                "poll_interval", .duration, default: "1s",
                "Longest sleep between `stat` checks when inotify reports nothing (inotify misses changes on network file systems)."
            ),
            OptionSpec("checkpoint_interval", .duration, default: "1s", "How often acknowledged offsets are saved."),
            OptionSpec(
                "partial_line_timeout", .duration, default: "1s",
                "How long an unterminated last line waits for its newline before it is emitted."),
            OptionSpec(
                "rotate_wait", .duration, default: "5s",
                "How long a rotated or deleted file is watched after its end before it is closed."),
            OptionSpec(
                "max_open_files", .integer(1...1_000_000), default: "512",
                "Files kept open at once (at most half of `ulimit -n`); when more match, files read to their end are closed and reopened when they change."
            ),
            OptionSpec(
                "read_bytes", .size, default: "256KiB",
                "Most bytes read from one file at a time (fairness between files)."),
            OptionSpec(
                "linger", .duration, default: "5ms",
                "After reading every file to its end, the shortest wait before the next read when lines keep coming: a busy writer's lines are read many per wake-up, at most this much later (0: read each write at once)."
            ),
            OptionSpec(
                "slow_linger", .duration, default: "25ms",
                "The longest such wait: it is as long as about 10 lines take to come, between `linger` and this (10 ms at 1,000 lines/s, 25 ms at 400 and below; under 60 lines/s lines are read when they come). A few lines per wake-up instead of one, at most this much later."
            ),
        ]
    ) { options in
        let include = options.stringList("include").map(Glob.init)
        if include.isEmpty {
            throw options.error("include", "needs at least one glob", hint: "include: [/var/log/app/*.log]")
        }
        var settings = FileTailer.Options(include: include)
        settings.exclude = options.stringList("exclude").map(Glob.init)
        settings.readFrom = ReadFrom(rawValue: options.string("read_from") ?? "beginning") ?? .beginning
        settings.once = options.boolean("once")
        settings.fingerprint = FingerprintStrategy(rawValue: options.string("fingerprint") ?? "checksum") ?? .checksum
        settings.scanInterval = options.duration("scan_interval")
        settings.pollInterval = options.duration("poll_interval")
        settings.checkpointInterval = options.duration("checkpoint_interval")
        settings.partialLineTimeout = options.duration("partial_line_timeout")
        settings.rotateWait = options.duration("rotate_wait")
        (settings.maxLineBytes, settings.oversize, settings.stripCarriageReturn, settings.host) = try LineOptions.read(
            options)
        settings.readBytes = options.size("read_bytes")
        settings.maxOpenFiles = options.integer("max_open_files")
        settings.linger = options.duration("linger")
        settings.slowLinger = options.duration("slow_linger")
        for name in ["scan_interval", "poll_interval", "checkpoint_interval"] where options.duration(name) <= .zero {
            throw options.error(name, "must be longer than 0")
        }
        if settings.readBytes < 1 { throw options.error("read_bytes", "must be at least 1 byte") }
        return FileTailSource(options: settings)
    }

    /// Checkpoints live in the stage's state directory.
    public var keepsState: Bool { true }

    /// File lines carry no fields.
    public var producedFields: Set<String> { [] }

    public func run(_ context: SourceContext) async throws {
        // Its loop waits for inotify and reads in system calls: on a thread
        // of its own they need no hand-off to the blocking pool and back.
        try await DedicatedThread.run { try await FileTailer(options: options, context: context).run() }
    }
}

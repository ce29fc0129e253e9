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
public struct FileSource: Source, FieldProducer, StatefulStage {
    let options: FileTailer.Options

    static let definition = StageDefinition.source(
        "file",
        summary: "Tails files matched by globs; follows rotation and truncation; checkpoints only acknowledged lines.",
        options: LineOptions.options(for: FileTailer.Options.self) + [
            StageOption<FileTailer.Options>.stringList(
                "include", \.includePatterns, required: true,
                "Globs of files to read: `*`, `?`, `[...]` within a name, `**` for any directories."),
            .stringList("exclude", \.excludePatterns, "Globs of files to skip."),
            .choice(
                "read_from", \.readFrom,
                "Where a file without a checkpoint starts; `end` applies only to files present at startup."),
            .boolean("once", \.once, "Read every matched file to its end, then finish (back-fills, benchmarks)."),
            .choice(
                "fingerprint", \.fingerprint,
                "How files are told apart: `checksum` of the first line (follows copies) or `device_inode`."),
            .duration(
                "scan_interval", \.scanInterval, positive: true,
                "How often the globs are expanded again to find new and rotated files."),
            .duration(
                "poll_interval", \.pollInterval, positive: true,
                "Longest sleep between `stat` checks when inotify reports nothing (inotify misses changes on network file systems)."
            ),
            .duration(
                "checkpoint_interval", \.checkpointInterval, positive: true, "How often acknowledged offsets are saved."
            ),
            .duration(
                "partial_line_timeout", \.partialLineTimeout,
                "How long an unterminated last line waits for its newline before it is emitted."),
            .duration(
                "rotate_wait", \.rotateWait,
                "How long a rotated or deleted file is watched after its end before it is closed."),
            .integer(
                "max_open_files", \.maxOpenFiles, in: 1...1_000_000,
                "Files kept open at once (at most half of `ulimit -n`); when more match, files read to their end are closed and reopened when they change."
            ),
            .size(
                "read_bytes", \.readBytes, minimum: 1,
                "Most bytes read from one file at a time (fairness between files)."),
            .duration(
                "linger", \.linger,
                "After reading every file to its end, the shortest wait before the next read when lines keep coming: a busy writer's lines are read many per wake-up, at most this much later (0: read each write at once)."
            ),
            .duration(
                "slow_linger", \.slowLinger,
                "The longest such wait: it is as long as about 10 lines take to come, between `linger` and this (10 ms at 1,000 lines/s, 25 ms at 400 and below; under 60 lines/s lines are read when they come). A few lines per wake-up instead of one, at most this much later."
            ),
        ]
    ) { settings, options in
        if settings.include.isEmpty {
            throw options.error("include", "needs at least one glob", hint: "include: [/var/log/app/*.log]")
        }
        return FileSource(options: settings)
    }

    /// Checkpoints live in the stage's state directory.
    public var keepsState: Bool { true }

    /// File lines carry no fields.
    public var producedFields: Set<String> { [] }

    public func run(_ context: SourceContext) async throws {
        // Its loop waits for inotify and reads in system calls: on a thread
        // of its own they need no hand-off to the blocking pool and back.
        try await DedicatedThread.run {
            try await FileTailer(
                options: options, output: context, stateDirectory: context.stage.dataDirectory,
                hostname: context.stage.hostname
            ).run()
        }
    }
}

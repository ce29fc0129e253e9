import Foundation
import LogPipeBase
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a file with no checkpoint starts.
public enum ReadFrom: String, Sendable, CaseIterable {
    /// At its first byte.
    case beginning
    /// At its end, for files present when the source starts (files that
    /// appear later are read from their beginning).
    case end
}

/// How the file source tells files apart.
public enum FingerprintStrategy: String, Sendable, CaseIterable {
    /// By a checksum of the first line: follows renames and recognises a
    /// copytruncate copy; two files with identical first lines are one file.
    case checksum
    /// By device and inode: files with equal first lines stay apart, but a
    /// copytruncate copy is read again from its beginning.
    case deviceInode = "device_inode"
}

/// The mechanics of the file source: discovery, reading, rotation and
/// truncation, acknowledgement-driven checkpoints. Used by one task only.
final class FileTailer {
    struct Options: LineHandlingSettings {
        var include: [Glob]
        var exclude: [Glob] = []
        var scanInterval: Duration = .seconds(1)
        var pollInterval: Duration = .seconds(1)
        var readFrom: ReadFrom = .beginning
        var fingerprint: FingerprintStrategy = .checksum
        var checkpointInterval: Duration = .seconds(1)
        var partialLineTimeout: Duration = .seconds(1)
        var rotateWait: Duration = .seconds(5)
        var maxLineBytes = 1024 * 1024
        var oversize: OversizePolicy = .split
        var stripCarriageReturn = false
        var readBytes = 256 * 1024
        var host: String?
        var once = false
        var retention: Duration = .seconds(7 * 86400)
        /// Files kept open at once; see ``FileTailer/parkQuietFiles()``.
        var maxOpenFiles = 512
        /// After reading every file to its end, the shortest and the
        /// longest wait for more lines before the next read (``ReadPacer``).
        var linger: Duration = .milliseconds(5)
        var slowLinger: Duration = .milliseconds(25)

        init(include: [Glob]) { self.include = include }
        init() { self.init(include: []) }

        /// The globs as the pipeline file gives them.
        var includePatterns: [String] {
            get { include.map(\.pattern) }
            set { include = newValue.map(Glob.init) }
        }
        var excludePatterns: [String] {
            get { exclude.map(\.pattern) }
            set { exclude = newValue.map(Glob.init) }
        }
    }

    /// Read state per file content (fingerprint); outlives descriptors, so a
    /// copy or a restart resumes where reading stopped.
    final class Progress {
        let fingerprint: FileFingerprint
        /// Bytes of the file's start the fingerprint covers.
        let length: Int
        var path: String
        var readOffset: Int64
        let tracker: OffsetTracker
        var lastSeen: ContinuousClock.Instant
        weak var reader: Tracked?

        init(fingerprint: FileFingerprint, length: Int, path: String, offset: Int64) {
            self.fingerprint = fingerprint
            self.length = length
            self.path = path
            self.readOffset = offset
            self.tracker = OffsetTracker(committed: offset)
            self.lastSeen = .now
        }
    }

    /// An open file.
    final class Tracked {
        let fd: Int32
        var path: String
        let device: UInt64
        let inode: UInt64
        var progress: Progress?
        var splitter: LineSplitter
        var readOffset: Int64 = 0
        /// Found, reading, at its end, rotated, deleted, closed.
        var life: TailedFileLife
        var reportedOversize = 0
        /// Size and modification time at the last look (sizes read buffers,
        /// and tells whether a parked file changed).
        var lastSize: Int64 = 0
        var lastModified: Int64 = 0
        /// Found by the first scan (`read_from: end` applies to it).
        let foundAtStart: Bool

        init(
            fd: Int32, path: String, device: UInt64, inode: UInt64, splitter: LineSplitter, foundAtStart: Bool,
            presence: TailedFileLife.Presence = .inPlace
        ) {
            self.life = TailedFileLife(presence: presence, now: .now)
            self.foundAtStart = foundAtStart
            self.fd = fd
            self.path = path
            self.device = device
            self.inode = inode
            self.splitter = splitter
        }
    }

    let options: Options
    let output: any TailerOutput
    let checkpointer: Checkpointer
    let host: String
    var files: [Tracked] = []
    var progress: [FileFingerprint: Progress] = [:]
    var saved: [FileFingerprint: Checkpointer.Entry] = [:]
    /// The fingerprint lengths among `saved` (computed once: with thousands
    /// of files, a set per resolved file was quadratic).
    var savedLengths: Set<Int> = []
    let book = CheckpointBook()
    /// Names that inotify events point at: files created under a matching
    /// name, and where such files were renamed to. Opened as soon as the
    /// events are read, so a generation rotated away between two scans is
    /// still read; kept for `rotate_wait` to follow renames that race the open.
    var followed: [String: Followed] = [:]
    /// Matched files that could not be opened, warned about once.
    var unreadable: Set<String> = []
    /// Whether any glob matched a file at the first scan.
    var matchedAtStart = false
    /// Files read to their end and closed to make room for others (more
    /// match than `max_open_files`), with their size and modification time
    /// then: reopened when either changes.
    var parked: [Identity: Parked] = [:]
    /// Matching files the last scan found no descriptor slot for.
    var waiting = 0
    /// Lines emitted by the current read round (for ``ReadPacer``).
    var linesRead = 0
    /// The open-file cap in force (`max_open_files`, lowered to half the
    /// process's descriptor limit so that sinks and checkpoints keep theirs).
    let maxOpenFiles: Int
    var firstScan = true
    var roundRobin = 0
    let watcher = DirectoryWatcher()

    /// A tailer that sends to `output` and keeps its checkpoints in
    /// `stateDirectory`; lines get `options.host`, or `hostname`.
    init(options: Options, output: any TailerOutput, stateDirectory: String, hostname: String) {
        self.options = options
        self.output = output
        self.checkpointer = Checkpointer(directory: stateDirectory, stage: output.name)
        self.host = options.host ?? hostname
        var limit = rlimit()
        let descriptors = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 1024
        self.maxOpenFiles = max(1, min(options.maxOpenFiles, descriptors / 2))
    }

    deinit {
        for file in files { close(file.fd) }
    }

    func newSplitter(at offset: Int64) -> LineSplitter {
        LineSplitter(
            maxLineBytes: options.maxLineBytes,
            oversize: options.oversize,
            stripCarriageReturn: options.stripCarriageReturn,
            startOffset: offset
        )
    }

    // MARK: - The loop

    func run() async throws {
        // The wait for a change ends at once when the pipeline stops (a
        // pipe the watcher polls beside inotify), so it needs no wake-ups
        // to look: an idle source wakes once per poll_interval.
        #if os(Linux)
            var ends: [Int32] = [-1, -1]
            if pipe(&ends) == 0 {
                for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            } else {
                ends = [-1, -1]
            }
            let (wake, signal) = (ends[0], ends[1])
            watcher.wakeDescriptor = wake
            let output = self.output
            let stopWaker = Task {
                await output.waitForStop()
                guard !Task.isCancelled, signal >= 0 else { return }
                var one: UInt8 = 1
                _ = write(signal, &one, 1)
            }
            defer { for end in ends where end >= 0 { Glibc.close(end) } }
            var failure: (any Error)?
            do { try await runWatching() } catch { failure = error }
            stopWaker.cancel()
            await stopWaker.value
            if let failure { throw failure }
        #else
            try await runWatching()
        #endif
    }

    private func runWatching() async throws {
        let checkpointer = self.checkpointer
        saved = try await BlockingIO.run { try checkpointer.load() }
        savedLengths = Set(saved.values.compactMap(\.length))
        book.load(saved)
        if !saved.isEmpty {
            output.logger.info("resuming \(saved.count) file(s) from \(checkpointer.path)")
        }
        defer { watcher.close() }
        // Checkpoints are saved by a task of their own: the reading loop
        // spends most of its time waiting for downstream room, and the
        // checkpoint must keep up with acknowledgements meanwhile.
        let book = self.book
        let output = self.output
        let interval = options.checkpointInterval
        let saver = Task {
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                // Idle (nothing read, nothing unacknowledged), the saver
                // sleeps until the next batch is read: no wake-up a second.
                let quiet = book.startQuietCheck()
                let saved = await book.save(to: checkpointer, output: output)
                if book.endQuietCheck(quiet, saved: saved) {
                    await book.untilTouched(orAfter: .seconds(CheckpointBook.refreshSeconds + 1))
                }
            }
        }
        do {
            try await readUntilDone()
            // Every record read is in flight; the checkpoint may only cover
            // what the sinks acknowledged, so wait for them (the shutdown
            // deadline cancels this wait).
            while progress.values.contains(where: { $0.tracker.hasPending }) {
                try await Task.sleep(for: .milliseconds(10))
            }
        } catch {
            saver.cancel()
            await saver.value
            await book.save(to: checkpointer, output: output)
            throw error
        }
        saver.cancel()
        await saver.value
        // The last save must succeed: otherwise the run would end cleanly
        // while the next start reads again what this run delivered.
        if !(await book.save(to: checkpointer, output: output)) {
            throw Checkpointer.Failure(
                description:
                    "the final checkpoint could not be saved to \(checkpointer.path) (see the error above); the next start reads again what the last saved checkpoint does not cover: free space or fix the permissions of data_dir"
            )
        }
    }

    func readUntilDone() async throws {
        let clock = ContinuousClock()
        var lastScan = clock.now - options.scanInterval
        // How long the last wait for a change took (see `linger` below).
        var lastWait: Duration = .seconds(1)
        var pacer = ReadPacer(linger: options.linger, slowLinger: options.slowLinger)
        var lagReported = clock.now - .seconds(1)
        if maxOpenFiles < options.maxOpenFiles {
            output.logger.notice(
                "max_open_files lowered to \(maxOpenFiles), half of this process's descriptor limit (ulimit -n)")
        }
        while !output.isStopping {
            var rescan = try await followEvents()
            if waiting > 0 { rescan = parkQuietFiles() || rescan }
            if rescan || clock.now - lastScan >= options.scanInterval {
                try await scan()
                pruneForgottenFiles()
                lastScan = clock.now
            }
            linesRead = 0
            let (progressed, readToTheEnd) = try await readRound()
            pacer.read(lines: linesRead, at: clock.now)
            try await finishQuietFiles()
            if clock.now - lagReported >= .seconds(1) {
                reportCheckpointLag()
                lagReported = clock.now
            }
            if options.once, !progressed, waiting == 0, files.allSatisfy({ $0.life.phase == .atEnd }) {
                try checkOnceRead()
                return
            }
            if progressed, readToTheEnd, !options.once {
                // Every file was read to its end: the next line comes with
                // a wake-up of its own. An application logging 10,000 lines
                // a second in as many writes would cost a round (poll,
                // fstat, pread, a batch through the pipeline) per line, and
                // so would a writer of a hundred. The next round waits about
                // as long as 10 lines take to come, between `linger` and
                // `slow_linger` (``ReadPacer``), and reads them together;
                // under 60 lines a second each line is read at once. Lines
                // written meanwhile are not missed: the wait for a change
                // that follows ends at once on their inotify event.
                let pause = pacer.pause(afterWaiting: lastWait)
                if pause > .zero {
                    try await BlockingIO.run { Self.pause(pause) }
                }
                lastWait = await waitForChange(clock)
            } else if !progressed {
                lastWait = await waitForChange(clock)
            }
        }
    }

    /// Waits for an inotify event or the poll interval; returns how long.
    private func waitForChange(_ clock: ContinuousClock) async -> Duration {
        let start = clock.now
        await watcher.wait(timeout: options.pollInterval) { [output] in output.isStopping }
        return clock.now - start
    }

    /// Bytes of the open files that no checkpoint covers yet (read and in
    /// flight, or not read): the `checkpoint_lag_bytes` gauge.
    func reportCheckpointLag() {
        var lag: Int64 = 0
        for file in files {
            let committed = file.progress?.tracker.committed ?? 0
            lag += max(0, file.lastSize - committed)
        }
        output.metrics.setGauge("checkpoint_lag_bytes", to: Double(lag))
    }

    /// In `once` mode a back-fill that missed files must not look complete.
    func checkOnceRead() throws {
        if !unreadable.isEmpty {
            throw DescribedFailure(
                description:
                    "\(unreadable.count) matched file(s) could not be read (\(unreadable.sorted().prefix(3).joined(separator: ", "))\(unreadable.count > 3 ? ", ..." : "")); fix their permissions and run again"
            )
        }
        if !matchedAtStart {
            throw DescribedFailure(
                description:
                    "no file matches include \(options.include.map(\.pattern)); nothing was read (check the globs)")
        }
    }

    // MARK: - Discovery

    struct Candidate: Sendable {
        var path: String
        var device: UInt64
        var inode: UInt64
        var fd: Int32?
    }

    /// Expands the globs, opens files not open yet, and notices files whose
    /// path no longer leads to them (rotated away or deleted).
    func scan() async throws {
        let include = options.include
        let exclude = options.exclude
        let open = Set(files.map { Identity(device: $0.device, inode: $0.inode) })
        let parked = self.parked
        let freeSlots = max(0, maxOpenFiles - files.count)
        let (candidates, failures, emptyGlobs, stillParked, waiting) = try await BlockingIO.run {
            () -> ([Candidate], [(String, Int32)], [Glob], Set<Identity>, Int) in
            var seen: Set<String> = []
            var found: [Candidate] = []
            var failures: [(String, Int32)] = []
            var emptyGlobs: [Glob] = []
            var stillParked: Set<Identity> = []
            var waiting = 0
            var slots = freeSlots
            for glob in include {
                var matched = false
                for path in glob.expand() where !seen.contains(path) && !exclude.contains(where: { $0.matches(path) }) {
                    seen.insert(path)
                    matched = true
                    var info = stat()
                    guard stat(path, &info) == 0 else { continue }
                    var candidate = Candidate(
                        path: path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino), fd: nil)
                    let identity = Identity(device: candidate.device, inode: candidate.inode)
                    if let quiet = parked[identity], quiet.size == Int64(info.st_size),
                        quiet.modified == Self.modified(info)
                    {
                        stillParked.insert(identity)  // unchanged since it was read to its end
                        continue
                    }
                    if !open.contains(identity) {
                        guard slots > 0 else {
                            waiting += 1
                            if parked[identity] != nil { stillParked.insert(identity) }
                            continue
                        }
                        slots -= 1
                        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                        guard fd >= 0 else {
                            failures.append((path, errno))
                            continue
                        }
                        // The path may have been replaced between stat and open.
                        var opened = stat()
                        fstat(fd, &opened)
                        candidate.device = UInt64(opened.st_dev)
                        candidate.inode = UInt64(opened.st_ino)
                        candidate.fd = fd
                    }
                    found.append(candidate)
                }
                if !matched { emptyGlobs.append(glob) }
            }
            return (found, failures, emptyGlobs, stillParked, waiting)
        }
        // Parked files that changed are opened now; those not found any more
        // (deleted, rotated away) are forgotten (their progress stays).
        self.parked = self.parked.filter { stillParked.contains($0.key) }
        self.waiting = waiting
        let now = ContinuousClock.now
        for quiet in self.parked.values { progress[quiet.fingerprint]?.lastSeen = now }
        for (path, error) in failures { cannotOpen(path, error) }
        for candidate in candidates where candidate.fd != nil && unreadable.remove(candidate.path) != nil {
            output.logger.notice("\(candidate.path) can be read now")
        }
        if firstScan {
            for glob in emptyGlobs {
                output.metrics.count("empty_globs")
                output.logger.warning(
                    "include glob '\(glob)' matches no file\(options.once ? "" : " yet; it is expanded again every scan_interval")"
                )
            }
            matchedAtStart = emptyGlobs.count < include.count
        }
        var reached: Set<Identity> = []
        for candidate in candidates {
            let identity = Identity(device: candidate.device, inode: candidate.inode)
            reached.insert(identity)
            if let fd = candidate.fd {
                if files.contains(where: { $0.device == candidate.device && $0.inode == candidate.inode }) {
                    close(fd)  // a second path to a file already open
                    continue
                }
                files.append(
                    Tracked(
                        fd: fd, path: candidate.path, device: candidate.device, inode: candidate.inode,
                        splitter: newSplitter(at: 0), foundAtStart: firstScan)
                )
                watcher.watch((candidate.path as NSString).deletingLastPathComponent)
            } else if let file = files.first(where: { $0.device == candidate.device && $0.inode == candidate.inode }) {
                if file.path != candidate.path,
                    !files.contains(where: { $0 !== file && $0.path == file.path && $0.life.presence == .inPlace })
                {
                    // Renamed to another matching name: follow it.
                    file.path = candidate.path
                    if let state = file.progress {
                        state.path = candidate.path
                        book.track(state.fingerprint, path: state.path, length: state.length, tracker: state.tracker)
                    }
                }
                _ = file.life.scanned(found: true)
            }
        }
        for file in files where !reached.contains(Identity(device: file.device, inode: file.inode)) {
            if file.life.scanned(found: false) {
                output.logger.debug("\(file.path) was rotated or removed; reading it to its end")
            }
        }
        for glob in include { watcher.watch(glob.baseDirectory) }
        firstScan = false
    }

    struct Identity: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    struct Parked {
        var size: Int64
        var modified: Int64
        var fingerprint: FileFingerprint
    }

    struct Followed {
        var touched: ContinuousClock.Instant
        var opened = false
    }

    func matches(_ path: String) -> Bool {
        options.include.contains { $0.matches(path) } && !options.exclude.contains { $0.matches(path) }
    }

    /// Reads the directory events that arrived and opens the files they
    /// name: a file created under a matching name, and a file renamed from a
    /// matching (or followed) name to any other (`app.log` to `app.log.1` or
    /// `app.log-20261129`). Returns whether the globs should be expanded now.
    func followEvents() async throws -> Bool {
        let events = watcher.takeEvents()
        guard !events.isEmpty || !followed.isEmpty else { return false }
        var rescan = false
        var movedFrom: [UInt32: String] = [:]
        let now = ContinuousClock.now
        for event in events {
            switch event.kind {
            case .overflow:
                rescan = true
                output.metrics.count("watch_overflows")
                output.logger.warning(
                    "inotify dropped events (its queue overflowed); files rotated away meanwhile may be missed (raise fs.inotify.max_queued_events)"
                )
            case .created:
                if matches(event.path) {
                    followed[event.path] = Followed(touched: now)
                    rescan = true
                }
            case .movedFrom(let cookie):
                movedFrom[cookie] = event.path
            case .movedTo(let cookie):
                if let from = movedFrom.removeValue(forKey: cookie),
                    followed.removeValue(forKey: from) != nil || matches(from)
                {
                    followed[event.path] = Followed(touched: now)
                } else if matches(event.path) {
                    followed[event.path] = Followed(touched: now)
                }
                rescan = rescan || matches(event.path)
            case .deleted:
                if let entry = followed.removeValue(forKey: event.path), !entry.opened {
                    missed(event.path, "was deleted before it could be opened")
                }
            }
        }
        if !followed.isEmpty { try await openFollowed() }
        return rescan
    }

    func missed(_ path: String, _ what: String) {
        output.metrics.count("files_missed")
        output.logger.warning(
            "\(path) \(what): its lines were not read (rotation deletes generations faster than they can be opened)")
    }

    /// Opens the followed names not open yet; forgets names quiet for
    /// `rotate_wait`.
    func openFollowed() async throws {
        let now = ContinuousClock.now
        let keep = max(options.rotateWait, options.scanInterval)
        for (path, entry) in followed where now - entry.touched > keep {
            followed.removeValue(forKey: path)
            if !entry.opened { missed(path, "was renamed or removed before it could be opened") }
        }
        let paths = followed.filter { !$0.value.opened }.map(\.key)
        guard !paths.isEmpty else { return }
        let open = Set(files.map { Identity(device: $0.device, inode: $0.inode) })
        let results: [(path: String, candidate: Candidate?, error: Int32)] = try await BlockingIO.run {
            paths.map { path in
                let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { return (path, nil, errno) }
                var info = stat()
                fstat(fd, &info)
                let identity = Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
                if open.contains(identity) {
                    close(fd)
                    return (path, nil, 0)
                }
                return (path, Candidate(path: path, device: identity.device, inode: identity.inode, fd: fd), 0)
            }
        }
        for (path, candidate, error) in results {
            if error == ENOENT { continue }  // renamed again: a later event names it
            followed[path]?.opened = true
            if error != 0 {
                cannotOpen(path, error)
                continue
            }
            guard let candidate, let fd = candidate.fd else { continue }
            if files.contains(where: { $0.device == candidate.device && $0.inode == candidate.inode }) {
                close(fd)
                continue
            }
            // A rotated-away name is read to its end and closed after rotate_wait.
            let file = Tracked(
                fd: fd, path: path, device: candidate.device, inode: candidate.inode, splitter: newSplitter(at: 0),
                foundAtStart: false, presence: matches(path) ? .inPlace : .rotated)
            files.append(file)
            parked.removeValue(forKey: Identity(device: candidate.device, inode: candidate.inode))
            watcher.watch((path as NSString).deletingLastPathComponent)
        }
    }

    /// A matched file that cannot be opened: warned once per path, counted.
    func cannotOpen(_ path: String, _ error: Int32) {
        guard unreadable.insert(path).inserted else { return }
        output.metrics.count("unreadable_files")
        output.logger.warning(
            "cannot open \(path): \(String(cString: strerror(error))); it is skipped until it can be read (fix its permissions)"
        )
    }

    // MARK: - Reading

    struct ReadRequest: Sendable {
        var fd: Int32
        var offset: Int64
        var maxBytes: Int
        var buffer: ByteBuffer
        var wantsHead: Bool
        /// Also read the head, to check the content is still the same (a
        /// file truncated and rewritten past our offset between two looks).
        var verify: Bool
    }

    struct ReadResult: Sendable {
        var size: Int64
        var links: Int
        var buffer: ByteBuffer
        var bytesRead: Int
        var modified: Int64 = 0
        var head: [UInt8]?
        var error: Int32?
        /// Read up to the size seen (nothing more was there).
        var toTheEnd = false
    }

    /// Sleeps the calling thread (a ``DedicatedThread``: a task sleep would
    /// cost a timer on the shared executor per round).
    static func pause(_ duration: Duration) {
        var request = timespec(
            tv_sec: Int(duration.components.seconds),
            tv_nsec: Int(duration.components.attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
    }

    /// One pass over every open file: at most `read_bytes` per file and a
    /// bounded total per pass, starting at a rotating file so that a busy
    /// file cannot starve the others. Returns whether anything was read,
    /// and whether every file was read as far as it was long when looked at
    /// (nothing left for an immediate next round).
    func readRound() async throws -> (progressed: Bool, toTheEnd: Bool) {
        var readToTheEnd = true
        guard !files.isEmpty else { return (false, true) }
        let budget = max(options.readBytes * 4, options.readBytes)
        var requests: [ReadRequest] = []
        let start = roundRobin % files.count
        roundRobin += 1
        let order = Array(files[start...] + files[..<start])
        for file in order {
            let resolved = file.progress != nil
            // Room for what the file had beyond our offset at the last look:
            // thousands of quiet files must not each hold a read buffer. A
            // file that grew meanwhile gets its buffer grown by the read.
            let expected = Int(clamping: max(0, file.lastSize - file.readOffset))
            let buffer =
                resolved ? file.splitter.makeReadBuffer(capacity: min(options.readBytes, expected)) : ByteBuffer()
            requests.append(
                ReadRequest(
                    fd: file.fd, offset: file.readOffset, maxBytes: options.readBytes, buffer: buffer,
                    wantsHead: !resolved, verify: resolved && options.fingerprint == .checksum && !options.once)
            )
        }
        let batch = requests
        let results: [ReadResult] = try await BlockingIO.run {
            var remaining = budget
            return batch.map { request in
                var info = stat()
                guard fstat(request.fd, &info) == 0 else {
                    return ReadResult(size: 0, links: 0, buffer: request.buffer, bytesRead: 0, head: nil, error: errno)
                }
                var result = ReadResult(
                    size: Int64(info.st_size), links: Int(info.st_nlink), buffer: request.buffer, bytesRead: 0,
                    modified: Self.modified(info))
                if request.wantsHead || request.verify {
                    var head = [UInt8](repeating: 0, count: FileFingerprint.maxBytes)
                    let count = pread(request.fd, &head, head.count, 0)
                    result.head = count > 0 ? Array(head.prefix(count)) : []
                    if request.wantsHead { return result }
                }
                let available = Int64(info.st_size) - request.offset
                guard available > 0, remaining > 0 else {
                    result.toTheEnd = available <= 0
                    return result
                }
                let wanted = Int(min(available, Int64(min(request.maxBytes, remaining))))
                var buffer = request.buffer
                var readError: Int32?
                let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { pointer in
                    let count = pread(request.fd, pointer.baseAddress!, wanted, off_t(request.offset))
                    if count < 0 { readError = errno }
                    return max(count, 0)
                }
                remaining -= count
                result.buffer = buffer
                result.bytesRead = count
                result.toTheEnd = count == available
                result.error = readError
                return result
            }
        }
        var progressed = false
        let now = ContinuousClock.now
        for (file, result) in zip(order, results) {
            if !result.toTheEnd { readToTheEnd = false }
            if let error = result.error {
                output.logger.warning("cannot read \(file.path): \(String(cString: strerror(error))); will retry")
                continue
            }
            file.lastSize = result.size
            file.lastModified = result.modified
            if let head = result.head, file.progress == nil {
                file.life.linksSeen(result.links)
                head.withUnsafeBytes { resolve(file, head: $0, size: result.size) }
                progressed = progressed || file.progress != nil
                continue
            }
            var look = TailedFileLife.Look(
                size: result.size, links: result.links, bytesRead: result.bytesRead, readOffset: file.readOffset)
            if let head = result.head, let state = file.progress {
                // Same inode, other content: the file was replaced or
                // truncated and rewritten past our offset.
                look.contentChanged =
                    head.withUnsafeBytes({ FileFingerprint.of($0, length: state.length) }) != state.fingerprint
            }
            switch file.life.looked(look, now: now) {
            case .readAgain:
                truncated(file)
                progressed = true
                readToTheEnd = false
            case .emit:
                progressed = true
                try await emit(file, buffer: result.buffer, count: result.bytesRead)
            case .reachedEnd:
                // Really at the end (not merely skipped this round because the
                // round's byte budget ran out).
                try await flushPartialLine(file)
            case .none:
                break
            }
        }
        return (progressed, readToTheEnd)
    }

    /// Gives a file its identity once its first line is complete: the
    /// progress of the same content (a rename, a copy, a restart), or a new one.
    func resolve(_ file: Tracked, head: UnsafeRawBufferPointer, size: Int64) {
        var fingerprint: FileFingerprint
        var length: Int
        switch options.fingerprint {
        case .checksum:
            let standard = FileFingerprint.standardLength(of: head)
            switch file.life.headRead(
                count: head.count, firstLineComplete: standard != nil, now: .now,
                partialLineTimeout: options.partialLineTimeout, once: options.once)
            {
            case .wait: return
            case .firstLine: length = standard!
            case .wholeHead: length = head.count  // an unfinished only line that stopped growing
            }
            fingerprint = FileFingerprint.of(head, length: length)!
            // A checkpoint may hold this file under a fingerprint of fewer
            // bytes (taken while its first line was unfinished).
            if progress[fingerprint] == nil, saved[fingerprint] == nil {
                for savedLength in savedLengths where savedLength != length {
                    if let shorter = FileFingerprint.of(head, length: savedLength), saved[shorter] != nil {
                        fingerprint = shorter
                        length = savedLength
                        break
                    }
                }
            }
        case .deviceInode:
            fingerprint = FileFingerprint(value: file.device &* 0x9E37_79B9_7F4A_7C15 ^ file.inode)
            length = 0
        }
        var offset: Int64
        let state: Progress
        if let known = progress[fingerprint] {
            if let reader = known.reader, reader !== file {
                // The same content is already being read through another file
                // (a copy made before the original was truncated): leave this
                // one for a later scan.
                drop(file)
                return
            }
            state = known
            offset = known.readOffset
        } else if let entry = saved.removeValue(forKey: fingerprint) {
            state = Progress(fingerprint: fingerprint, length: length, path: file.path, offset: entry.offset)
            offset = entry.offset
            progress[fingerprint] = state
        } else {
            offset = file.foundAtStart && options.readFrom == .end ? size : 0
            state = Progress(fingerprint: fingerprint, length: length, path: file.path, offset: offset)
            progress[fingerprint] = state
        }
        if offset > size {
            // Shorter than where reading stopped: not the content we knew.
            output.metrics.count("truncations")
            offset = 0
            state.readOffset = 0
        }
        state.reader = file
        state.path = file.path
        book.track(fingerprint, path: file.path, length: state.length, tracker: state.tracker)
        state.lastSeen = .now
        file.progress = state
        file.readOffset = offset
        file.splitter = newSplitter(at: offset)
        file.life.identified()
    }

    /// The file shrank below the read offset: copytruncate, or `> file`.
    /// Its old content keeps its progress (a copy may still be found); the
    /// file is read again from its start as new content.
    func truncated(_ file: Tracked) {
        output.metrics.count("truncations")
        output.logger.notice("\(file.path) was truncated; reading it again from the start")
        file.progress?.reader = nil
        file.progress = nil
        file.readOffset = 0
        file.splitter = newSplitter(at: 0)
    }

    func drop(_ file: Tracked) {
        file.life.closed()
        close(file.fd)
        if file.progress?.reader === file { file.progress?.reader = nil }
        files.removeAll { $0 === file }
    }

    func emit(_ file: Tracked, buffer: ByteBuffer, count: Int) async throws {
        file.readOffset += Int64(count)
        file.progress?.readOffset = file.readOffset
        var records: [Record] = []
        let now = Timestamp.now()
        let name = output.name
        let path = file.path
        let stream = file.progress?.fingerprint.description
        file.splitter.consume(buffer) { line, offset in
            records.append(
                Record(
                    bytes: line, source: name, origin: path, host: host, receivedAt: now, offset: offset,
                    streamID: stream)
            )
        }
        try await send(records, from: file, end: file.splitter.lineStartOffset)
    }

    /// Emits a last line that has waited `partial_line_timeout` for its
    /// newline (at once in `once` mode).
    func flushPartialLine(_ file: Tracked) async throws {
        guard file.progress != nil, file.splitter.pendingBytes > 0 else { return }
        guard file.life.partialLineIsDue(now: .now, timeout: options.partialLineTimeout, once: options.once) else {
            return
        }
        var records: [Record] = []
        let stream = file.progress?.fingerprint.description
        file.splitter.finish { line, offset in
            records.append(
                Record(
                    bytes: line, source: output.name, origin: file.path, host: host, receivedAt: .now(),
                    offset: offset,
                    streamID: stream)
            )
        }
        output.metrics.count("partial_lines")
        try await send(records, from: file, end: file.splitter.lineStartOffset)
    }

    /// Emits records of one file; record `i` ends where record `i + 1`
    /// starts, the last one at `end`.
    func send(_ records: [Record], from file: Tracked, end: Int64) async throws {
        linesRead += records.count
        if file.splitter.oversizeLines > file.reportedOversize {
            output.metrics.count("oversize_lines", by: file.splitter.oversizeLines - file.reportedOversize)
            if file.reportedOversize == 0 {
                output.logger.warning(
                    "\(file.path) has a line longer than max_line_bytes (\(options.maxLineBytes)); it was \(options.oversize == .split ? "split" : "truncated") (counted as oversize_lines)"
                )
            }
            file.reportedOversize = file.splitter.oversizeLines
        }
        guard !records.isEmpty, let state = file.progress else { return }
        var ends: [Int64] = []
        ends.reserveCapacity(records.count)
        for index in records.indices.dropFirst() { ends.append(records[index].offset!) }
        ends.append(end)
        let tracker = state.tracker
        let sequence = tracker.register(ends: ends)
        book.touched()
        try await output.send(records) { indices in
            tracker.complete(sequence, indices: indices)
        }
    }

    /// A file's modification time in nanoseconds.
    static func modified(_ info: stat) -> Int64 {
        Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
    }

    /// While matching files wait for a descriptor, closes files read to
    /// their end (nothing unfinished held) and remembers their size and
    /// modification time: a scan reopens one when either changes, and its
    /// fingerprint leads back to its progress. Returns whether any was
    /// closed (then the waiting files can be opened at once).
    func parkQuietFiles() -> Bool {
        var closed = false
        for file in files
        where file.life.canPark(
            pendingBytes: file.splitter.pendingBytes, readToItsSize: file.lastSize == file.readOffset)
        {
            parked[Identity(device: file.device, inode: file.inode)] = Parked(
                size: file.lastSize, modified: file.lastModified, fingerprint: file.progress!.fingerprint)
            drop(file)
            closed = true
        }
        if closed { output.metrics.count("files_parked") }
        return closed
    }

    /// Closes files that were rotated away or deleted once they were read to
    /// their end and stayed quiet for `rotate_wait`.
    func finishQuietFiles() async throws {
        for file in files where file.life.isLeaving {
            try await flushPartialLine(file)
            if file.life.isFinished(
                now: .now, rotateWait: options.rotateWait, pendingBytes: file.splitter.pendingBytes, once: options.once)
            {
                output.logger.debug("finished \(file.path)")
                drop(file)
            }
        }
    }

    // MARK: - Checkpoints

    /// Forgets files unseen for `retention` (their checkpoints too).
    func pruneForgottenFiles() {
        let now = ContinuousClock.now
        for (fingerprint, state) in progress where state.reader == nil && now - state.lastSeen > options.retention {
            progress.removeValue(forKey: fingerprint)
            book.remove(fingerprint)
        }
        let nowSeconds = Int64(Timestamp.now().nanosecondsSinceEpoch / 1_000_000_000)
        for (fingerprint, entry) in saved where nowSeconds - entry.seen > options.retention.components.seconds {
            saved.removeValue(forKey: fingerprint)
            book.remove(fingerprint)
        }
    }
}

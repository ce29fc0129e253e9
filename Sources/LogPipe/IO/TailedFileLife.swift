/// The life of one open tailed file, as a value: what phase it is in and
/// what the tailer does next.
///
/// No I/O and no clock of its own: ``FileTailer`` looks at the file (fstat,
/// pread, a directory scan) and tells the machine what it saw, with the time;
/// the machine answers with what to do (fingerprint it, emit what was read,
/// read it again from the start, flush its unfinished last line, close it).
/// Unit tests drive every transition without a file.
///
/// ```
///  found ──(first line complete, or stopped growing)──▶ reading ◀──(grew)── atEnd
///    ▲                                                    │  ──(read to its size)──▶ │
///    └──────────(truncated: shorter than read, or other content)──────────────────┘
///
///  where its path is:  inPlace ──(a scan no longer finds it)──▶ rotated ──(found again)──▶ inPlace
///                      any ──(no link left)──▶ deleted
///  a rotated or deleted file read to its end and quiet for rotate_wait ──▶ closed
///  an in-place file at its end while others wait for a descriptor ──▶ closed (parked)
/// ```
struct TailedFileLife {
    /// How far the file is read.
    enum Phase: Equatable, CustomStringConvertible {
        /// Open, but its identity (fingerprint) is unknown: its first line is
        /// not complete yet. Nothing is read from it.
        case found
        /// Identified; there is more to read than was read.
        case reading
        /// Read to the size last seen.
        case atEnd
        /// Closed: finished after rotation or deletion, or parked.
        case closed

        var description: String {
            switch self {
            case .found: "found"
            case .reading: "reading"
            case .atEnd: "at end"
            case .closed: "closed"
            }
        }
    }

    /// What its path says about it.
    enum Presence: Equatable {
        /// A matching path leads to it.
        case inPlace
        /// No matching path leads to it any more (renamed away by rotation):
        /// it is read to its end, then closed after `rotate_wait`.
        case rotated
        /// Its last link is gone: read to its end, then closed after `rotate_wait`.
        case deleted
    }

    private(set) var phase: Phase = .found
    private(set) var presence: Presence
    /// When it last grew (or, while found, when its head last changed size).
    private(set) var lastGrowth: ContinuousClock.Instant
    /// While found: the head size last seen, to notice growth.
    private var headSeen: Int?

    /// A file just opened; `presence` is `.rotated` for a path that no glob
    /// matches (found under a rotated-away name through inotify).
    init(presence: Presence = .inPlace, now: ContinuousClock.Instant) {
        self.presence = presence
        self.lastGrowth = now
    }

    // MARK: - Identity

    /// How much of the head the fingerprint covers.
    enum HeadDecision: Equatable {
        /// Not yet: the first line is unfinished and still growing.
        case wait
        /// Fingerprint the first line.
        case firstLine
        /// Fingerprint all of the head: an unfinished only line that stopped
        /// growing for `partial_line_timeout` (or any, in `once` mode).
        case wholeHead
    }

    /// The head of a found file was read: `count` bytes, of which the first
    /// line is complete or not.
    mutating func headRead(
        count: Int, firstLineComplete: Bool, now: ContinuousClock.Instant, partialLineTimeout: Duration, once: Bool
    ) -> HeadDecision {
        guard phase == .found else { return .wait }
        if firstLineComplete { return .firstLine }
        if count > 0, once || now - lastGrowth >= partialLineTimeout { return .wholeHead }
        if count != headSeen {
            headSeen = count
            lastGrowth = now
        }
        return .wait
    }

    /// Its identity is known (new, or progress found for its content):
    /// reading starts at the offset it was given.
    mutating func identified() {
        guard phase == .found else { return }
        phase = .reading
    }

    // MARK: - Reading

    /// What a look at an identified file showed.
    struct Look {
        /// Its size.
        var size: Int64
        /// Its link count.
        var links: Int
        /// Bytes read this time (0: nothing new, or this round's budget ran out).
        var bytesRead: Int
        /// Where reading stood before this read.
        var readOffset: Int64
        /// Its head no longer has the fingerprint it was read under.
        var contentChanged = false
    }

    /// What to do after a look.
    enum ReadAction: Equatable {
        /// Emit the lines read.
        case emit
        /// At its end: flush the unfinished last line if it waited long enough.
        case reachedEnd
        /// Truncated (copytruncate, `> file`) or replaced by other content
        /// under the same inode: read it again from the start as new content.
        case readAgain
        /// Nothing to do (this round's byte budget ran out before it).
        case none
    }

    /// Presence from a link count: a file whose last link is gone is deleted.
    mutating func linksSeen(_ links: Int) {
        if links == 0 {
            presence = .deleted
        } else if presence == .deleted {
            presence = .rotated  // linked again: in place only once a scan finds it under a matching path
        }
    }

    /// An identified file was looked at (and maybe read).
    mutating func looked(_ look: Look, now: ContinuousClock.Instant) -> ReadAction {
        linksSeen(look.links)
        guard phase == .reading || phase == .atEnd else { return .none }
        if look.contentChanged || look.size < look.readOffset {
            phase = .found
            headSeen = nil
            return .readAgain
        }
        if look.bytesRead > 0 {
            phase = .reading
            lastGrowth = now
            return .emit
        }
        if look.size <= look.readOffset {
            phase = .atEnd
            return .reachedEnd
        }
        return .none
    }

    /// Whether an unfinished last line waited long enough for its newline.
    func partialLineIsDue(now: ContinuousClock.Instant, timeout: Duration, once: Bool) -> Bool {
        once || now - lastGrowth >= timeout
    }

    // MARK: - Where its path is

    /// A scan found a matching path to it (`true`) or not. Returns true when
    /// it was just rotated away (worth a log line).
    mutating func scanned(found: Bool) -> Bool {
        switch (presence, found) {
        case (.rotated, true):
            presence = .inPlace
            return false
        case (.inPlace, false):
            presence = .rotated
            return true
        default:
            return false
        }
    }

    // MARK: - Closing

    /// Whether it can be closed to free a descriptor for a waiting file: in
    /// place, identified, read to its end with nothing unfinished held (a
    /// later scan reopens it when its size or time changes).
    func canPark(pendingBytes: Int, readToItsSize: Bool) -> Bool {
        phase == .atEnd && presence == .inPlace && pendingBytes == 0 && readToItsSize
    }

    /// A rotated or deleted file at its end: flush its last line, and see
    /// whether it can close.
    var isLeaving: Bool { presence != .inPlace && phase == .atEnd }

    /// Whether a leaving file is finished: quiet for `rotateWait` with no
    /// unfinished line held (in `once` mode the unfinished line was flushed).
    func isFinished(now: ContinuousClock.Instant, rotateWait: Duration, pendingBytes: Int, once: Bool) -> Bool {
        isLeaving && now - lastGrowth >= rotateWait && (pendingBytes == 0 || once)
    }

    /// Closed (finished, parked, or left to another reader of the same content).
    mutating func closed() {
        phase = .closed
    }
}

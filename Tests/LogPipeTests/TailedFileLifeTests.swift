import Testing

@testable import LogPipe

/// Drives ``TailedFileLife`` through every transition: no file, no clock.
@Suite struct TailedFileLifeTests {
    let start = ContinuousClock.now
    let timeout = Duration.seconds(1)

    func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    func look(size: Int64, read: Int = 0, from offset: Int64, links: Int = 1, changed: Bool = false)
        -> TailedFileLife.Look
    {
        TailedFileLife.Look(size: size, links: links, bytesRead: read, readOffset: offset, contentChanged: changed)
    }

    /// A file identified at `at(0)`.
    func reading() -> TailedFileLife {
        var life = TailedFileLife(now: at(0))
        let step1 = life.headRead(
            count: 20, firstLineComplete: true, now: at(0), partialLineTimeout: timeout, once: false)
        #expect(step1 == .firstLine)
        life.identified()
        return life
    }

    @Test func aFoundFileWaitsForItsFirstLine() {
        var life = TailedFileLife(now: at(0))
        #expect(life.phase == .found)
        // Empty, then an unfinished first line that keeps growing: wait.
        let step2 = life.headRead(
            count: 0, firstLineComplete: false, now: at(0), partialLineTimeout: timeout, once: false)
        #expect(step2 == .wait)
        let step3 = life.headRead(
            count: 5, firstLineComplete: false, now: at(900), partialLineTimeout: timeout, once: false)
        #expect(step3 == .wait)
        let step4 = life.headRead(
            count: 9, firstLineComplete: false, now: at(1800), partialLineTimeout: timeout, once: false)
        #expect(step4 == .wait)
        // Unchanged for less than partial_line_timeout: still wait.
        let step5 = life.headRead(
            count: 9, firstLineComplete: false, now: at(2700), partialLineTimeout: timeout, once: false)
        #expect(step5 == .wait)
        // Quiet for partial_line_timeout: the unfinished line is its identity.
        let step6 = life.headRead(
            count: 9, firstLineComplete: false, now: at(2800), partialLineTimeout: timeout, once: false)
        #expect(step6 == .wholeHead)
        #expect(life.phase == .found)
        life.identified()
        #expect(life.phase == .reading)
    }

    @Test func aCompleteFirstLineIdentifiesAtOnceAndOnceModeDoesNotWait() {
        var life = TailedFileLife(now: at(0))
        let step7 = life.headRead(
            count: 30, firstLineComplete: true, now: at(1), partialLineTimeout: timeout, once: false)
        #expect(step7 == .firstLine)
        var once = TailedFileLife(now: at(0))
        let step8 = once.headRead(
            count: 3, firstLineComplete: false, now: at(1), partialLineTimeout: timeout, once: true)
        #expect(step8 == .wholeHead)
        // An empty file has no identity, even in once mode.
        var empty = TailedFileLife(now: at(0))
        let step9 = empty.headRead(
            count: 0, firstLineComplete: false, now: at(5000), partialLineTimeout: timeout, once: true)
        #expect(step9 == .wait)
    }

    @Test func readingGoesToTheEndAndBackWhenTheFileGrows() {
        var life = reading()
        let step10 = life.looked(look(size: 100, read: 100, from: 0), now: at(10))
        #expect(step10 == .emit)
        #expect(life.phase == .reading)
        #expect(life.lastGrowth == at(10))
        // The round's budget ran out before this file: nothing changes.
        let step11 = life.looked(look(size: 150, from: 100), now: at(20))
        #expect(step11 == .none)
        #expect(life.phase == .reading)
        let step12 = life.looked(look(size: 150, read: 50, from: 100), now: at(30))
        #expect(step12 == .emit)
        let step13 = life.looked(look(size: 150, from: 150), now: at(40))
        #expect(step13 == .reachedEnd)
        #expect(life.phase == .atEnd)
        #expect(life.lastGrowth == at(30))
        // An unfinished last line is flushed only after partial_line_timeout.
        #expect(!life.partialLineIsDue(now: at(500), timeout: timeout, once: false))
        #expect(life.partialLineIsDue(now: at(1030), timeout: timeout, once: false))
        #expect(life.partialLineIsDue(now: at(31), timeout: timeout, once: true))
        let step14 = life.looked(look(size: 170, read: 20, from: 150), now: at(2000))
        #expect(step14 == .emit)
        #expect(life.phase == .reading)
    }

    @Test func aTruncatedOrReplacedFileIsFoundAgain() {
        var life = reading()
        _ = life.looked(look(size: 100, read: 100, from: 0), now: at(10))
        let step15 = life.looked(look(size: 40, from: 100), now: at(20))
        #expect(step15 == .readAgain)
        #expect(life.phase == .found)
        let step16 = life.headRead(
            count: 40, firstLineComplete: true, now: at(30), partialLineTimeout: timeout, once: false)
        #expect(step16 == .firstLine)
        life.identified()
        // Same size or longer, but other content under the same inode.
        let step17 = life.looked(look(size: 400, read: 100, from: 100, changed: true), now: at(40))
        #expect(step17 == .readAgain)
        #expect(life.phase == .found)
        // A found file is not read: looks change nothing but its presence.
        let step18 = life.looked(look(size: 400, read: 0, from: 0, links: 0), now: at(50))
        #expect(step18 == .none)
        #expect(life.presence == .deleted)
    }

    @Test func aRotatedFileIsReadToItsEndThenClosedAfterRotateWait() {
        var life = reading()
        let wait = Duration.seconds(5)
        let step19 = life.scanned(found: true)
        #expect(step19 == false)
        #expect(life.presence == .inPlace)
        let step20 = life.scanned(found: false)
        #expect(step20)  // just rotated away: worth a log line
        let step21 = life.scanned(found: false)
        #expect(step21 == false)
        #expect(life.presence == .rotated)
        #expect(!life.isLeaving)  // not read to its end yet
        _ = life.looked(look(size: 80, read: 80, from: 0), now: at(100))
        _ = life.looked(look(size: 80, from: 80), now: at(200))
        #expect(life.isLeaving)
        #expect(!life.isFinished(now: at(3000), rotateWait: wait, pendingBytes: 0, once: false))
        #expect(life.isFinished(now: at(5100), rotateWait: wait, pendingBytes: 0, once: false))
        // An unfinished line holds it open (in once mode it was flushed).
        #expect(!life.isFinished(now: at(5100), rotateWait: wait, pendingBytes: 7, once: false))
        #expect(life.isFinished(now: at(5100), rotateWait: wait, pendingBytes: 7, once: true))
        // Renamed back under a matching name: in place again, not leaving.
        let step22 = life.scanned(found: true)
        #expect(step22 == false)
        #expect(life.presence == .inPlace)
        #expect(!life.isLeaving)
        life.closed()
        #expect(life.phase == .closed)
    }

    @Test func aDeletedFileLeavesLikeARotatedOne() {
        var life = reading()
        _ = life.looked(look(size: 10, read: 10, from: 0, links: 0), now: at(10))
        #expect(life.presence == .deleted)
        _ = life.looked(look(size: 10, from: 10, links: 0), now: at(20))
        #expect(life.isLeaving)
        // Scans never find a deleted file; they do not bring it back.
        let step23 = life.scanned(found: false)
        #expect(step23 == false)
        #expect(life.presence == .deleted)
        // Linked again (rare): kept as rotated until a scan finds it.
        life.linksSeen(1)
        #expect(life.presence == .rotated)
    }

    @Test func onlyAQuietInPlaceFileAtItsEndCanBeParked() {
        var life = TailedFileLife(now: at(0))
        #expect(!life.canPark(pendingBytes: 0, readToItsSize: true))  // not identified
        _ = life.headRead(count: 10, firstLineComplete: true, now: at(0), partialLineTimeout: timeout, once: false)
        life.identified()
        _ = life.looked(look(size: 10, read: 10, from: 0), now: at(1))
        #expect(!life.canPark(pendingBytes: 0, readToItsSize: true))  // not at its end
        _ = life.looked(look(size: 10, from: 10), now: at(2))
        #expect(life.canPark(pendingBytes: 0, readToItsSize: true))
        #expect(!life.canPark(pendingBytes: 3, readToItsSize: true))
        #expect(!life.canPark(pendingBytes: 0, readToItsSize: false))
        _ = life.scanned(found: false)
        #expect(!life.canPark(pendingBytes: 0, readToItsSize: true))  // rotated: finished, not parked
    }
}

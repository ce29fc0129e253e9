import Foundation
import LogPipeBase
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the checkpoint holds, shared between the reading task (which adds
/// files and follows renames) and the task that saves it.
final class CheckpointBook: Sendable {
    enum Item: Sendable {
        /// A file this run reads or has read.
        case live(path: String, length: Int, tracker: OffsetTracker)
        /// A file from the last checkpoint not found again (yet).
        case saved(Checkpointer.Entry)
    }

    private let items = LockedBox<[FileFingerprint: Item]>([:])

    /// What the last save wrote (without the `seen` times) and when: an
    /// idle tailer does not rewrite and fsync an unchanged checkpoint every
    /// `checkpoint_interval`.
    private struct LastSave {
        var entries: [String: Checkpointer.Entry] = [:]
        var at: Int64 = 0
    }
    private let lastSave = LockedBox(LastSave())

    /// An unchanged checkpoint is saved again this often anyway, to renew
    /// the `seen` times that retention goes by (days).
    static let refreshSeconds: Int64 = 3600

    /// Whether a batch was read or a file added or dropped since the last
    /// ``startQuietCheck()``, and the saver waiting for that.
    private struct Activity: Sendable {
        var touched = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let activity = LockedBox(Activity())

    /// Notes that the checkpoint may change (a batch was registered with a
    /// file's tracker, a file was added or dropped); wakes a waiting saver.
    func touched() {
        let waiter = activity.withLock { activity -> CheckedContinuation<Void, Never>? in
            activity.touched = true
            defer { activity.waiter = nil }
            return activity.waiter
        }
        waiter?.resume()
    }

    /// Call right before a save: forgets earlier activity and returns
    /// whether every record read so far is acknowledged.
    func startQuietCheck() -> Bool {
        activity.withLock { $0.touched = false }
        return items.withLock { items in
            !items.values.contains { item in
                if case .live(_, _, let tracker) = item { tracker.hasPending } else { false }
            }
        }
    }

    /// Call right after the save with what ``startQuietCheck()`` returned:
    /// whether the save covers everything until the next ``touched()``.
    /// It does when nothing was unacknowledged before it and nothing was
    /// read since: offsets only move when records read are acknowledged.
    func endQuietCheck(_ quiet: Bool, saved: Bool) -> Bool {
        quiet && saved && !activity.withLock { $0.touched }
    }

    /// Returns at the next ``touched()`` (at once if one came since the
    /// last ``startQuietCheck()``), after `limit`, or when cancelled.
    func untilTouched(orAfter limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.untilTouched() }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    private func untilTouched() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = activity.withLock { activity -> Bool in
                    if activity.touched || Task.isCancelled { return true }
                    activity.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = activity.withLock { activity -> CheckedContinuation<Void, Never>? in
                defer { activity.waiter = nil }
                return activity.waiter
            }
            waiter?.resume()
        }
    }

    func load(_ entries: [FileFingerprint: Checkpointer.Entry]) {
        items.withLock { items in
            for (fingerprint, entry) in entries { items[fingerprint] = .saved(entry) }
        }
    }

    func track(_ fingerprint: FileFingerprint, path: String, length: Int, tracker: OffsetTracker) {
        items.withLock { $0[fingerprint] = .live(path: path, length: length, tracker: tracker) }
        touched()
    }

    func remove(_ fingerprint: FileFingerprint) {
        items.withLock { $0[fingerprint] = nil }
        touched()
    }

    func entries() -> [Checkpointer.Entry] {
        let now = Int64(Timestamp.now().nanosecondsSinceEpoch / 1_000_000_000)
        return items.withLock { items in
            items.map { fingerprint, item in
                switch item {
                case .live(let path, let length, let tracker):
                    Checkpointer.Entry(
                        fingerprint: fingerprint.description, path: path, offset: tracker.committed, seen: now,
                        length: length)
                case .saved(let entry):
                    entry
                }
            }
        }
    }

    /// Saves the checkpoint; a failure is logged and counted
    /// (`checkpoint_errors`). Returns whether it was saved.
    @discardableResult
    func save(to checkpointer: Checkpointer, output: any TailerOutput) async -> Bool {
        let snapshot = entries()
        let now = Int64(Timestamp.now().nanosecondsSinceEpoch / 1_000_000_000)
        var compared: [String: Checkpointer.Entry] = [:]
        for var entry in snapshot {
            entry.seen = 0
            compared[entry.fingerprint] = entry
        }
        let unchanged = lastSave.withLock { last in
            last.entries == compared && now - last.at < Self.refreshSeconds
        }
        if unchanged { return true }
        do {
            try await BlockingIO.runEvenIfCancelled { try checkpointer.save(snapshot) }
            lastSave.withLock { $0 = LastSave(entries: compared, at: now) }
            return true
        } catch {
            output.metrics.count("checkpoint_errors")
            output.logger.error(
                "cannot save checkpoints: \(error); reading goes on, and a restart may read some lines again")
            return false
        }
    }
}

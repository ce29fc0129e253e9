import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Identifies a file by its content: a 64-bit FNV-1a hash of its first line
/// (up to 1 KiB). A renamed file keeps it; a copy (copytruncate) has it too,
/// so reading resumes where it stopped; a new file at an old path or inode
/// gets a new one. A file whose only line is unfinished is fingerprinted on
/// what it has once it stayed quiet for `partial_line_timeout`; the number of
/// bytes hashed is kept with the fingerprint, so the file is still recognised
/// after that line grows.
public struct FileFingerprint: Sendable, Hashable, CustomStringConvertible {
    /// The hash.
    public var value: UInt64

    /// Most bytes of the first line that count.
    static let maxBytes = 1024

    /// How many bytes of `head` make the fingerprint: the first line with its
    /// newline, or 1 KiB; `nil` while the first line is shorter and unfinished.
    static func standardLength(of head: UnsafeRawBufferPointer) -> Int? {
        let bytes = head.bindMemory(to: UInt8.self)
        if let newline = bytes.prefix(maxBytes).firstIndex(of: 0x0A) { return newline + 1 }
        return bytes.count >= maxBytes ? maxBytes : nil
    }

    /// The hash of the first `length` bytes of `head` (`nil` if it is shorter).
    static func of(_ head: UnsafeRawBufferPointer, length: Int) -> FileFingerprint? {
        guard length > 0, head.count >= length else { return nil }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in head.prefix(length) {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return FileFingerprint(value: hash)
    }

    /// 16 hex digits.
    public var description: String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    init(value: UInt64) { self.value = value }

    init?(_ text: String) {
        guard text.count == 16, let value = UInt64(text, radix: 16) else { return nil }
        self.value = value
    }
}

/// Saves and loads the file source's read positions, atomically: write a
/// temporary file, fsync it, rename it over the old one, fsync the directory.
/// A crash leaves either the old or the new checkpoint, never a torn one.
struct Checkpointer: Sendable {
    struct Entry: Codable, Sendable, Equatable {
        var fingerprint: String
        var path: String
        var offset: Int64
        /// Unix seconds when the file was last seen.
        var seen: Int64
        /// Bytes of the file's start the fingerprint covers.
        var length: Int?
    }

    struct File: Codable {
        var version: Int
        var files: [Entry]
    }

    typealias Failure = DescribedFailure

    let path: String

    init(directory: String, stage: String) {
        path = directory + "/" + stage + "/checkpoints.json"
    }

    /// The saved entries by fingerprint; empty when there is no checkpoint yet.
    func load() throws -> [FileFingerprint: Entry] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let file = try JSONDecoder().decode(File.self, from: data)
            var entries: [FileFingerprint: Entry] = [:]
            for entry in file.files {
                if let fingerprint = FileFingerprint(entry.fingerprint) { entries[fingerprint] = entry }
            }
            return entries
        } catch {
            throw Failure(
                description:
                    "checkpoint file \(path) is unreadable (\(error)); move it away to start over (files are then read as read_from says)"
            )
        }
    }

    /// Replaces the checkpoint with `entries`.
    func save(_ entries: [Entry]) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if makeDirectories(directory) != 0 {
            throw Failure(
                description: "cannot create checkpoint directory \(directory): \(String(cString: strerror(errno)))")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(File(version: 1, files: entries.sorted { $0.path < $1.path }))
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw Failure(description: "cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        let (_, writeError) = data.withUnsafeBytes { FileIO.writeAll(fd, $0) }
        let syncFailed = fsync(fd) != 0
        close(fd)
        if let writeError {
            throw Failure(description: "cannot write \(temporary): \(String(cString: strerror(writeError)))")
        }
        if syncFailed { throw Failure(description: "cannot fsync \(temporary): \(String(cString: strerror(errno)))") }
        guard rename(temporary, path) == 0 else {
            throw Failure(description: "cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
        }
        FileIO.syncDirectory(directory)
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the exactly-once file sink is about to append, saved and synced
/// before the bytes are written: per file, where the append starts and a
/// hash of each page-aligned block of it.
///
/// After a crash, a file longer than its ledger says holds either this
/// sink's own unacknowledged append (cut it: the source delivers those
/// records again) or bytes somebody else added (keep them). Only the intent
/// tells them apart: bytes are cut only when they are exactly a prefix of the
/// recorded append, ending at its end or at a page boundary (where a write
/// interrupted by `kill -9` or a power loss stops). Anything else is refused,
/// never deleted.
struct WriteIntent: Equatable {
    /// One file's planned append.
    struct Append: Equatable {
        var path: String
        /// The file's size before the append.
        var start: Int64
        /// Bytes appended.
        var length: Int64
        /// Hashes of the append's blocks: the first ends at the next multiple
        /// of ``blockSize`` in the file, the others are ``blockSize`` long,
        /// the last one ends with the append.
        var blockHashes: [UInt64]

        var end: Int64 { start + length }
    }

    /// The file-offset alignment of blocks: the page size, the unit in which
    /// an interrupted write leaves data behind.
    static let blockSize: Int64 = 4096

    var appends: [Append]

    /// Describes appending `bytes` at `start` of `path`.
    static func append(path: String, start: Int64, bytes: UnsafeRawBufferPointer) -> Append {
        var hashes: [UInt64] = []
        var offset = 0
        var position = start
        while offset < bytes.count {
            let boundary = (position / blockSize + 1) * blockSize
            let take = min(Int(boundary - position), bytes.count - offset)
            hashes.append(hash(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + take])))
            offset += take
            position += Int64(take)
        }
        return Append(path: path, start: start, length: Int64(bytes.count), blockHashes: hashes)
    }

    /// A 64-bit hash, eight bytes at a time (FNV-1a style mixing with a final
    /// avalanche): not cryptographic, it tells our own bytes from others'.
    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var state: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(bytes.count)
        var index = 0
        while index + 8 <= bytes.count {
            let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            state = (state ^ word) &* 0x0000_0100_0000_01B3
            state ^= state >> 29
            index += 8
        }
        while index < bytes.count {
            state = (state ^ UInt64(bytes[index])) &* 0x0000_0100_0000_01B3
            index += 1
        }
        state ^= state >> 33
        state = state &* 0xFF51_AFD7_ED55_8CCD
        state ^= state >> 33
        return state
    }

    /// Whether the `size - append.start` bytes after `append.start` in the
    /// open file `fd` are a prefix of `append` that an interrupted write can
    /// leave: the whole append, or its blocks up to a block boundary.
    static func isOwnPrefix(_ append: Append, fd: Int32, size: Int64) -> Bool {
        guard size > append.start, size <= append.end else { return false }
        guard size == append.end || size % blockSize == 0 else { return false }
        var position = append.start
        var buffer = [UInt8](repeating: 0, count: Int(blockSize))
        for expected in append.blockHashes {
            guard position < size else { return true }
            let boundary = min((position / blockSize + 1) * blockSize, append.end)
            let count = Int(boundary - position)
            let read = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, off_t(position)) }
            guard read == count else { return false }
            let actual = buffer.withUnsafeBytes { hash(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            guard actual == expected else { return false }
            position = boundary
        }
        return position >= size
    }

    // MARK: - Encoding

    private static let magic: UInt32 = 0x4C50_4931  // "LPI1"

    /// A binary encoding ending in a hash of everything before it, so that a
    /// torn save reads as no intent at all (whose files are then refused, not cut).
    func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        put(Self.magic)
        put(UInt32(appends.count))
        for append in appends {
            let path = Array(append.path.utf8)
            put(UInt32(path.count))
            bytes.append(contentsOf: path)
            put(append.start)
            put(append.length)
            put(UInt32(append.blockHashes.count))
            for hash in append.blockHashes { put(hash) }
        }
        put(bytes.withUnsafeBytes { Self.hash($0) })
        return bytes
    }

    /// Decodes ``encoded()``; `nil` for anything torn or foreign.
    init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 16 else { return nil }
        let body = bytes.count - 8
        let stored = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: body, as: UInt64.self) }
        guard
            UInt64(littleEndian: stored)
                == bytes.withUnsafeBytes({ Self.hash(UnsafeRawBufferPointer(rebasing: $0[0..<body])) })
        else { return nil }
        var index = 0
        func take<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard index + MemoryLayout<T>.size <= body else { return nil }
            defer { index += MemoryLayout<T>.size }
            return T(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index, as: T.self) })
        }
        guard take(UInt32.self) == Self.magic, let count = take(UInt32.self) else { return nil }
        var appends: [Append] = []
        for _ in 0..<count {
            guard let pathLength = take(UInt32.self), index + Int(pathLength) <= body else { return nil }
            let path = String(decoding: bytes[index..<index + Int(pathLength)], as: UTF8.self)
            index += Int(pathLength)
            guard let start = take(Int64.self), let length = take(Int64.self), let blocks = take(UInt32.self)
            else { return nil }
            var hashes: [UInt64] = []
            for _ in 0..<blocks {
                guard let hash = take(UInt64.self) else { return nil }
                hashes.append(hash)
            }
            appends.append(Append(path: path, start: start, length: length, blockHashes: hashes))
        }
        self.appends = appends
    }

    init(appends: [Append]) {
        self.appends = appends
    }
}

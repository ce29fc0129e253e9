#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Host names in partitions and subjects: where they come from in a line,
/// and the one rule that makes them safe.
///
/// The rule, shared with the reference publishers in the benchmarks: every
/// byte outside `[A-Za-z0-9_.-]` becomes `_`, leading and trailing dots are
/// dropped, runs of dots become one dot, and an empty result is `unknown`. So
/// `db-01.prod.example.com` stays as it is (the origin design's
/// `logs.p1.web1.example.net`), `we b*1` becomes `we_b_1`, and a host can
/// never add an empty or wildcard token to a subject.
public enum HostName {
    /// Whether `text` is already safe (sanitising it would not change it).
    @inline(__always)
    public static func isSafe(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { isSafe(UnsafeRawBufferPointer($0)) }
    }

    /// Whether `bytes` are already safe.
    @inlinable @inline(__always)
    public static func isSafe(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let first = bytes.first, let last = bytes.last, first != dot, last != dot else { return false }
        var previousDot = false
        for byte in bytes {
            let isDot = byte == dot
            if !isAllowed(byte) || (isDot && previousDot) { return false }
            previousDot = isDot
        }
        return true
    }

    @usableFromInline static var dot: UInt8 { UInt8(ascii: ".") }

    /// `[A-Za-z0-9_.-]`, as two 64-bit masks.
    @inlinable @inline(__always)
    static func isAllowed(_ byte: UInt8) -> Bool {
        // Bits 45 '-', 46 '.', 48-57 '0'-'9'.
        let low: UInt64 = (1 << 45) | (1 << 46) | (0x3FF << 48)
        // Bits 65-90 'A'-'Z', 95 '_', 97-122 'a'-'z', minus 64.
        let high: UInt64 = (0x3FF_FFFF << 1) | (1 << 31) | (0x3FF_FFFF << 33)
        if byte < 64 { return low & (1 << UInt64(byte)) != 0 }
        if byte < 128 { return high & (1 << UInt64(byte - 64)) != 0 }
        return false
    }

    /// Applies the safety rule to a string, returning it unchanged (no copy)
    /// when it is already safe.
    public static func sanitize(_ text: String) -> String {
        isSafe(text) ? text : sanitize(text.utf8)
    }

    /// Applies the safety rule to `raw`.
    public static func sanitize(_ raw: some Collection<UInt8>) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(raw.count)
        for byte in raw {
            var byte = byte
            if !isAllowed(byte) { byte = UInt8(ascii: "_") }
            if byte == UInt8(ascii: "."), output.isEmpty || output.last == UInt8(ascii: ".") { continue }
            output.append(byte)
        }
        while output.last == UInt8(ascii: ".") { output.removeLast() }
        return output.isEmpty ? "unknown" : String(decoding: output, as: UTF8.self)
    }

    /// The host field of a line, if its format has one: RFC 3164
    /// `<PRI>Mmm dd hh:mm:ss HOST`, RFC 5424 `<PRI>1 TIMESTAMP HOST` (not `-`),
    /// JSON `"host":"HOST"`, logfmt `host=HOST`.
    public static func fromLine(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let bytes = line.bindMemory(to: UInt8.self)
        guard let first = bytes.first else { return nil }
        func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: line[range])
        }
        switch first {
        case UInt8(ascii: "<"):
            guard let close = bytes.prefix(5).firstIndex(of: UInt8(ascii: ">")) else { return nil }
            let rest = close + 1
            if bytes.count > rest + 2, bytes[rest] >= 0x31, bytes[rest] <= 0x39, bytes[rest + 1] == 0x20 {
                guard let range = field(bytes, from: rest, index: 2) else { return nil }
                return range.count == 1 && bytes[range.lowerBound] == UInt8(ascii: "-") ? nil : slice(range)
            }
            if bytes.count > rest + 16, bytes[rest + 15] == 0x20 {
                return field(bytes, from: rest + 16, index: 0).map(slice)
            }
            return nil
        case UInt8(ascii: "{"):
            return value(after: "\"host\":\"", anchor: 6, in: bytes, endingAt: UInt8(ascii: "\"")).map(slice)
        default:
            if SeverityParser.hasPrefix(bytes, "host=") {
                return field(bytes, from: 5, index: 0).map(slice)
            }
            return value(after: " host=", anchor: 5, in: bytes, endingAt: 0x20).map(slice)
        }
    }

    /// The `index`-th space-separated field starting at `start`.
    static func field(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, index: Int) -> Range<Int>? {
        var position = start
        for _ in 0..<index {
            guard let space = bytes[position...].firstIndex(of: 0x20) else { return nil }
            position = space + 1
        }
        let end = bytes[position...].firstIndex(of: 0x20) ?? bytes.count
        return position..<end
    }

    /// The bytes after the first occurrence of `key`, up to `end` (or the
    /// line's end). The search jumps (memchr) between occurrences of the
    /// key's byte at `anchor`, chosen to be rare in lines (`=`, `:`), and
    /// compares the whole key there.
    static func value(
        after key: StaticString, anchor: Int, in bytes: UnsafeBufferPointer<UInt8>, endingAt end: UInt8
    ) -> Range<Int>? {
        guard let base = bytes.baseAddress, bytes.count >= key.utf8CodeUnitCount else { return nil }
        let length = key.utf8CodeUnitCount
        let anchorByte = Int32(key.utf8Start[anchor])
        var position = anchor  // where the next anchor byte may be
        var found: Int?
        while position < bytes.count, let hit = memchr(base + position, anchorByte, bytes.count - position) {
            let at = UnsafeRawPointer(hit) - UnsafeRawPointer(base) - anchor
            if at + length <= bytes.count, memcmp(base + at, key.utf8Start, length) == 0 {
                found = at
                break
            }
            position = at + anchor + 1
        }
        guard let foundAt = found else { return nil }
        let start = foundAt + length
        let stop =
            memchr(base + start, Int32(end), bytes.count - start).map { UnsafeRawPointer($0) - UnsafeRawPointer(base) }
            ?? bytes.count
        return start..<stop
    }
}

/// The stable hash functions a partition stage can use.
public enum PartitionHash: String, Sendable, CaseIterable {
    /// CRC-32/IEEE (zlib's `crc32`, Go's `crc32.ChecksumIEEE`): the default,
    /// so other tools compute the same partition.
    case crc32
    /// 32-bit FNV-1a.
    case fnv1a

    /// The hash of `bytes`.
    public func hash(_ bytes: some Sequence<UInt8>) -> UInt32 {
        switch self {
        case .crc32:
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                crc = PartitionHash.crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
            }
            return crc ^ 0xFFFF_FFFF
        case .fnv1a:
            var hash: UInt32 = 0x811C_9DC5
            for byte in bytes {
                hash = (hash ^ UInt32(byte)) &* 0x0100_0193
            }
            return hash
        }
    }

    static let crcTable: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 {
            value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1
        }
        return value
    }
}

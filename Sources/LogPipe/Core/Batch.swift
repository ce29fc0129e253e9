import NIOCore

/// The unit that moves between stages: a group of records.
///
/// Stages exchange batches, never single lines, so every async hop is paid
/// once per hundreds of records. Every record carries a link to the
/// acknowledgement token of the batch its source emitted, so a batch may mix
/// records of several sources (fan-in) and may be filtered or reordered
/// freely; acknowledgements still reach the right source.
///
/// A stage that removes records must acknowledge them as dropped; use
/// ``removeAll(where:)`` which does it. A sink calls ``acknowledge(_:)`` once
/// the records are safely delivered.
public struct Batch: Sendable {
    /// The records, in order.
    public var records: [Record]

    /// Creates a batch of records. Records built by a source are linked to an
    /// acknowledgement token when the source emits them.
    public init(records: [Record]) {
        self.records = records
    }

    /// The number of records.
    public var count: Int { records.count }

    /// Whether the batch has no records.
    public var isEmpty: Bool { records.isEmpty }

    /// Bytes of the records' lines, together.
    public var byteCount: Int {
        var total = 0
        for record in records { total &+= record.bytes.readableBytes }
        return total
    }

    /// Removes the records for which `shouldDrop` is true and acknowledges them
    /// as ``DeliveryStatus/dropped``. The records that stay keep their order;
    /// nothing is copied.
    public mutating func removeAll(where shouldDrop: (Record) throws -> Bool) rethrows {
        var runs = AcknowledgementRuns()
        var kept = 0
        try records.withUnsafeMutableBufferPointer { buffer in
            for index in buffer.indices {
                if try shouldDrop(buffer[index]) {
                    runs.add(buffer[index].acknowledgement) { $0.release(runs: $1, status: .dropped) }
                } else {
                    if kept != index { buffer.swapAt(kept, index) }
                    kept += 1
                }
            }
        }
        runs.finish { $0.release(runs: $1, status: .dropped) }
        records.removeLast(records.count - kept)
    }

    /// Reports every record of the batch done with `status`, releasing this
    /// branch's hold on it. Call it once per batch a sink received.
    public func acknowledge(_ status: DeliveryStatus = .delivered) {
        Batch.acknowledge(records, status: status)
    }

    /// Reports the given records done with `status`.
    public static func acknowledge(_ records: [Record], status: DeliveryStatus = .delivered) {
        acknowledge(records[...], status: status)
    }

    /// Reports a part of a batch done with `status`, without copying it out.
    public static func acknowledge(_ records: ArraySlice<Record>, status: DeliveryStatus = .delivered) {
        records.withUnsafeBufferPointer { buffer in
            buffer.forEachAcknowledgementRun { token, runs in token.release(runs: runs, status: status) }
        }
    }

    /// Reports `records` done in one pass: those at the positions in `failed`
    /// (0 is the first record) as ``DeliveryStatus/failed``, the others as
    /// ``DeliveryStatus/delivered``. For a sink that gave up on some records
    /// of a batch under a policy (too large, refused by the server).
    public static func acknowledge(_ records: ArraySlice<Record>, failing failed: Set<Int>) {
        var delivered = AcknowledgementRuns()
        var failing = AcknowledgementRuns()
        records.withUnsafeBufferPointer { buffer in
            for index in buffer.indices {
                if failed.contains(index) {
                    failing.add(buffer[index].acknowledgement) { $0.release(runs: $1, status: .failed) }
                } else {
                    delivered.add(buffer[index].acknowledgement) { $0.release(runs: $1, status: .delivered) }
                }
            }
        }
        delivered.finish { $0.release(runs: $1, status: .delivered) }
        failing.finish { $0.release(runs: $1, status: .failed) }
    }

    /// Adds `extra` holds to every record, so that `extra + 1` branches must
    /// each acknowledge it before it is done.
    func retainAcknowledgements(extra: Int) {
        guard extra > 0 else { return }
        records.forEachAcknowledgementRun { token, runs in
            token.retain(runs: runs, extra: UInt32(extra))
        }
    }
}

extension ByteBuffer {
    /// Appends each record's bytes followed by `\n`: the on-disk and on-pipe
    /// form of records for line-oriented sinks.
    public mutating func writeLines(_ records: some Collection<Record>) {
        // In place when the records are contiguous: iterating a collection
        // copies each record (a retain and release per field).
        let done: Void? = records.withContiguousStorageIfAvailable { buffer in
            var total = 0
            for index in buffer.indices { total += buffer[index].bytes.readableBytes + 1 }
            reserveCapacity(minimumWritableBytes: total)
            for index in buffer.indices {
                writeImmutableBuffer(buffer[index].bytes)
                writeInteger(UInt8(ascii: "\n"))
            }
        }
        if done != nil { return }
        reserveCapacity(minimumWritableBytes: records.reduce(0) { $0 + $1.bytes.readableBytes + 1 })
        for record in records { writeLine(record) }
    }

    /// Appends the record's bytes followed by `\n`.
    public mutating func writeLine(_ record: Record) {
        writeImmutableBuffer(record.bytes)
        writeInteger(UInt8(ascii: "\n"))
    }
}

import NIOCore
import Testing

@testable import LogPipe

@Suite struct LineSplitterTests {
    /// Feeds `input` in chunks of the given sizes and returns (line, offset) pairs.
    func split(
        _ input: [UInt8], chunks: [Int], max: Int = 1 << 20, oversize: OversizePolicy = .split, stripCR: Bool = false
    )
        -> (lines: [[UInt8]], offsets: [Int64], oversize: Int)
    {
        var splitter = LineSplitter(maxLineBytes: max, oversize: oversize, stripCarriageReturn: stripCR)
        var lines: [[UInt8]] = []
        var offsets: [Int64] = []
        var position = 0
        var chunkIndex = 0
        while position < input.count {
            let size = Swift.min(chunks[chunkIndex % chunks.count], input.count - position)
            chunkIndex += 1
            var buffer = splitter.makeReadBuffer(capacity: size)
            buffer.writeBytes(input[position..<(position + size)])
            position += size
            splitter.consume(buffer) { line, offset in
                lines.append(Array(line.readableBytesView))
                offsets.append(offset)
            }
        }
        splitter.finish { line, offset in
            lines.append(Array(line.readableBytesView))
            offsets.append(offset)
        }
        return (lines, offsets, splitter.oversizeLines)
    }

    @Test func keepsCarriageReturnsInvalidUTF8AndTheLastLineWithoutNewline() {
        let input: [UInt8] = Array("a\r\nb\n".utf8) + [0xFF, 0xFE, 0x0A] + Array("\nlast".utf8)
        for chunk in [1, 2, 3, 100] {
            let result = split(input, chunks: [chunk])
            #expect(result.lines == [Array("a\r".utf8), Array("b".utf8), [0xFF, 0xFE], [], Array("last".utf8)])
            #expect(result.offsets == [0, 3, 5, 8, 9])
        }
        #expect(split(input, chunks: [4], stripCR: true).lines.first == Array("a".utf8))
    }

    /// A line of exactly N × max bytes makes N records and nothing more,
    /// wherever the reads end (the newline alone in the next read included);
    /// a line of exactly max bytes is not oversize.
    @Test func linesOfWholeMultiplesOfTheMaximumMakeNoEmptyRecord() {
        let max = 4
        for pieces in 1...3 {
            let line = (0..<(pieces * max)).map { UInt8(ascii: "a") + UInt8($0 % 26) }
            let input = line + [0x0A] + Array("next\n".utf8)
            for chunk in 1...(input.count) {
                let result = split(input, chunks: [chunk], max: max)
                let expected = stride(from: 0, to: line.count, by: max).map { Array(line[$0..<($0 + max)]) }
                #expect(result.lines == expected + [Array("next".utf8)], "pieces \(pieces), chunk \(chunk)")
                #expect(result.oversize == (pieces > 1 ? 1 : 0), "pieces \(pieces), chunk \(chunk)")
                let truncated = split(input, chunks: [chunk], max: max, oversize: .truncate)
                #expect(truncated.lines == [Array(line[0..<max]), Array("next".utf8)])
            }
        }
        // CRLF: the \r of a line of max bytes plus \r is stripped, not split off.
        let crlf = split(Array("abcd\r\n".utf8), chunks: [5, 1], max: 4, stripCR: true)
        #expect(crlf.lines == [Array("abcd".utf8)])
    }

    @Test func splitsOverlongLinesAcrossReads() {
        let input = Array(String(repeating: "x", count: 25).utf8) + [0x0A] + Array("ok\n".utf8)
        for chunk in [1, 7, 10, 64] {
            let result = split(input, chunks: [chunk], max: 10)
            #expect(result.lines.map(\.count) == [10, 10, 5, 2], "chunk \(chunk)")
            #expect(result.offsets == [0, 10, 20, 26])
            #expect(result.oversize == 1)
        }
    }

    @Test func truncatesOverlongLinesAcrossReads() {
        let input =
            Array(String(repeating: "x", count: 25).utf8) + [0x0A] + Array("ok\n".utf8)
            + Array(String(repeating: "y", count: 12).utf8)
        for chunk in [1, 7, 10, 64] {
            let result = split(input, chunks: [chunk], max: 10, oversize: .truncate)
            #expect(result.lines.map(\.count) == [10, 2, 10], "chunk \(chunk)")
            #expect(result.oversize == 2)
        }
    }

    @Test func randomChunkingNeverChangesTheLines() {
        var random = SplitMix64(seed: 7)
        var input: [UInt8] = []
        for _ in 0..<500 {
            let length = Int(random.next() % 40)
            input += (0..<length).map { _ in UInt8(32 + random.next() % 90) }
            input.append(random.next() % 5 == 0 ? 0x0D : 0x41)
            input.append(0x0A)
        }
        let reference = input.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast().map(Array.init)
        for seed in 0..<20 {
            var chunkRandom = SplitMix64(seed: UInt64(seed))
            let chunks = (0..<50).map { _ in 1 + Int(chunkRandom.next() % 300) }
            #expect(split(input, chunks: chunks).lines == reference)
        }
    }
    /// The stdin source's records: one per span, each its own slice of the
    /// read buffer (reader index 0, as any slice), with its offset and the
    /// source's fields; changing one record leaves the others alone.
    @Test func recordsFromSpansAreSlicesWithTheirOffsets() {
        var splitter = LineSplitter(maxLineBytes: 1024, oversize: .split, stripCarriageReturn: false)
        var first = splitter.makeReadBuffer(capacity: 64)
        first.writeString("alpha\nbe")
        var spans: [LineSpan] = []
        splitter.consumeSpans(first) { spans.append(LineSpan(start: $0, length: $1, offset: $2)) }
        var second = splitter.makeReadBuffer(capacity: 64)
        second.writeString("ta\n\ngamma\n")
        splitter.consumeSpans(second) { spans.append(LineSpan(start: $0, length: $1, offset: $2)) }
        let now = Timestamp.now()
        var records = LineSpan.records(
            Array(spans[1...]), in: second, source: "in", origin: "stdin", host: "a-very-long-host-name-01",
            receivedAt: now)
        #expect(records.map(\.text) == ["beta", "", "gamma"])
        #expect(records.map(\.offset) == [6, 11, 12])
        #expect(records.allSatisfy { $0.bytes.readerIndex == 0 && $0.bytes.capacity == $0.bytes.readableBytes })
        #expect(records[2].bytes.getString(at: 0, length: 5) == "gamma")
        #expect(records.allSatisfy { $0.source == "in" && $0.origin == "stdin" && $0.receivedAt == now })
        #expect(
            records.allSatisfy { $0.host == "a-very-long-host-name-01" && $0.partition == nil && $0.fields.isEmpty })
        records[0].bytes.writeString("!")
        records[0].host = "other"
        #expect(records.map(\.text) == ["beta!", "", "gamma"])
        #expect(records[1].host == "a-very-long-host-name-01")
    }
}

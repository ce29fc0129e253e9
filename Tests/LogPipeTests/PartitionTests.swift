import NIOCore
import Testing

@testable import LogPipe

@Suite struct PartitionTests {
    /// CRC-32/IEEE values from Python's zlib.crc32 (the same function as Go's
    /// crc32.ChecksumIEEE used by the reference publisher natspub), with the
    /// partitions for 8 and 16.
    static let table: [(String, UInt32, Int, Int)] = [
        ("web-01", 0xD915_B815, 5, 5),
        ("web-06", 0x4771_2DB6, 6, 6),
        ("api-01", 0x739B_C660, 0, 0),
        ("db-01.prod.example.com", 0x122D_DD2D, 5, 13),
        ("cache-01", 0x8350_9A53, 3, 3),
        ("worker-08", 0x35F1_FDCA, 2, 10),
        ("lb-01.edge.example.net", 0x291B_47B2, 2, 2),
        ("kafka-3", 0xFBCF_739F, 7, 15),
        ("ip-10-0-1-7.ec2.internal", 0x2E6B_8850, 0, 0),
        ("mail", 0x5126_AC48, 0, 8),
        ("ns1", 0xE8C4_1537, 7, 7),
        ("vpn-gw", 0x9ADA_E3CC, 4, 12),
        ("build-agent-7", 0x27F8_0BCD, 5, 13),
        ("backup01", 0x3C27_0A61, 1, 1),
        ("10.20.0.5", 0x14AD_3F31, 1, 1),
        ("unknown", 0xAD26_A7C7, 7, 7),
        ("we_b_1", 0x42F7_25FC, 4, 12),
        ("a.b", 0x1EEF_715D, 5, 13),
    ]

    @Test(arguments: table)
    func crc32PartitionsMatchTheReference(host: String, crc: UInt32, of8: Int, of16: Int) {
        #expect(PartitionHash.crc32.hash(host.utf8) == crc)
        var options = PartitionTransform.Options()
        #expect(PartitionTransform(options: options).partition(ofHost: host) == of8)
        options.partitions = 16
        #expect(PartitionTransform(options: options).partition(ofHost: host) == of16)
    }

    @Test func fnv1aKnownValues() {
        #expect(PartitionHash.fnv1a.hash("".utf8) == 0x811C_9DC5)
        #expect(PartitionHash.fnv1a.hash("a".utf8) == 0xE40C_292C)
        #expect(PartitionHash.fnv1a.hash("foobar".utf8) == 0xBF9C_F968)
    }

    @Test(arguments: [
        ("db-01.prod.example.com", "db-01.prod.example.com"),
        ("we b*1", "we_b_1"),
        ("..a..b..", "a.b"),
        ("", "unknown"),
        ("...", "unknown"),
        ("logs.>", "logs._"),
        ("zoë", "zo__"),
        ("host\twith\ttabs", "host_with_tabs"),
    ])
    func sanitize(raw: String, safe: String) {
        #expect(HostName.sanitize(raw.utf8) == safe)
    }

    @Test(arguments: [
        ("<13>Nov 26 10:00:00 web-01 sshd[1]: x", "web-01"),
        ("<13>Nov  6 10:00:00 db-01.prod.example.com kernel: x", "db-01.prod.example.com"),
        ("<135>1 2026-11-26T10:00:00.026Z db-03.prod.example.com app8 4277 ID56 - x", "db-03.prod.example.com"),
        ("<135>1 2026-11-26T10:00:00.026Z - app8 4277 ID56 - x", nil),
        (#"{"ts":"x","level":"info","host":"api-03","msg":"m"}"#, "api-03"),
        ("ts=1 level=debug host=kafka-2 caller=x", "kafka-2"),
        ("host=ns1 level=info", "ns1"),
        (#"10.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1"#, nil),
        ("2026-11-26 INFO [worker-1] plain", nil),
        ("", nil),
    ])
    func hostFromLine(line: String, host: String?) {
        let found = Array(line.utf8).withUnsafeBytes { bytes in
            HostName.fromLine(bytes).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(found == host)
    }

    func record(_ line: String, host: String = "this-machine", fields: [String: String] = [:]) -> Record {
        Record(
            bytes: ByteBuffer(string: line), source: "in", origin: "stdin", host: host, receivedAt: .now(),
            fields: fields)
    }

    @Test func stageSetsHostPartitionAndSubject() throws {
        var batch = Batch(records: [
            record("<13>Nov 26 10:00:00 web-01 sshd[1]: x"),
            record(#"{"host":"we b*1"}"#),
            record("plain line"),
            record("plain line", fields: ["host": "db-01.prod.example.com"]),
        ])
        try PartitionTransform(options: .init()).transform(&batch)
        #expect(batch.records.map(\.host) == ["web-01", "we_b_1", "this-machine", "db-01.prod.example.com"])
        #expect(
            batch.records.map(\.partition) == [
                5, 4, PartitionTransform(options: .init()).partition(ofHost: "this-machine"), 5,
            ])
        #expect(
            batch.records.map(\.subject) == [
                "logs.p5.web-01", "logs.p4.we_b_1", "logs.p\(batch.records[2].partition!).this-machine",
                "logs.p5.db-01.prod.example.com",
            ])

        var lineOnly = PartitionTransform.Options()
        lineOnly.host = .line
        lineOnly.subject = try Template("{severity}.{host}.p{partition}")
        var second = Batch(records: [record("plain line")])
        try PartitionTransform(options: lineOnly).transform(&second)
        #expect(second.records[0].host == "unknown")
        #expect(second.records[0].subject == "unknown.unknown.p7")
    }

    /// The host cache returns a slot only for the exact raw host it holds;
    /// colliding hosts replace each other, an empty host is a key like any
    /// other, hosts over 64 bytes are never cached; with any cache size the
    /// stage sets what it sets without one.
    @Test func hostCacheHitsOnlyItsOwnHostAndNeverChangesTheResult() throws {
        func withBytes<T>(_ text: String, _ body: (UnsafeRawBufferPointer) -> T) -> T {
            Array(text.utf8).withUnsafeBytes(body)
        }
        var one = HostCache(capacity: 1)  // every host collides
        withBytes("web-01") { one.store($0, HostCache.Entry(host: "web-01", partition: 5, subject: "s.web-01")) }
        #expect(withBytes("web-01") { one.lookup($0) } == 0)
        #expect(withBytes("web-02") { one.lookup($0) } == nil)
        #expect(withBytes("web-0") { one.lookup($0) } == nil)
        var target = record("x")
        one.assign(0, to: &target)
        #expect(target.host == "web-01" && target.partition == 5 && target.subject == "s.web-01")
        withBytes("") { one.store($0, HostCache.Entry(host: "unknown", partition: 1, subject: "s.unknown")) }
        #expect(withBytes("web-01") { one.lookup($0) } == nil)
        #expect(withBytes("") { one.lookup($0) } == 0)
        let long = String(repeating: "h", count: 65)
        var wide = HostCache(capacity: 16)
        withBytes(long) { wide.store($0, HostCache.Entry(host: long, partition: 0, subject: "s")) }
        #expect(withBytes(long) { wide.lookup($0) } == nil)
        #expect(withBytes(String(long.dropLast())) { wide.lookup($0) } == nil)
        #expect(HostCache(capacity: 0).lookup(UnsafeRawBufferPointer(start: nil, count: 0)) == nil)

        let stage = PartitionTransform(options: .init())
        let lines = (0..<500).map { index -> String in
            let host = index % 7 == 0 ? String(repeating: "x", count: 60 + index % 10) : "host-\(index % 37)"
            return index % 2 == 0 ? "ts=1 host=\(host) m" : #"{"host":"\#(host)"}"#
        }
        var expected = Batch(records: lines.map { record($0) })
        try stage.transform(&expected)
        for capacity in [1, 2, 4096] {
            var cache = HostCache(capacity: capacity)
            var records = lines.map { record($0) }
            for index in records.indices { stage.assign(&records[index], cache: &cache) }
            #expect(records.map(\.host) == expected.records.map(\.host))
            #expect(records.map(\.partition) == expected.records.map(\.partition))
            #expect(records.map(\.subject) == expected.records.map(\.subject))
        }
    }

    @Test func subjectPatternReadsFieldsBack() throws {
        let pattern = try SubjectPattern("logs.p{partition}.{host}")
        #expect(pattern.match("logs.p3.web1.example.net") == ["partition": "3", "host": "web1.example.net"])
        #expect(pattern.match("logs.p3") == nil)
        #expect(pattern.match("logs.p.web") == nil)
        #expect(pattern.match("metrics.p3.web") == nil)
        #expect(try SubjectPattern("{env}.logs.{host}").match("a.b.logs.h") == nil)  // one token per placeholder
        var record = record("x")
        #expect(pattern.apply("logs.p12.db-01.prod", to: &record))
        #expect(record.host == "db-01.prod")
        #expect(record.partition == 12)
        let withField = try SubjectPattern("{env}.logs.{host}")
        #expect(withField.match("prod.logs.a.b") == ["env": "prod", "host": "a.b"])
        #expect(throws: Template.ParseError.self) { try SubjectPattern("logs.{partition}{host}") }
        let trailing = try SubjectPattern("app.{name}.log.{level}.end")
        #expect(trailing.match("app.api.log.warn.end") == ["name": "api", "level": "warn"])
        #expect(trailing.match("app.api.log.warn.ends") == nil)
        #expect(trailing.match("app.api.log..end") == nil)  // empty value
        #expect(trailing.match("app.ü.log.x.end") == ["name": "ü", "level": "x"])
        let long = try SubjectPattern("{a}::sep::{b}")
        #expect(long.match("x::sep::y::sep::z") == ["a": "x", "b": "y::sep::z"])
        record.host = "before"
        record.partition = nil
        #expect(!pattern.apply("logs.p3", to: &record))
        #expect(record.host == "before" && record.partition == nil)
    }
}

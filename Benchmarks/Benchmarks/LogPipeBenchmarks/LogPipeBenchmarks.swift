// Micro benchmarks of LogPipe's hot paths. Each reports wall time, CPU time
// and malloc counts per operation (scaled: `*` in the table means per inner
// iteration, e.g. per line). Input: the corpus named by LOGPIPE_BENCH_CORPUS,
// else lines generated here (`Corpus`).

import Benchmark
import Foundation
@_spi(Benchmarks) import LogPipe
import MallocInterposerSwift
import NATSClient
import NIOCore
import RawPCRE2

/// The filter of the shared bench scripts (`FILTER_RE`).
let filterPattern = #"\b(ERROR|FATAL|CRIT(ICAL)?|WARN(ING)?)\b"#

let metrics: [BenchmarkMetric] = [.wallClock, .cpuTotal, .throughput, .mallocCountTotal]

/// Allocations per 1,000 records, measured around the work itself (not
/// scaled, so a fraction of an allocation per record stays visible).
let mallocsPer1000 = BenchmarkMetric.custom("mallocs per 1000 records", useScalingFactor: false)

func countMallocs(records: Int, _ benchmark: Benchmark, _ work: () async throws -> Void) async rethrows {
    let before = MallocInterposerSwift.getStatistics().mallocCount
    try await work()
    let after = MallocInterposerSwift.getStatistics().mallocCount
    benchmark.measurement(mallocsPer1000, (after - before) * 1000 / max(records, 1))
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, maxDuration: .seconds(2), maxIterations: 1000)

    // Line splitting: one 1 MiB read buffer cut into line slices.
    Benchmark("LineSplitter 1 MiB", configuration: .init(metrics: metrics + [mallocsPer1000])) { benchmark in
        let chunk = Corpus.shared.bytes(upTo: 1 << 20)
        var input = ByteBuffer(bytes: chunk)
        let lines = chunk.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var splitter = BenchmarkAccess.LineSplitter(maxLineBytes: 1 << 20)
            var count = 0
            await countMallocs(records: lines, benchmark) {
                splitter.consume(input) { _ in count += 1 }
            }
            precondition(count == lines)
            input.moveReaderIndex(to: 0)
        }
    }

    // A regex match per line: the Swift wrapper against pcre2_jit_match
    // called from C, same lines, same pattern.
    let lines = Corpus.shared.lines(10_000)
    let scaled = Benchmark.Configuration(metrics: metrics + [mallocsPer1000], scalingFactor: .kilo)
    Benchmark("Regex per line, PCRE2Matcher", configuration: scaled) { benchmark in
        let matcher = try PCRE2Regex(filterPattern).makeMatcher()
        var matches = 0
        benchmark.startMeasurement()
        await countMallocs(records: 1000, benchmark) {
            for index in benchmark.scaledIterations {
                lines[index % lines.count].withUnsafeBytes { if matcher.match($0) == .match { matches += 1 } }
            }
        }
        blackHole(matches)
    }
    Benchmark("Regex per line, raw C pcre2_jit_match", configuration: scaled) { benchmark in
        let regex = raw_pcre2_compile(filterPattern)!
        defer { raw_pcre2_free(regex) }
        var matches = 0
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            lines[index % lines.count].withUnsafeBufferPointer {
                if raw_pcre2_match(regex, $0.baseAddress, $0.count) > 0 { matches += 1 }
            }
        }
        blackHole(matches)
    }

    // Severity recognition per line (syslog PRI, JSON level, logfmt, plain words).
    Benchmark("Severity parse per line", configuration: scaled) { benchmark in
        var found = 0
        await countMallocs(records: 1000, benchmark) {
            for index in benchmark.scaledIterations {
                lines[index % lines.count].withUnsafeBytes { if SeverityParser.parse($0) != nil { found += 1 } }
            }
        }
        blackHole(found)
    }

    // A batch crossing one edge (bounded channel, capacity 4) between two
    // tasks: time and mallocs per record (1,000 records per iteration with
    // one record per batch, 1,000,000 with 64 or 1,024).
    for batchSize in [1, 64, 1024] {
        Benchmark(
            "Batch hop, \(batchSize) records per batch",
            configuration: .init(
                metrics: metrics + [mallocsPer1000], scalingFactor: batchSize == 1 ? .kilo : .mega, maxIterations: 50)
        ) { benchmark in
            let record = Record(
                bytes: ByteBuffer(bytes: lines[0]), source: "bench", origin: "stdin", host: "bench-host",
                receivedAt: .now())
            let batch = Batch(records: Array(repeating: record, count: batchSize))
            let total = benchmark.scaledIterations.count
            benchmark.startMeasurement()
            await countMallocs(records: total, benchmark) {
                let edge = BoundedChannel<Batch>(capacity: 4)
                let producer = Task {
                    var sent = 0
                    while sent < total {
                        try await edge.send(batch)
                        sent += batch.count
                    }
                    edge.finishProducer()
                }
                var received = 0
                while let batch = await edge.receive() { received += batch.count }
                _ = await producer.result
                blackHole(received)
            }
        }
    }

    // NATS: encode a batch of 1,024 PUB frames and write it to a nats-server
    // (started here on a free loopback port). One operation = one batch.
    // `encode` makes the batch's buffer from payloads and subjects.
    func natsBatch(
        _ name: String,
        encode: @escaping @Sendable (NATSConnection, [ByteBuffer], [[UInt8]]) throws -> NATSConnection.PublishBuffer
    ) {
        Benchmark(name, configuration: .init(metrics: metrics + [mallocsPer1000], skip: !LocalNATSServer.available)) {
            benchmark in
            let server = try LocalNATSServer()
            defer { server.stop() }
            let connection = try await NATSConnection.connect(NATSOptions(servers: [server.url]))
            let payloads = lines.prefix(1024).map { ByteBuffer(bytes: $0) }
            let subjects = (0..<8).map { Array("logs.p\($0).bench-host".utf8) }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                try await countMallocs(records: payloads.count, benchmark) {
                    try await connection.publish(encode(connection, payloads, subjects))
                }
            }
            benchmark.stopMeasurement()
            await connection.close()
        }
    }

    // Message by message through `PublishBuffer.append`.
    let subjectStrings = (0..<8).map { "logs.p\($0).bench-host" }
    natsBatch("NATS encode + flush, 1024-message batch") { connection, payloads, _ in
        var buffer = connection.makePublishBuffer(capacity: 300 * 1024)
        for (index, payload) in payloads.enumerated() {
            try buffer.append(subject: subjectStrings[index & 7], payload: payload)
        }
        return buffer
    }

    // Through the frame writer, as the nats sink encodes records that carry
    // their subject: sized once, written in place.
    natsBatch("NATS frame writer + flush, 1024-message batch") { connection, payloads, subjects in
        var capacity = 0
        for (index, payload) in payloads.enumerated() {
            capacity += FrameWriter.frameSize(subject: subjects[index & 7].count, payload: payload.readableBytes)
        }
        var buffer = connection.makePublishBuffer(capacity: capacity)
        buffer.appendFrames(capacity: capacity) { writer in
            for index in payloads.indices {
                let written = subjects[index & 7].withUnsafeBytes { subject in
                    payloads[index].withUnsafeReadableBytes { writer.publish(subject: subject, payload: $0) }
                }
                precondition(written)
            }
        }
        return buffer
    }

    // The whole stdin -> regex -> file pipeline in this process, on 200,000
    // lines per iteration: per-record allocations in steady state.
    Benchmark(
        "Pipeline stdin -> regex -> file, 200k lines",
        configuration: .init(metrics: metrics + [mallocsPer1000], maxDuration: .seconds(10), maxIterations: 10)
    ) { benchmark in
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "logpipe-bench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("in.log").path
        let count = 200_000
        try Corpus.shared.write(lines: count, to: input)
        let output = directory.appendingPathComponent("out.log").path
        for _ in benchmark.scaledIterations {
            try? FileManager.default.removeItem(atPath: output)
            let descriptor = open(input, O_RDONLY)
            defer { close(descriptor) }
            var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: directory.path))
            try pipeline.add("in", source: StdinSource(fileDescriptor: descriptor))
            var filter = RegexTransform.Options()
            filter.include = [try PCRE2Regex(filterPattern)]
            try pipeline.add("errors", transform: RegexTransform(options: filter), inputs: ["in"])
            try pipeline.add("out", sink: try FileSink(path: output), inputs: ["errors"])
            benchmark.startMeasurement()
            try await countMallocs(records: count, benchmark) {
                let summary = try await PipelineRunner(pipeline: pipeline).run()
                precondition(summary.progress.emitted == count, "the pipeline read \(summary.progress.emitted) lines")
            }
            benchmark.stopMeasurement()
        }
    }
}

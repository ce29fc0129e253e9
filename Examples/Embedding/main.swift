// An app that embeds LogPipe: it feeds its own log lines into a pipeline
// built in Swift, adds a stage type of its own, and also runs a pipeline file
// that uses that stage type. Run it with `swift run EmbeddingExample`.

import Glibc
import LogPipe
import Logging
import NIOCore
import ServiceLifecycle

/// A custom transform: masks the value of `password=` in every line.
struct RedactPasswords: BatchTransform {
    /// Sets no fields of its own.
    var producedFields: Set<String> { [] }
    func transform(_ batch: inout Batch) throws {
        for index in batch.records.indices {
            let text = batch.records[index].text
            guard let range = text.range(of: "password=") else { continue }
            let valueEnd = text[range.upperBound...].firstIndex(of: " ") ?? text.endIndex
            let redacted = text[..<range.upperBound] + "***" + text[valueEnd...]
            batch.records[index].bytes = ByteBuffer(string: String(redacted))
        }
    }
}

/// A custom filter: keeps lines that mention `keyword`, acknowledging the
/// others as dropped (that is what `removeAll(where:)` does).
struct KeepMatching: BatchTransform {
    /// Sets no fields of its own.
    var producedFields: Set<String> { [] }
    let keyword: String
    func transform(_ batch: inout Batch) throws {
        batch.removeAll { !$0.text.contains(keyword) }
    }
}

// 1. A pipeline built in code, fed from the app's own AsyncStream.
let (lines, continuation) = AsyncStream.makeStream(of: String.self)
var pipeline = Pipeline()
try pipeline.add("app", source: AsyncSequenceSource(lines: lines, host: "example-app"))
try pipeline.add("redact", transform: RedactPasswords(), inputs: ["app"])
try pipeline.add("out", sink: StdoutSink(), inputs: ["redact"])

let run = Task { try await PipelineRunner(pipeline: pipeline).run() }
continuation.yield("user alice logged in password=hunter2 from 10.0.0.1")
continuation.yield("user bob logged out")
continuation.finish()
let summary = try await run.value
print("in-code pipeline: \(summary.progress.emitted) lines, \(summary.progress.unacknowledged) unacknowledged")
fflush(nil)  // print buffers; StdoutSink writes to the descriptor directly

// 2. The same stage types registered by name, used from a pipeline file.
let registry = StageRegistry.standard()
registry.register(
    .transform("redact_passwords", summary: "Masks password= values.", options: []) { _ in RedactPasswords() })
// Options are declared once, bound to the settings they are read into;
// `logpipe stages`-style docs and validation come from the same list.
struct KeepMatchingSettings: StageSettings {
    var keyword = ""
}
registry.register(
    .transform(
        "keep_matching",
        summary: "Keeps lines containing a keyword.",
        options: [
            StageOption<KeepMatchingSettings>.string("keyword", \.keyword, required: true, "Text a line must contain.")
        ]
    ) { settings, _ in KeepMatching(keyword: settings.keyword) }
)
let yaml = """
    sources:
      demo: { type: demo_logs, count: 200, hosts: 3, format: logfmt }
    transforms:
      errors: { type: keep_matching, inputs: [demo], keyword: "level=error" }
      clean: { type: redact_passwords, inputs: [errors] }
    sinks:
      out: { type: stdout, inputs: [clean] }
    """
let loaded = PipelineLoader(registry: registry).load(yaml: yaml, file: "embedded.yaml")
guard let filePipeline = loaded.pipeline else {
    for diagnostic in loaded.diagnostics { print(diagnostic) }
    fatalError("the embedded pipeline file is invalid")
}
let fileSummary = try await PipelineRunner(pipeline: filePipeline).run()
print("pipeline-file run: \(fileSummary.progress.emitted) lines generated, clean: \(fileSummary.isClean)")

// 3. A pipeline as a service in the app's own ServiceGroup
// (swift-service-lifecycle): SIGTERM drains it with the app's other
// services; here it ends by itself after its 50 lines, and the group with it.
let servicePipeline = PipelineService(
    runner: PipelineRunner(
        pipeline: PipelineLoader(registry: registry).load(
            yaml: """
                sources:
                  demo: { type: demo_logs, count: 50 }
                sinks:
                  none: { type: blackhole, inputs: [demo] }
                """
        ).pipeline!))
let group = ServiceGroup(
    configuration: ServiceGroupConfiguration(
        // Ending by itself is no failure: shut the group down gracefully.
        services: [.init(service: servicePipeline, successTerminationBehavior: .gracefullyShutdownGroup)],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: Logger(label: "example")))
try await group.run()
print(
    "service run: \(servicePipeline.summary?.progress.emitted ?? 0) lines, clean: \(servicePipeline.summary?.isClean ?? false)"
)

import Logging
import ServiceLifecycle
import Testing

@testable import LogPipe

/// The pipeline as a swift-service-lifecycle service.
@Suite struct PipelineServiceTests {
    func group(_ service: PipelineService) -> ServiceGroup {
        ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                logger: Logger(label: "test")))
    }

    /// A graceful shutdown of the group stops the sources and drains what
    /// is in flight: every emitted record is acknowledged.
    @Test func aGracefulShutdownOfTheGroupDrainsThePipeline() async throws {
        let emitted = Counter()
        var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: try temporaryDirectory()))
        try pipeline.add("in", source: CountingSource(batches: 1_000_000, batchSize: 10, emitted: emitted))
        try pipeline.add(
            "out", sink: CollectingSink(collected: LockedBox([]), delay: .milliseconds(1)), inputs: ["in"])
        let service = PipelineService(runner: PipelineRunner(pipeline: pipeline))
        let group = group(service)
        let running = Task { try await group.run() }
        try await eventually { emitted.current >= 100 }
        await group.triggerGracefulShutdown()
        try await running.value
        let summary = try #require(service.summary)
        #expect(summary.isClean)
        #expect(summary.progress.emitted == emitted.current)
        #expect(summary.progress.emitted < 10_000_000, "the source stopped")
    }

    /// A pipeline that ends by itself ends the group; one whose stage
    /// fails throws the stage's failure, with the summary kept.
    @Test func endingByItselfAndFailing() async throws {
        var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: try temporaryDirectory()))
        try pipeline.add("in", source: CountingSource(batches: 3, batchSize: 5, emitted: Counter()))
        try pipeline.add("out", sink: BlackholeSink(), inputs: ["in"])
        let finished = PipelineService(runner: PipelineRunner(pipeline: pipeline))
        try await group(finished).run()
        #expect(finished.summary?.progress.emitted == 15)

        var failing = Pipeline(settings: PipelineSettings(dataDirectory: try temporaryDirectory()))
        try failing.add("in", source: CountingSource(batches: 3, batchSize: 5, emitted: Counter()))
        try failing.add("out", sink: FailingSink(), inputs: ["in"])
        let failed = PipelineService(runner: PipelineRunner(pipeline: failing))
        await #expect {
            try await failed.run()
        } throws: { error in
            "\(error)".contains("stage 'out' failed: the disk is full")
        }
        #expect(failed.summary?.failure != nil)
    }
}

struct FailingSink: Sink {
    struct DiskFull: Error, CustomStringConvertible {
        var description: String { "the disk is full" }
    }

    func run(input: BatchInput, context: StageContext) async throws {
        for await _ in input { throw DiskFull() }
    }
}

import CoreMetrics
import Logging
import NATSTestSupport
import Prometheus
import Synchronization
import Testing

@testable import LogPipe
@testable import LogPipeAPI

/// A snapshot with the given stages, running unless said otherwise.
func snapshot(_ stages: [StageProgress], phase: PipelinePhase = .running) -> PipelineProgress {
    PipelineProgress(phase: phase, elapsed: .seconds(3), emitted: 10, acknowledged: 7, stages: stages)
}

func stage(_ name: String, _ kind: StageKind, _ state: StageState, waitingFor: String? = nil) -> StageProgress {
    StageProgress(
        name: name, kind: kind, recordsIn: 4, recordsOut: 3, counters: ["rejected": 1], waitingFor: waitingFor,
        state: state)
}

/// Runs `lines` lines through `in` (a source) → `out` (a blackhole) with
/// metrics sampled every 10 ms into a registry of its own; returns the
/// runner, the summary and the registry's text.
func runPublishingMetrics(lines count: Int) async throws -> (PipelineRunner, RunSummary, String) {
    let registry = PrometheusCollectorRegistry()
    var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: "/tmp/logpipe-unused"))
    let (lines, continuation) = AsyncStream.makeStream(of: String.self)
    for index in 0..<count { continuation.yield("line \(index)") }
    continuation.finish()
    try pipeline.add("in", source: AsyncSequenceSource(lines: lines, host: "h"))
    try pipeline.add("out", sink: BlackholeSink(), inputs: ["in"])
    let runner = PipelineRunner(
        pipeline: pipeline, metricsFactory: PrometheusMetricsFactory(registry: registry),
        metricsInterval: .milliseconds(10))
    let summary = try await runner.run()
    return (runner, summary, registry.emitToString())
}

@Suite struct ReadinessTests {
    @Test func aRunningPipelineWhoseStagesRunIsReady() {
        let ready = Readiness(snapshot([stage("tail", .source, .running), stage("bus", .sink, .running)]))
        #expect(ready.isReady)
        // A source that ended (read_from once, a finished stdin) is no reason.
        #expect(Readiness(snapshot([stage("tail", .source, .finished), stage("bus", .sink, .running)])).isReady)
    }

    @Test func waitingOrFailedStagesAndAnyOtherPhaseAreNotReady() {
        let waiting = Readiness(
            snapshot([stage("tail", .source, .running), stage("bus", .sink, .waiting, waitingFor: "stream 'LOGS'")]))
        #expect(waiting.reasons == ["sink 'bus' waits for stream 'LOGS'"])
        let failed = Readiness(snapshot([stage("route", .transform, .failed)]))
        #expect(failed.reasons == ["transform 'route' failed"])
        #expect(Readiness(snapshot([], phase: .notStarted)).reasons == ["the pipeline has not started"])
        #expect(
            Readiness(snapshot([], phase: .stopping)).reasons == [
                "the pipeline is stopping (draining in-flight records)"
            ])
        #expect(Readiness(snapshot([], phase: .ended)).reasons == ["the pipeline ended"])
    }
}

@Suite struct APIResponderTests {
    final class Snapshot: Sendable {
        let value: Mutex<PipelineProgress>
        init(_ value: PipelineProgress) { self.value = Mutex(value) }
    }

    func responder(_ progress: Snapshot) -> (APIResponder, PrometheusCollectorRegistry) {
        let registry = PrometheusCollectorRegistry()
        Counter(label: "logpipe_test_total", factory: PrometheusMetricsFactory(registry: registry)).increment(by: 2)
        return (APIResponder(progress: { progress.value.withLock { $0 } }, registry: registry), registry)
    }

    @Test func readyAnswers503WithEveryStageAndTheReasons() async throws {
        let progress = Snapshot(
            snapshot([stage("tail", .source, .running), stage("bus", .sink, .waiting, waitingFor: "a NATS connection")])
        )
        let (responder, _) = responder(progress)
        let notReady = await responder.respond(method: "GET", path: "/ready")
        #expect(notReady.status == 503)
        #expect(notReady.contentType == "application/json")
        #expect(notReady.text.contains(#""reasons":["sink 'bus' waits for a NATS connection"]"#))
        #expect(notReady.text.contains(#""name":"tail""#) && notReady.text.contains(#""state":"waiting""#))
        #expect(notReady.text.contains(#""unacknowledged_records":3"#))
        progress.value.withLock { $0.stages[1].state = .running }
        let ready = await responder.respond(method: "GET", path: "/ready?verbose=1")
        #expect(ready.status == 200)
        #expect(ready.text.contains(#""status":"ready""#))
    }

    @Test func metricsHealthAndMistakes() async throws {
        let (responder, _) = responder(Snapshot(snapshot([], phase: .stopping)))
        let metrics = await responder.respond(method: "GET", path: "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.contentType.hasPrefix("text/plain; version=0.0.4"))
        #expect(metrics.text.contains("logpipe_test_total 2"))
        let health = await responder.respond(method: "GET", path: "/health")
        #expect(health.status == 200)
        #expect(health.text.contains(#""phase":"stopping""#))
        let missing = await responder.respond(method: "GET", path: "/reload")
        #expect(missing.status == 404)
        #expect(missing.text.contains("no such endpoint '/reload'"))
        #expect(await responder.respond(method: "POST", path: "/ready").status == 405)
    }

    @Test func reloadAnswersWhatChangedOrWhyNothingDid() async throws {
        let outcome = Mutex<APIResponder.ReloadOutcome>(
            .applied(
                ReloadReport(
                    added: [], removed: ["old"], changed: ["filter"], unchanged: ["tail"], stillDraining: [],
                    notes: [])))
        let calls = Atomic<Int>(0)
        let responder = APIResponder(
            progress: { snapshot([]) }, registry: PrometheusCollectorRegistry(),
            reload: {
                calls.add(1, ordering: .relaxed)
                return outcome.withLock { $0 }
            })
        let applied = await responder.respond(method: "POST", path: "/reload")
        #expect(applied.status == 200)
        #expect(applied.text.contains(#""changed":["filter"]"#), "\(applied.text)")
        #expect(applied.text.contains(#""removed":["old"]"#))
        #expect(applied.text.contains(#""status":"reloaded""#))

        outcome.withLock { $0 = .invalid(["p.yaml:3:5: error: unknown option 'paht'"]) }
        let invalid = await responder.respond(method: "POST", path: "/reload")
        #expect(invalid.status == 422)
        #expect(invalid.text.contains("unknown option 'paht'"))
        #expect(invalid.text.contains("keeps running unchanged"))

        outcome.withLock { $0 = .refused(.inProgress) }
        #expect(await responder.respond(method: "POST", path: "/reload").status == 409)
        outcome.withLock { $0 = .refused(.notRunning(.stopping)) }
        #expect(await responder.respond(method: "POST", path: "/reload").status == 503)

        // Reading it changes nothing.
        let get = await responder.respond(method: "GET", path: "/reload")
        #expect(get.status == 405)
        #expect(get.text.contains("POST"))
        #expect(calls.load(ordering: .relaxed) == 4)
        let unknown = await responder.respond(method: "POST", path: "/reolad")
        #expect(unknown.status == 404)
        #expect(unknown.text.contains("/reload"))
    }
}

@Suite struct PipelineMetricsTests {
    /// A real run publishes its counters into the registry it was given;
    /// the last values are published when the run ends.
    @Test func aRunPublishesItsCountersAndGauges() async throws {
        let (runner, summary, text) = try await runPublishingMetrics(lines: 25)
        #expect(summary.isClean)
        #expect(text.contains(#"logpipe_records_total{stage="in",direction="out"} 25"#), "\(text)")
        #expect(text.contains(#"logpipe_records_total{stage="out",direction="in"} 25"#))
        // "line 0" ... "line 24": 10 lines of 6 bytes and 15 of 7.
        #expect(text.contains(#"logpipe_bytes_total{stage="in",direction="out"} 165"#))
        #expect(text.contains(#"logpipe_bytes_total{stage="out",direction="in"} 165"#))
        #expect(text.contains(#"logpipe_records_delivered_total{stage="out"} 25"#))
        #expect(text.contains("logpipe_records_acknowledged_total 25"))
        #expect(text.contains("logpipe_records_unacknowledged 0"))
        #expect(text.contains(#"logpipe_stage_up{stage="out"} 0"#))  // finished
        #expect(text.contains(#"logpipe_edge_fill_ratio{stage="out"} 0"#))
        #expect(text.contains(#"logpipe_reloads_total{result="failed"} 0"#))
        #expect(runner.progress().phase == .ended)
    }

    /// Counters only go up, by the difference since the last sample.
    @Test func countersAddTheDifference() {
        let registry = PrometheusCollectorRegistry()
        var metrics = PipelineMetrics(factory: PrometheusMetricsFactory(registry: registry))
        var progress = snapshot([stage("bus", .sink, .running)])
        metrics.publish(progress)
        progress.stages[0].counters["rejected"] = 5
        progress.stages[0].recordsIn = 9
        metrics.publish(progress)
        metrics.publish(progress)
        let text = registry.emitToString()
        #expect(text.contains(#"logpipe_stage_events_total{stage="bus",event="rejected"} 5"#), "\(text)")
        #expect(text.contains(#"logpipe_records_total{stage="bus",direction="in"} 9"#))
        #expect(text.contains(#"logpipe_stage_up{stage="bus"} 1"#))
    }
}

@Suite struct APIServerTests {
    func responder() -> APIResponder {
        let registry = PrometheusCollectorRegistry()
        Gauge(label: "logpipe_up", factory: PrometheusMetricsFactory(registry: registry)).record(1)
        return APIResponder(progress: { snapshot([stage("bus", .sink, .running)]) }, registry: registry)
    }

    @Test func servesTheEndpointsOverHTTP() async throws {
        let server = try await APIServer.start(
            address: "127.0.0.1:0", responder: responder(), logger: Logger(label: "test"))
        let address = server.address
        #expect(!address.hasSuffix(":0"))
        let ready = try #require(await Task.detached { httpGet(address, "/ready") }.value)
        #expect(ready.status == 200)
        #expect(ready.body.contains(#""status":"ready""#))
        let metrics = try #require(await Task.detached { httpGet(address, "/metrics") }.value)
        #expect(metrics.body.contains("logpipe_up 1"))
        let missing = try #require(await Task.detached { httpGet(address, "/nope") }.value)
        #expect(missing.status == 404)
        await server.stop()
        #expect(await Task.detached { httpGet(address, "/ready") }.value == nil)
    }

    @Test func anAddressInUseOrMalformedIsAClearError() async throws {
        let first = try await APIServer.start(
            address: "127.0.0.1:0", responder: responder(), logger: Logger(label: "test"))
        defer { Task { await first.stop() } }
        await #expect {
            try await APIServer.start(address: first.address, responder: responder(), logger: Logger(label: "test"))
        } throws: { error in
            "\(error)".contains("cannot listen on \(first.address) for the API: Address already in use")
        }
        #expect(throws: APIServerError.invalidAddress("localhost")) { try APIServer.parse(address: "localhost") }
        let v6 = try APIServer.parse(address: "[::1]:9598")
        #expect(v6.host == "::1" && v6.port == 9598)
    }
}

@Suite struct OutstandingBatchesTests {
    @Test func theOldestBatchWaitsUntilEachOfItsRecordsIsAcknowledged() {
        let start = ContinuousClock.now
        let outstanding = OutstandingBatches()
        let first = outstanding.emitted(3, at: start)
        let second = outstanding.emitted(2, at: start + .seconds(1))
        #expect(outstanding.snapshot.records == 5)
        #expect(outstanding.snapshot.oldest == start)
        // The second batch completes first: the first is still the oldest.
        #expect(outstanding.acknowledged(second, count: 2, at: start + .seconds(2)) == .seconds(1))
        #expect(outstanding.snapshot.oldest == start)
        #expect(outstanding.acknowledged(first, count: 2, at: start + .seconds(3)) == nil)
        #expect(outstanding.snapshot.records == 1)
        #expect(outstanding.acknowledged(first, count: 1, at: start + .seconds(4)) == .seconds(4))
        #expect(outstanding.snapshot.records == 0)
        #expect(outstanding.snapshot.oldest == nil)
        // Late or unknown acknowledgements change nothing.
        #expect(outstanding.acknowledged(first, count: 1) == nil)
        let third = outstanding.emitted(1, at: start + .seconds(5))
        #expect(third == second + 1)
        #expect(outstanding.snapshot.oldest == start + .seconds(5))
    }
}

@Suite struct UnacknowledgedAgeTests {
    @Test func aSourceWhoseOldestRecordWaitsTooLongIsNotReady() {
        var source = stage("tail", .source, .running)
        source.unacknowledgedRecords = 12
        source.oldestUnacknowledgedAge = .seconds(90)
        let verdict = Readiness(snapshot([source, stage("out", .sink, .running)]), maxUnacknowledgedAge: .seconds(60))
        #expect(verdict.reasons.count == 1)
        #expect(
            verdict.reasons.first?.hasPrefix(
                "source 'tail' has records unacknowledged for 90s (more than api.max_unacknowledged_age, 1m)") == true)
        source.oldestUnacknowledgedAge = .seconds(30)
        #expect(Readiness(snapshot([source]), maxUnacknowledgedAge: .seconds(60)).isReady)
    }

    @Test func aRunPublishesSourceGaugesAndTheDeliveryLatency() async throws {
        let (runner, _, text) = try await runPublishingMetrics(lines: 10)
        #expect(text.contains(#"logpipe_source_unacknowledged_records{stage="in"} 0"#), "\(text)")
        #expect(text.contains(#"logpipe_source_oldest_unacknowledged_age_seconds{stage="in"} 0"#))
        #expect(text.contains(#"logpipe_delivery_latency_seconds_count{stage="in"}"#))
        let progress = runner.progress().stages[0]
        #expect(progress.unacknowledgedRecords == 0 && progress.oldestUnacknowledgedAge == nil)
    }
}

import Foundation
import LogPipe
import LogPipeBase
import Prometheus

/// What the API answers, apart from HTTP: `GET /metrics`, `/health` and
/// `/ready` for a running pipeline.
public struct APIResponder: Sendable {
    /// An answer: status code, content type, body.
    public struct Response: Sendable, Equatable {
        /// The HTTP status code.
        public var status: Int
        /// The body's media type.
        public var contentType: String
        /// The body.
        public var body: [UInt8]

        /// The body as text.
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    let progress: @Sendable () -> PipelineProgress
    let registry: PrometheusCollectorRegistry
    let maxUnacknowledgedAge: @Sendable () -> Duration
    let reload: ReloadHandler?

    /// What `POST /reload` runs: re-read the pipeline's configuration and
    /// apply it (``PipelineRunner/reload(to:)``).
    public typealias ReloadHandler = @Sendable () async -> ReloadOutcome

    /// What a reload came to, for `POST /reload`'s answer.
    public enum ReloadOutcome: Sendable, Equatable {
        /// Applied: what changed.
        case applied(ReloadReport)
        /// The new configuration has errors (each one said); nothing changed.
        case invalid([String])
        /// The runner refused it; nothing changed.
        case refused(ReloadError)
    }

    /// Answers for the pipeline `runner` runs, with metrics from `registry`
    /// (the one the `PrometheusMetricsFactory` given to the runner writes
    /// to); `/ready` is 503 while a source's oldest unacknowledged record is
    /// older than the runner's `api.max_unacknowledged_age` (as last
    /// reloaded). With `reload`, `POST /reload` runs it.
    public init(runner: PipelineRunner, registry: PrometheusCollectorRegistry, reload: ReloadHandler? = nil) {
        self.init(
            progress: { runner.progress() }, registry: registry,
            maxUnacknowledgedAge: { runner.settings.maxUnacknowledgedAge }, reload: reload)
    }

    init(
        progress: @escaping @Sendable () -> PipelineProgress, registry: PrometheusCollectorRegistry,
        maxUnacknowledgedAge: @escaping @Sendable () -> Duration = { .seconds(60) }, reload: ReloadHandler? = nil
    ) {
        self.progress = progress
        self.registry = registry
        self.maxUnacknowledgedAge = maxUnacknowledgedAge
        self.reload = reload
    }

    /// The answer to `method` `path` (a query string is ignored).
    public func respond(method: String, path: String) async -> Response {
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        let known = ["/metrics", "/health", "/ready"] + (reload == nil ? [] : ["/reload"])
        guard known.contains(route) else {
            return Self.json(404, ["error": "no such endpoint '\(route)'; try \(known.joined(separator: ", "))"])
        }
        if route == "/reload" {
            guard method == "POST", let reload else {
                return Self.json(405, ["error": "/reload answers POST only (curl -X POST .../reload)"])
            }
            return Self.answer(await reload())
        }
        guard method == "GET" || method == "HEAD" else {
            return Self.json(405, ["error": "\(route) answers GET only"])
        }
        switch route {
        case "/metrics":
            return Response(
                status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: registry.emitToBuffer())
        case "/health":
            // Answered from a task: if the runtime's executor were stuck,
            // this would not run and the probe would time out.
            let phase = await Task { progress().phase }.value
            return Self.json(200, ["status": "alive", "phase": phase.rawValue])
        default:
            let snapshot = progress()
            let verdict = Readiness(snapshot, maxUnacknowledgedAge: maxUnacknowledgedAge())
            return Self.json(verdict.isReady ? 200 : 503, ReadyBody(snapshot, verdict))
        }
    }

    /// 200 with what changed; 422 when the file has errors or the change
    /// cannot apply live; 409 while another reload runs; 503 when the
    /// pipeline is not running.
    static func answer(_ outcome: ReloadOutcome) -> Response {
        struct Body: Encodable {
            var status: String
            var message: String? = nil
            var errors: [String]? = nil
            var changed: [String]? = nil
            var added: [String]? = nil
            var removed: [String]? = nil
            var unchanged: [String]? = nil
            var still_draining: [String]? = nil
            var notes: [String]? = nil
        }
        switch outcome {
        case .applied(let report):
            return json(
                200,
                Body(
                    status: "reloaded", changed: report.changed, added: report.added, removed: report.removed,
                    unchanged: report.unchanged, still_draining: report.stillDraining, notes: report.notes))
        case .invalid(let errors):
            return json(422, Body(status: "rejected", message: "the pipeline keeps running unchanged", errors: errors))
        case .refused(let error):
            let status =
                switch error {
                case .inProgress: 409
                case .notRunning: 503
                case .rejected: 422
                }
            let errors: [String]
            if case .rejected(let problems) = error { errors = problems } else { errors = ["\(error)"] }
            return json(
                status, Body(status: "rejected", message: "the pipeline keeps running unchanged", errors: errors))
        }
    }

    static func json(_ status: Int, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var body = (try? encoder.encode(value)).map(Array.init) ?? Array("{}".utf8)
        body.append(UInt8(ascii: "\n"))
        return Response(status: status, contentType: "application/json", body: body)
    }
}

/// Whether a pipeline is ready, and why not.
public struct Readiness: Sendable, Equatable {
    /// Every reason it is not ready; empty when it is.
    public var reasons: [String]
    /// True when nothing keeps it from working.
    public var isReady: Bool { reasons.isEmpty }

    /// Judges a snapshot: not ready while not running (not started,
    /// stopping, ended), while a stage waits for something (a server, a
    /// stream), once a stage failed, or while a source's oldest
    /// unacknowledged record is older than `maxUnacknowledgedAge`.
    public init(_ progress: PipelineProgress, maxUnacknowledgedAge: Duration = .seconds(60)) {
        var reasons: [String] = []
        switch progress.phase {
        case .notStarted: reasons.append("the pipeline has not started")
        case .stopping: reasons.append("the pipeline is stopping (draining in-flight records)")
        case .ended: reasons.append("the pipeline ended")
        case .running: break
        }
        for stage in progress.stages {
            switch stage.state {
            case .failed: reasons.append("\(stage.kind) '\(stage.name)' failed")
            case .waiting: reasons.append("\(stage.kind) '\(stage.name)' waits for \(stage.waitingFor ?? "something")")
            case .starting, .running, .finished: break
            }
            if let age = stage.oldestUnacknowledgedAge, age > maxUnacknowledgedAge {
                reasons.append(
                    "\(stage.kind) '\(stage.name)' has records unacknowledged for \(age.components.seconds)s (more than api.max_unacknowledged_age, \(Units.format(maxUnacknowledgedAge))): a sink is stuck or far too slow"
                )
            }
        }
        self.reasons = reasons
    }
}

struct ReadyBody: Encodable {
    struct Stage: Encodable {
        var name: String
        var kind: String
        var state: String
        var waiting_for: String?
        var records_in: Int
        var records_out: Int
        var queued_batches: Int
        var counters: [String: Int]
        var unacknowledged_records: Int?
        var oldest_unacknowledged_age_seconds: Double?
    }
    var status: String
    var phase: String
    var reasons: [String]
    var unacknowledged_records: Int
    var stages: [Stage]

    init(_ progress: PipelineProgress, _ readiness: Readiness) {
        status = readiness.isReady ? "ready" : "not ready"
        phase = progress.phase.rawValue
        reasons = readiness.reasons
        unacknowledged_records = progress.unacknowledged
        stages = progress.stages.map { stage in
            Stage(
                name: stage.name, kind: "\(stage.kind)", state: stage.state.rawValue, waiting_for: stage.waitingFor,
                records_in: stage.recordsIn, records_out: stage.recordsOut, queued_batches: stage.queuedBatches,
                counters: stage.counters,
                unacknowledged_records: stage.kind == .source ? stage.unacknowledgedRecords : nil,
                oldest_unacknowledged_age_seconds: stage.oldestUnacknowledgedAge?.inSeconds)
        }
    }
}

import CoreMetrics
import LogPipeBase

/// A pipeline's counters published through swift-metrics, from snapshots
/// (``PipelineProgress``) taken every metrics interval: nothing is counted
/// per record, so metrics cost the pipeline nothing measurable.
///
/// Names follow Prometheus conventions (`_total` for counters, base units):
///
/// | name | kind | labels |
/// |---|---|---|
/// | `logpipe_records_total` | counter | `stage`, `direction` (`in`, `out`) |
/// | `logpipe_bytes_total` | counter | `stage`, `direction` (the lines' bytes) |
/// | `logpipe_records_delivered_total` | counter | `stage` (sinks) |
/// | `logpipe_stage_events_total` | counter | `stage`, `event` (the stage's named counters: drops by reason, retries, errors) |
/// | `logpipe_records_emitted_total` | counter | (all sources) |
/// | `logpipe_records_acknowledged_total` | counter | (all sources) |
/// | `logpipe_records_unacknowledged` | gauge | |
/// | `logpipe_edge_queued_batches` | gauge | `stage` (its input) |
/// | `logpipe_edge_fill_ratio` | gauge | `stage` (queued ÷ capacity) |
/// | `logpipe_stage_up` | gauge | `stage` (1 running, 0 waiting, finished or failed) |
/// | `logpipe_uptime_seconds` | gauge | |
/// | `logpipe_reloads_total` | counter | `result` (`applied`, `failed`) |
/// | `logpipe_source_unacknowledged_records` | gauge | `stage` (sources) |
/// | `logpipe_source_oldest_unacknowledged_age_seconds` | gauge | `stage` (sources; 0 when none waits) |
/// | `logpipe_delivery_latency_seconds` | histogram | `stage` (sources: emitted to acknowledged, per batch) |
/// | `logpipe_<gauge>` | gauge | `stage` (a stage's named gauges, e.g. `checkpoint_lag_bytes`) |
struct PipelineMetrics: Sendable {
    private let factory: any MetricsFactory
    private var counters: [String: (counter: Counter, last: Int)] = [:]
    private var gauges: [String: Gauge] = [:]
    /// The stages of the last snapshot, to zero the gauges of those a
    /// reload removed.
    private var stagesSeen: [String: StageKind] = [:]

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    /// Brings every metric up to `progress`.
    mutating func publish(_ progress: PipelineProgress) {
        for stage in progress.stages {
            let name = stage.name
            if stage.kind != .source {
                count("logpipe_records_total", [("stage", name), ("direction", "in")], to: stage.recordsIn)
                count("logpipe_bytes_total", [("stage", name), ("direction", "in")], to: stage.bytesIn)
                let fill = stage.inputCapacity > 0 ? Double(stage.queuedBatches) / Double(stage.inputCapacity) : 0
                set("logpipe_edge_queued_batches", [("stage", name)], to: Double(stage.queuedBatches))
                set("logpipe_edge_fill_ratio", [("stage", name)], to: fill)
            }
            if stage.kind != .sink {
                count("logpipe_records_total", [("stage", name), ("direction", "out")], to: stage.recordsOut)
                count("logpipe_bytes_total", [("stage", name), ("direction", "out")], to: stage.bytesOut)
            } else {
                count("logpipe_records_delivered_total", [("stage", name)], to: stage.recordsDelivered)
            }
            for (event, value) in stage.counters {
                count("logpipe_stage_events_total", [("stage", name), ("event", event)], to: value)
            }
            set("logpipe_stage_up", [("stage", name)], to: stage.state == .running ? 1 : 0)
            if stage.kind == .source {
                set("logpipe_source_unacknowledged_records", [("stage", name)], to: Double(stage.unacknowledgedRecords))
                set(
                    "logpipe_source_oldest_unacknowledged_age_seconds", [("stage", name)],
                    to: stage.oldestUnacknowledgedAge?.inSeconds ?? 0)
            }
            for (gauge, value) in stage.gauges {
                set("logpipe_" + gauge, [("stage", name)], to: value)
            }
        }
        let current = Dictionary(progress.stages.map { ($0.name, $0.kind) }, uniquingKeysWith: { first, _ in first })
        for (name, kind) in stagesSeen where current[name] == nil {
            set("logpipe_stage_up", [("stage", name)], to: 0)
            if kind == .source {
                set("logpipe_source_unacknowledged_records", [("stage", name)], to: 0)
                set("logpipe_source_oldest_unacknowledged_age_seconds", [("stage", name)], to: 0)
            } else {
                set("logpipe_edge_queued_batches", [("stage", name)], to: 0)
                set("logpipe_edge_fill_ratio", [("stage", name)], to: 0)
            }
        }
        stagesSeen = current
        count("logpipe_reloads_total", [("result", "applied")], to: progress.reloads)
        count("logpipe_reloads_total", [("result", "failed")], to: progress.failedReloads)
        count("logpipe_records_emitted_total", [], to: progress.emitted)
        count("logpipe_records_acknowledged_total", [], to: progress.acknowledged)
        set("logpipe_records_unacknowledged", [], to: Double(progress.unacknowledged))
        set("logpipe_uptime_seconds", [], to: progress.elapsed.inSeconds)
    }

    private static func key(_ label: String, _ dimensions: [(String, String)]) -> String {
        dimensions.reduce(label) { $0 + "\u{0}" + $1.0 + "=" + $1.1 }
    }

    /// Raises a counter to `value` (counters only go up: a lower value adds nothing).
    private mutating func count(_ label: String, _ dimensions: [(String, String)], to value: Int) {
        let key = Self.key(label, dimensions)
        var entry = counters[key] ?? (Counter(label: label, dimensions: dimensions, factory: factory), 0)
        if value > entry.last {
            entry.counter.increment(by: Int64(value - entry.last))
            entry.last = value
        }
        counters[key] = entry
    }

    private mutating func set(_ label: String, _ dimensions: [(String, String)], to value: Double) {
        let key = Self.key(label, dimensions)
        let gauge = gauges[key] ?? Gauge(label: label, dimensions: dimensions, factory: factory)
        gauges[key] = gauge
        gauge.record(value)
    }
}

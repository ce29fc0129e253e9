import Testing

@testable import LogPipe
@testable import LogPipeNATS

/// Every option is declared once: the default `logpipe stages` and
/// docs/stages.md show is read from the stage's typed settings.
@Suite struct StageDeclarationTests {
    /// Every built-in stage with options declares them as `StageOption`s
    /// (not bare `OptionSpec`s, whose defaults nothing ties to the code),
    /// and each documented default reads back as the typed default.
    @Test func everyBuiltInStageDeclaresItsOptionsOnce() {
        for definition in StageRegistry.all().all where !definition.options.isEmpty {
            guard let mismatches = definition.defaultMismatches else {
                Issue.record("\(definition.kind) '\(definition.type)' declares bare OptionSpecs; use StageOption")
                continue
            }
            #expect(mismatches().isEmpty, "\(definition.kind) '\(definition.type)': \(mismatches())")
        }
    }

    struct Drifting: StageSettings {
        var wait: Duration = .microseconds(1500)
        var size = 1536
        var words: Choice = .one
        enum Choice: String, CaseIterable, Sendable { case one, two }
    }

    /// The check catches a default the pipeline-file form cannot carry: 1.5 ms
    /// is documented as `1ms` (whole milliseconds), which reads back as
    /// another value.
    @Test func aDefaultThatDoesNotReadBackIsReported() {
        let options: [StageOption<Drifting>] = [
            .duration("wait", \.wait, "A wait."),
            .size("size", \.size, "A size."),
            .choice("words", \.words, "A word."),
        ]
        #expect(options.map(\.spec.defaultValue) == ["1ms", "1536", "one"])
        let mismatches = options.defaultMismatches()
        #expect(mismatches.count == 1)
        #expect(mismatches.first?.hasPrefix("wait: default '1ms' reads back as") == true, "\(mismatches)")
    }

    /// Defaults of nested and shared options come from the stage's own
    /// settings: the jetstream source's `consumer.ack_wait` and the NATS
    /// connection's `connect_timeout`.
    @Test func nestedAndSharedDefaultsComeFromTheSettings() throws {
        let source = try #require(StageRegistry.all().definition(for: "jetstream", kind: .source))
        guard case .object(let consumer) = try #require(source.options.first { $0.name == "consumer" }).type else {
            Issue.record("consumer is not a map")
            return
        }
        #expect(consumer.first { $0.name == "ack_wait" }?.defaultValue == "30s")
        #expect(source.options.first { $0.name == "connect_timeout" }?.defaultValue == "5s")
    }

    /// Settings are read from what the user gave; the rest stay at their
    /// defaults.
    @Test func givenValuesReplaceDefaults() throws {
        let partition = try #require(StageRegistry.all().definition(for: "partition", kind: .transform))
        let node: ConfigNode = ["partitions": "4", "hash": "fnv1a"]
        let stage = try partition.make(StageOptions(stageName: "route", node: node, specs: partition.options))
        guard case .transform(let transform) = stage, let partitioner = transform as? PartitionTransform else {
            Issue.record("not a partition stage")
            return
        }
        #expect(partitioner.options.partitions == 4)
        #expect(partitioner.options.hash == .fnv1a)
        #expect(partitioner.options.subject.text == "logs.p{partition}.{host}")
    }
}

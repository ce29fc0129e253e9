import Foundation
import Yams

/// Reads a pipeline file, checks it strictly, and builds a ``Pipeline``.
///
/// Every problem is reported at once, each with file, line, column and a
/// hint: YAML syntax, unset variables, unknown sections, stage types and
/// options (with the closest valid name), bad values, missing or cyclic
/// inputs, sources with inputs, sinks used as inputs, duplicate names, and
/// (as a warning) stages whose output goes nowhere.
public struct PipelineLoader: Sendable {
    /// The stage types the file may use.
    public var registry: StageRegistry
    /// Values for `${VAR}` interpolation.
    public var environment: [String: String]

    /// What loading produced: the pipeline when there were no errors, and
    /// every diagnostic (errors and warnings).
    public struct Result: Sendable {
        /// The runnable pipeline, or `nil` if any error was found.
        public var pipeline: Pipeline?
        /// Errors and warnings, in file order.
        public var diagnostics: [Diagnostic]
        /// The errors only.
        public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }
    }

    /// The largest pipeline file read, in bytes: `validate` runs on files
    /// from anywhere (a CI job on a pull request), and parsing is in memory.
    public static let maxFileBytes = 1024 * 1024

    /// The most YAML nodes a pipeline may expand to. YAML aliases repeat a
    /// node without repeating its text, so a small file can stand for
    /// billions of nodes ("billion laughs"); loading stops here instead.
    public static let maxNodes = 100_000

    /// Top-level keys of a pipeline file.
    static let topLevelKeys = [
        "data_dir", "shutdown_timeout", "edge_capacity", "api", "sources", "transforms", "sinks",
    ]

    /// Creates a loader.
    public init(
        registry: StageRegistry = .standard(), environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.registry = registry
        self.environment = environment
    }

    /// Loads the pipeline file at `path`, applying `overrides` of the form
    /// `stage.option=value` (or `setting=value` for top-level settings).
    public func load(file path: String, overrides: [String] = []) -> Result {
        let text: String
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return Result(diagnostics: [
                Diagnostic("\(path) is a directory", hint: "give the path of a pipeline file (YAML)", at: nil)
            ])
        }
        if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int,
            size > Self.maxFileBytes
        {
            return Result(diagnostics: [Self.tooLarge(path, size)])
        }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let decoded = String(data: data, encoding: .utf8) else {
                return Result(diagnostics: [
                    Diagnostic("\(path) is not valid UTF-8 text", hint: "save the pipeline file as UTF-8", at: nil)
                ])
            }
            text = decoded
        } catch {
            return Result(diagnostics: [
                Diagnostic(
                    "cannot read pipeline file \(path): \(error.localizedDescription)",
                    hint: "check the path and its permissions", at: nil)
            ])
        }
        return load(yaml: text, file: path, overrides: overrides)
    }

    static func tooLarge(_ file: String, _ size: Int) -> Diagnostic {
        Diagnostic(
            "\(file) has \(size) bytes; pipeline files may have at most \(maxFileBytes)",
            hint: "a pipeline file describes stages; keep data (lists of hosts, patterns) in files the stages read",
            at: nil)
    }

    /// Loads a pipeline from YAML text; `file` names it in diagnostics.
    public func load(yaml: String, file: String = "<pipeline>", overrides: [String] = []) -> Result {
        if yaml.utf8.count > Self.maxFileBytes {
            return Result(diagnostics: [Self.tooLarge(file, yaml.utf8.count)])
        }
        var builder = Builder(file: file, registry: registry, environment: environment)
        return builder.build(yaml: yaml, overrides: overrides)
    }
}

private struct Builder {
    let file: String
    let registry: StageRegistry
    let environment: [String: String]
    var diagnostics: [Diagnostic] = []
    /// Nodes ``convert(_:)`` may still make.
    var nodesLeft = PipelineLoader.maxNodes

    init(file: String, registry: StageRegistry, environment: [String: String]) {
        self.file = file
        self.registry = registry
        self.environment = environment
    }

    mutating func error(_ message: String, hint: String? = nil, at location: SourceLocation?) {
        diagnostics.append(Diagnostic(.error, message, hint: hint, at: location))
    }

    func location(_ mark: Mark?) -> SourceLocation? {
        mark.map { SourceLocation(file: file, line: $0.line, column: $0.column) }
    }

    struct StageEntry {
        var name: String
        var nameLocation: SourceLocation?
        var section: StageKind
        var node: ConfigNode
        var definition: StageDefinition?
        /// The kind of the stage's type when known, else its section's.
        var kind: StageKind
        var inputs: [String]
        var inputLocations: [SourceLocation?]
        /// The stage's options passed validation.
        var optionsValid = false
    }

    mutating func build(yaml: String, overrides: [String]) -> PipelineLoader.Result {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let yamlError as YamlError {
            reportYAML(yamlError)
            return PipelineLoader.Result(pipeline: nil, diagnostics: diagnostics)
        } catch {
            self.error("cannot parse YAML: \(error)", at: nil)
            return PipelineLoader.Result(pipeline: nil, diagnostics: diagnostics)
        }
        guard let root else {
            self.error(
                "the pipeline file is empty", hint: "define 'sources:' and 'sinks:' (see `logpipe stages`)",
                at: SourceLocation(file: file, line: 1, column: 1))
            return PipelineLoader.Result(pipeline: nil, diagnostics: diagnostics)
        }
        var config = convert(root)
        if nodesLeft <= 0 { return PipelineLoader.Result(pipeline: nil, diagnostics: diagnostics) }
        applyOverrides(overrides, to: &config)
        guard let topEntries = config.entries else {
            error("a pipeline file is a map with 'sources', 'transforms' and 'sinks'", at: config.location)
            return PipelineLoader.Result(pipeline: nil, diagnostics: diagnostics)
        }

        // Pipeline settings.
        var settings = PipelineSettings()
        let unknownTopLevel = topEntries.filter { !PipelineLoader.topLevelKeys.contains($0.key) }
        for entry in unknownTopLevel {
            let hint = closestMatch(to: entry.key, among: PipelineLoader.topLevelKeys).map { "did you mean '\($0)'?" }
            error(
                "unknown top-level key '\(entry.key)'",
                hint: hint ?? "valid keys: \(PipelineLoader.topLevelKeys.joined(separator: ", "))",
                at: entry.keyLocation
            )
        }
        // A null value (`key:`, `key: ~`, or a plain `${VAR:-}` that is
        // empty) states nothing: the default applies, as for stage options.
        func stated(_ key: String) -> ConfigNode? {
            guard let value = config[key] else { return nil }
            if case .scalar(nil) = value.value { return nil }
            return value
        }
        if let value = stated("data_dir") {
            if let text = value.scalar {
                settings.dataDirectory = text
            } else {
                error("'data_dir' must be a path", at: value.location)
            }
        }
        if let value = stated("shutdown_timeout") {
            if let duration = value.scalar.flatMap(Units.duration) {
                settings.shutdownTimeout = duration
            } else {
                error("'shutdown_timeout' must be a duration", hint: "for example 30s or 2m", at: value.location)
            }
        }
        if let value = stated("edge_capacity") {
            if let capacity = value.scalar.flatMap({ Int($0) }), capacity >= 1 {
                settings.edgeCapacity = capacity
            } else {
                error("'edge_capacity' must be a whole number of batches, at least 1", at: value.location)
            }
        }

        if let value = stated("api") {
            if let entries = value.entries {
                for entry in entries {
                    switch entry.key {
                    case "address":
                        if let text = entry.value.scalar, Units.hostAndPort(text) != nil {
                            settings.apiAddress = text
                        } else if entry.value.scalar != nil || entry.value.entries != nil || entry.value.list != nil {
                            error(
                                "'api.address' must be host:port", hint: "for example 127.0.0.1:9598",
                                at: entry.value.location)
                        }
                    case "max_unacknowledged_age":
                        if let duration = entry.value.scalar.flatMap(Units.duration), duration > .zero {
                            settings.maxUnacknowledgedAge = duration
                        } else if entry.value.scalar != nil || entry.value.entries != nil || entry.value.list != nil {
                            error(
                                "'api.max_unacknowledged_age' must be a positive duration",
                                hint: "for example 60s or 5m",
                                at: entry.value.location)
                        }
                    default:
                        error(
                            "unknown key 'api.\(entry.key)'", hint: "valid keys: address, max_unacknowledged_age",
                            at: entry.keyLocation)
                    }
                }
            } else {
                error(
                    "'api' must be a map", hint: "for example api: { address: 127.0.0.1:9598 }", at: value.location)
            }
        }

        // Stages, section by section.
        var stages: [StageEntry] = []
        var seenNames: [String: SourceLocation?] = [:]
        for kind in StageKind.allCases {
            guard let sectionNode = config[kind.section] else { continue }
            if case .scalar(nil) = sectionNode.value { continue }
            guard let entries = sectionNode.entries else {
                error("'\(kind.section)' must be a map of stage names to stages", at: sectionNode.location)
                continue
            }
            for entry in entries {
                if let previous = seenNames[entry.key] {
                    error(
                        "duplicate stage name '\(entry.key)'",
                        hint:
                            "stage names must be unique across sources, transforms and sinks; the first is at \(previous.map(\.description) ?? "another section")",
                        at: entry.keyLocation
                    )
                    continue
                }
                seenNames[entry.key] = entry.keyLocation
                if let stage = parseStage(entry, section: kind) { stages.append(stage) }
            }
        }

        // Graph rules. A misspelt section would make every graph rule fire
        // on what is missing; the unknown key alone says what to fix.
        let check = GraphCheck(nodes: stages.map { .init(name: $0.name, kind: $0.kind, inputs: $0.inputs) })
        for problem in unknownTopLevel.isEmpty ? check.problems() : [] {
            var location: SourceLocation?
            switch problem.subject {
            case .stage(let name):
                location = stages.first { $0.name == name }?.nameLocation ?? (name.isEmpty ? config.location : nil)
            case .input(let name, let index):
                let stage = stages.first { $0.name == name }
                location =
                    stage.flatMap { index < $0.inputLocations.count ? $0.inputLocations[index] : nil }
                    ?? stage?.nameLocation
            }
            diagnostics.append(
                Diagnostic(problem.isWarning ? .warning : .error, problem.message, hint: problem.hint, at: location))
        }

        // Build every stage whose options are valid, even when other stages
        // or the graph have errors, so that problems only a stage's factory
        // finds (a regex that does not compile) are reported in the same run.
        var pipeline = Pipeline(settings: settings)
        for stage in stages {
            guard let definition = stage.definition, stage.optionsValid else { continue }
            let options = StageOptions(
                stageName: stage.name, node: stage.node, specs: definition.options, settings: settings)
            do {
                let instance = try definition.make(options)
                var configured = stage.node
                configured.value = .map((stage.node.entries ?? []).filter { $0.key != "inputs" })
                try pipeline.add(
                    Pipeline.Node(
                        name: stage.name, stage: instance, inputs: stage.inputs, typeName: definition.type,
                        configuration: configured.canonicalText))
            } catch let optionError as OptionError {
                error(
                    "stage '\(stage.name)': \(optionError.message)", hint: optionError.hint,
                    at: optionError.location ?? stage.nameLocation)
            } catch let optionErrors as OptionErrors {
                for optionError in optionErrors.errors {
                    error(
                        "stage '\(stage.name)': \(optionError.message)", hint: optionError.hint,
                        at: optionError.location ?? stage.nameLocation)
                }
            } catch {
                self.error("stage '\(stage.name)' could not be set up: \(error)", at: stage.nameLocation)
            }
        }
        checkTemplateFields(pipeline, stages: stages)
        let hasErrors = diagnostics.contains { $0.severity == .error }
        return PipelineLoader.Result(pipeline: hasErrors ? nil : pipeline, diagnostics: sorted(diagnostics))
    }

    /// A template naming a field that no stage upstream sets is an error,
    /// when that is knowable: every upstream stage declares the fields it
    /// sets (``FieldProducer``). Otherwise the field renders as `unknown`.
    mutating func checkTemplateFields(_ pipeline: Pipeline, stages: [StageEntry]) {
        func instance(_ node: Pipeline.Node) -> Any {
            switch node.stage {
            case .source(let source): source
            case .transform(let transform): transform
            case .sink(let sink): sink
            }
        }
        for node in pipeline.nodes {
            guard let consumer = instance(node) as? any TemplateConsumer else { continue }
            var upstream: [String] = []
            var queue = node.inputs
            var knowable = true
            while let name = queue.popLast() {
                guard !upstream.contains(name) else { continue }
                guard let input = pipeline.node(named: name) else {
                    knowable = false  // a stage that could not be built
                    break
                }
                upstream.append(name)
                queue.append(contentsOf: input.inputs)
            }
            var known: Set<String> = []
            for name in upstream where knowable {
                guard let producer = pipeline.node(named: name).map(instance) as? any FieldProducer else {
                    knowable = false
                    break
                }
                known.formUnion(producer.producedFields)
            }
            guard knowable else { continue }
            let stage = stages.first { $0.name == node.name }
            for (option, template) in consumer.templates {
                for field in template.fieldNames where !known.contains(field) {
                    let fields = known.isEmpty ? "none" : known.sorted().joined(separator: ", ")
                    error(
                        "option '\(option)' of '\(node.name)' uses {\(field)}, but no stage upstream sets a field '\(field)'",
                        hint:
                            "built-in placeholders: {host} {partition} {severity} {source} {origin} {subject} {%Y-%m-%d}; fields set upstream: \(fields) (a regex stage's extract sets its named groups)",
                        at: stage?.node[option]?.location ?? stage?.nameLocation
                    )
                }
            }
        }
    }

    func sorted(_ diagnostics: [Diagnostic]) -> [Diagnostic] {
        diagnostics.enumerated().sorted { lhs, rhs in
            let left = lhs.element.location.map { ($0.line, $0.column) } ?? (Int.max, lhs.offset)
            let right = rhs.element.location.map { ($0.line, $0.column) } ?? (Int.max, rhs.offset)
            return left != right ? left < right : lhs.offset < rhs.offset
        }.map(\.element)
    }

    mutating func parseStage(_ entry: ConfigNode.Entry, section: StageKind) -> StageEntry? {
        let name = entry.key
        if name.isEmpty || !name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) {
            error("invalid stage name '\(name)'", hint: "use letters, digits, '_' and '-'", at: entry.keyLocation)
        }
        guard entry.value.entries != nil else {
            error(
                "stage '\(name)' must be a map with a 'type'",
                hint: "for example:\n      \(name):\n        type: stdin", at: entry.value.location ?? entry.keyLocation
            )
            return nil
        }
        var stage = StageEntry(
            name: name, nameLocation: entry.keyLocation, section: section, node: entry.value, definition: nil,
            kind: section, inputs: [], inputLocations: [])

        // inputs
        if let inputs = entry.value["inputs"] {
            if let items = inputs.list {
                for item in items {
                    if let text = item.scalar {
                        stage.inputs.append(text)
                        stage.inputLocations.append(item.location)
                    } else {
                        error("'inputs' of '\(name)' must list stage names", at: item.location)
                    }
                }
            } else if let text = inputs.scalar {
                stage.inputs = [text]
                stage.inputLocations = [inputs.location]
            } else {
                error(
                    "'inputs' of '\(name)' must be a list of stage names", hint: "inputs: [other_stage]",
                    at: inputs.location)
            }
        }

        // type
        let registry = self.registry
        let kindsTypes = { (kind: StageKind) in registry.all.filter { $0.kind == kind }.map(\.type) }
        let typeList = { (kind: StageKind) -> String in
            let types = kindsTypes(kind)
            return types.isEmpty
                ? "no \(kind) types are registered"
                : "\(kind) types: \(types.joined(separator: ", ")) (see `logpipe stages`)"
        }
        guard let typeNode = entry.value["type"] else {
            error(
                "stage '\(name)' has no 'type'",
                hint: typeList(section),
                at: entry.keyLocation
            )
            return stage
        }
        guard let type = typeNode.scalar else {
            error("'type' of '\(name)' must be a stage type name", at: typeNode.location)
            return stage
        }
        guard let definition = registry.definition(for: type, kind: section) else {
            if let other = registry.definitions(named: type).first {
                stage.kind = other.kind
                error(
                    "'\(type)' is a \(other.kind) type, but stage '\(name)' is under '\(section.section)'",
                    hint: "move '\(name)' under '\(other.kind.section):'",
                    at: typeNode.location
                )
                return stage
            }
            let suggestion =
                closestMatch(to: type, among: kindsTypes(section))
                ?? closestMatch(to: type, among: registry.all.map(\.type))
            error(
                "unknown \(section) type '\(type)'",
                hint: (suggestion.map { "did you mean '\($0)'? " } ?? "") + typeList(section),
                at: typeNode.location
            )
            return stage
        }
        stage.definition = definition
        let errorsBefore = diagnostics.count { $0.severity == .error }
        OptionValidator.validate(
            entry.value,
            specs: definition.options,
            path: "",
            ignoring: ["type", "inputs"],
            location: entry.keyLocation,
            diagnostics: &diagnostics
        )
        stage.optionsValid = diagnostics.count { $0.severity == .error } == errorsBefore && !entry.value.containsPoison
        return stage
    }

    mutating func convert(_ node: Node) -> ConfigNode {
        nodesLeft -= 1
        if nodesLeft == 0 {
            error(
                "the pipeline expands to more than \(PipelineLoader.maxNodes) YAML nodes (through aliases?); loading stopped",
                hint: "write the values out instead of repeating them with aliases", at: location(node.mark))
        }
        if nodesLeft <= 0 { return ConfigNode(.scalar(nil), location: nil) }
        switch node {
        case .scalar(let scalar):
            let location = location(scalar.mark)
            if scalar.style == .plain, node.null != nil {
                return ConfigNode(.scalar(nil), location: location)
            }
            do {
                let value = try Interpolation.apply(scalar.string, environment: environment)
                // As in YAML, an empty plain value is null: `replicas:
                // ${REPLICAS:-}` states nothing unless REPLICAS is set.
                if scalar.style == .plain, value.isEmpty, !scalar.string.isEmpty {
                    return ConfigNode(.scalar(nil), location: location)
                }
                return ConfigNode(.scalar(value), location: location)
            } catch let failure as Interpolation.Failure {
                error(failure.message, hint: failure.hint, at: location)
                var node = ConfigNode(.scalar(scalar.string), location: location)
                node.isPoisoned = true
                return node
            } catch {
                return ConfigNode(.scalar(scalar.string), location: location)
            }
        case .mapping(let mapping):
            var entries: [ConfigNode.Entry] = []
            for (key, value) in mapping {
                guard let keyText = key.scalar?.string else {
                    error("map keys must be plain names", at: location(key.mark))
                    continue
                }
                entries.append(ConfigNode.Entry(key: keyText, keyLocation: location(key.mark), value: convert(value)))
            }
            return ConfigNode(.map(entries), location: location(mapping.mark))
        case .sequence(let sequence):
            return ConfigNode(.list(sequence.map { convert($0) }), location: location(sequence.mark))
        case .alias:
            error(
                "YAML aliases are not supported in pipeline files", hint: "write the value out", at: location(node.mark)
            )
            return ConfigNode(.scalar(nil), location: location(node.mark))
        }
    }

    mutating func reportYAML(_ yamlError: YamlError) {
        switch yamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            error(
                "invalid YAML: \(problem)" + (context.map { " (\($0.text))" } ?? ""),
                hint: "check indentation and quoting near here",
                at: location(mark)
            )
        case .duplicatedKeysInMapping(let duplicates, let context):
            // Yams stops at the first map with a duplicate; the block-style
            // scan finds every one, each where it is written again.
            let found = Self.duplicateKeys(in: context.text)
            if !found.isEmpty {
                for duplicate in found {
                    error(
                        "duplicate key '\(duplicate.key)' (first at line \(duplicate.firstLine))",
                        hint: "each key (and each stage name) may appear once in a map; rename or merge them",
                        at: SourceLocation(file: file, line: duplicate.line, column: duplicate.column))
                }
                return
            }
            error(
                "duplicate key\(duplicates.count > 1 ? "s" : "") \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in one map (the first is here)",
                hint: "each key (and each stage name) may appear once; rename or merge them",
                at: location(context.mark)
            )
        default:
            error("invalid YAML: \(yamlError)", at: nil)
        }
    }

    struct DuplicateKey: Equatable {
        var key: String
        var line: Int
        var column: Int
        var firstLine: Int
    }

    /// Keys written twice in one block-style map, found line by line
    /// (indentation opens and closes maps; `- ` starts a map in a list;
    /// block scalars and comments are skipped). Flow maps (`{...}`) are not
    /// looked into: Yams reports those.
    static func duplicateKeys(in text: String) -> [DuplicateKey] {
        var found: [DuplicateKey] = []
        // Open maps, innermost last: their key column and keys (with lines).
        var maps: [(column: Int, keys: [String: Int])] = []
        var blockScalarIndent: Int?
        let keyPattern =
            /^(?<indent> *)(?<dash>- +)?(?<key>[^\s#:{}\[\]'"-][^:#{}\[\]]*?|"[^"]*"|'[^']*') *:(?<rest>\s.*|$)/
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            let indent = line.prefix { $0 == " " }.count
            let content = line.dropFirst(indent)
            if content.isEmpty || content.hasPrefix("#") { continue }
            if let block = blockScalarIndent {
                if indent > block { continue }
                blockScalarIndent = nil
            }
            if content.hasPrefix("---") {
                maps.removeAll()
                continue
            }
            guard let match = line.firstMatch(of: keyPattern) else { continue }
            let column = indent + (match.output.dash?.count ?? 0)
            var key = String(match.output.key)
            if key.count >= 2, key.first == "\"" || key.first == "'" { key = String(key.dropFirst().dropLast()) }
            if match.output.dash != nil {
                // A list item: a new map starts at the item's key.
                while let last = maps.last, last.column >= column { maps.removeLast() }
                maps.append((column, [:]))
            } else {
                while let last = maps.last, last.column > column { maps.removeLast() }
                if maps.last?.column != column { maps.append((column, [:])) }
            }
            if let first = maps[maps.count - 1].keys[key] {
                found.append(DuplicateKey(key: key, line: index + 1, column: column + 1, firstLine: first))
            } else {
                maps[maps.count - 1].keys[key] = index + 1
            }
            let rest = match.output.rest.trimmingCharacters(in: .whitespaces)
            if rest.hasPrefix("|") || rest.hasPrefix(">") { blockScalarIndent = indent }
        }
        return found
    }

    mutating func applyOverrides(_ overrides: [String], to config: inout ConfigNode) {
        for override in overrides {
            guard let equals = override.firstIndex(of: "="), equals != override.startIndex else {
                error("--set '\(override)' must look like stage.option=value", at: nil)
                continue
            }
            let path = override[..<equals].split(separator: ".").map(String.init)
            let rawValue = String(override[override.index(after: equals)...])
            var value = ConfigNode(.scalar(rawValue))
            if rawValue.hasPrefix("[") || rawValue.hasPrefix("{"), let parsed = try? Yams.compose(yaml: rawValue) {
                value = convert(parsed)
                value.location = nil
            }
            if path.count == 1 {
                config.set(path, to: value)
                continue
            }
            let stageName = path[0]
            if stageName == "api" {  // a top-level setting: --set api.address=127.0.0.1:9598
                config.set(path, to: value)
                continue
            }
            guard let section = StageKind.allCases.first(where: { config[$0.section]?[stageName] != nil }) else {
                error("--set '\(override)': no stage named '\(stageName)'", at: nil)
                continue
            }
            config.set([section.section] + path, to: value)
        }
    }
}

extension ConfigNode {
    /// Sets the value at `path`, creating maps on the way.
    mutating func set(_ path: [String], to newValue: ConfigNode) {
        guard let key = path.first else {
            self = newValue
            return
        }
        var entries = self.entries ?? []
        if let index = entries.firstIndex(where: { $0.key == key }) {
            entries[index].value.set(Array(path.dropFirst()), to: newValue)
        } else {
            var child = ConfigNode(.map([]))
            child.set(Array(path.dropFirst()), to: newValue)
            entries.append(Entry(key: key, value: child))
        }
        value = .map(entries)
    }
}

import Synchronization

/// The stage types a pipeline file may use.
///
/// Built-in stages register themselves through ``register(_:)``, exactly like
/// an application's own stage types:
///
/// ```swift
/// let registry = StageRegistry.standard()
/// registry.register(.transform("uppercase", summary: "Upper-cases lines", options: []) { _ in Uppercase() })
/// ```
public final class StageRegistry: Sendable {
    /// Keyed by kind, then type: a source and a sink may share a name
    /// (`file` is both), as in Vector.
    private let definitions = Mutex<[StageKind: [String: StageDefinition]]>([:])

    /// Creates an empty registry.
    public init() {}

    /// A registry holding every built-in stage type.
    public static func standard() -> StageRegistry {
        let registry = StageRegistry()
        BuiltinStages.register(in: registry)
        return registry
    }

    /// Adds or replaces a stage type (of its kind).
    public func register(_ definition: StageDefinition) {
        definitions.withLock { $0[definition.kind, default: [:]][definition.type] = definition }
    }

    /// The definition of `type` among stages of `kind`, if registered.
    public func definition(for type: String, kind: StageKind) -> StageDefinition? {
        definitions.withLock { $0[kind]?[type] }
    }

    /// The definitions named `type`, of any kind.
    public func definitions(named type: String) -> [StageDefinition] {
        all.filter { $0.type == type }
    }

    /// All definitions, sorted by kind (sources, transforms, sinks) then type.
    public var all: [StageDefinition] {
        let kinds = StageKind.allCases
        return definitions.withLock { $0.values.flatMap(\.values) }.sorted {
            (kinds.firstIndex(of: $0.kind)!, $0.type) < (kinds.firstIndex(of: $1.kind)!, $1.type)
        }
    }

    /// Validates `options` for stage type `type` and builds the stage. For
    /// apps that configure registered types from code.
    ///
    /// - Throws: ``PipelineFileError`` listing every problem.
    public func makeStage(
        type: String,
        kind: StageKind,
        name: String,
        options: ConfigNode = [:],
        settings: PipelineSettings = PipelineSettings()
    ) throws -> AnyStage {
        guard let definition = definition(for: type, kind: kind) else {
            let known = all.filter { $0.kind == kind }.map(\.type)
            throw PipelineFileError(diagnostics: [
                Diagnostic(
                    "unknown \(kind) type '\(type)'", hint: "\(kind) types: \(known.joined(separator: ", "))", at: nil)
            ])
        }
        var diagnostics: [Diagnostic] = []
        OptionValidator.validate(options, specs: definition.options, path: "", diagnostics: &diagnostics)
        if diagnostics.contains(where: { $0.severity == .error }) { throw PipelineFileError(diagnostics: diagnostics) }
        do {
            return try definition.make(
                StageOptions(stageName: name, node: options, specs: definition.options, settings: settings))
        } catch let error as OptionError {
            throw PipelineFileError(diagnostics: [Diagnostic(error.message, hint: error.hint, at: error.location)])
        } catch let errors as OptionErrors {
            throw PipelineFileError(
                diagnostics: errors.errors.map { Diagnostic($0.message, hint: $0.hint, at: $0.location) })
        }
    }
}

/// Checks option values against their ``OptionSpec``s.
enum OptionValidator {
    static func parseBool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on": true
        case "false", "no", "off": false
        default: nil
        }
    }

    /// Checks every option of a map; `location` (the stage's name, say) is
    /// where a missing required option is reported.
    static func validate(
        _ node: ConfigNode,
        specs: [OptionSpec],
        path: String,
        ignoring: Set<String> = [],
        location: SourceLocation? = nil,
        diagnostics: inout [Diagnostic]
    ) {
        guard let entries = node.entries else {
            diagnostics.append(Diagnostic("expected a map of options, found \(node.shapeName)", at: node.location))
            return
        }
        for entry in entries where !ignoring.contains(entry.key) {
            guard let spec = specs.first(where: { $0.name == entry.key }) else {
                let names = specs.map(\.name) + ignoring
                let hint =
                    closestMatch(to: entry.key, among: names).map { "did you mean '\($0)'?" }
                    ?? (specs.isEmpty
                        ? "this stage takes no options" : "valid options: \(specs.map(\.name).joined(separator: ", "))")
                diagnostics.append(
                    Diagnostic(
                        "unknown option '\(path)\(entry.key)'", hint: hint,
                        at: entry.keyLocation ?? entry.value.location))
                continue
            }
            check(entry.value, spec: spec, path: path + entry.key, diagnostics: &diagnostics)
        }
        for spec in specs where spec.isRequired {
            if node[spec.name]?.scalar == nil, node[spec.name]?.list == nil, node[spec.name]?.entries == nil {
                diagnostics.append(
                    Diagnostic(
                        "missing required option '\(path)\(spec.name)'",
                        hint: "\(spec.name) (\(spec.type.displayName)): \(spec.summary)",
                        at: location ?? node.location
                    )
                )
            }
        }
    }

    static func check(_ value: ConfigNode, spec: OptionSpec, path: String, diagnostics: inout [Diagnostic]) {
        func fail(_ message: String, _ hint: String? = nil) {
            diagnostics.append(Diagnostic("option '\(path)': \(message)", hint: hint, at: value.location))
        }
        switch spec.type {
        case .object(let nested):
            validate(value, specs: nested, path: path + ".", location: value.location, diagnostics: &diagnostics)
            return
        case .stringList:
            if let items = value.list {
                for item in items where item.scalar == nil {
                    diagnostics.append(
                        Diagnostic(
                            "option '\(path)': list items must be strings, found \(item.shapeName)", at: item.location))
                }
            } else if value.scalar == nil {
                fail("expected a string or a list of strings, found \(value.shapeName)")
            }
            return
        default:
            break
        }
        guard let text = value.scalar else {
            if case .scalar(nil) = value.value, !spec.isRequired { return }  // `key:` with no value keeps the default
            fail("expected \(spec.type.displayName), found \(value.shapeName)")
            return
        }
        switch spec.type {
        case .string:
            break
        case .template:
            do {
                _ = try Template(text)
            } catch let error as Template.ParseError {
                fail(error.message, error.hint)
            } catch {}
        case .integer(let range):
            guard let number = Int(text) else { return fail("'\(text)' is not a whole number") }
            if !range.contains(number) { fail("\(number) is out of range", "use \(spec.type.displayName)") }
        case .boolean:
            if parseBool(text) == nil { fail("'\(text)' is not a boolean", "use true or false") }
        case .duration:
            if Units.duration(text) == nil {
                fail("'\(text)' is not a duration", "write a number with a unit: 500ms, 30s, 5m, 2h, 1d")
            }
        case .size:
            if Units.size(text) == nil {
                fail("'\(text)' is not a size", "write bytes or a number with a unit: 64KiB, 1MiB, 2GiB")
            }
        case .choice(let words):
            if !words.contains(text) {
                let suggestion = closestMatch(to: text, among: words).map { "did you mean '\($0)'? " } ?? ""
                fail(
                    "'\(text)' is not one of \(words.joined(separator: ", "))",
                    suggestion + "use one of: \(words.joined(separator: ", "))")
            }
        case .stringList, .object:
            break
        }
    }
}

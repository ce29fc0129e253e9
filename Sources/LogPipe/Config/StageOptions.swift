/// The validated options of one stage, with typed accessors that fall back to
/// the defaults declared in the stage's ``OptionSpec``s.
///
/// Values were checked against their types before a factory sees them, so
/// the accessors do not fail on type. A factory that finds a value it cannot
/// use (say, a template naming an unknown field) throws ``error(_:_:hint:)``,
/// which the loader reports at the option's line and column.
public struct StageOptions: Sendable {
    /// The stage's name in the pipeline.
    public let stageName: String
    /// The pipeline's settings (data directory and so on).
    public let settings: PipelineSettings
    let node: ConfigNode
    let specs: [OptionSpec]
    let path: String

    /// Creates options from a map node; `validate` has usually run already.
    public init(
        stageName: String, node: ConfigNode, specs: [OptionSpec], settings: PipelineSettings = PipelineSettings()
    ) {
        self.init(stageName: stageName, node: node, specs: specs, settings: settings, path: "")
    }

    init(stageName: String, node: ConfigNode, specs: [OptionSpec], settings: PipelineSettings, path: String) {
        self.stageName = stageName
        self.node = node
        self.specs = specs
        self.settings = settings
        self.path = path
    }

    private func spec(_ name: String) -> OptionSpec {
        guard let spec = specs.first(where: { $0.name == name }) else {
            preconditionFailure("stage '\(stageName)' reads option '\(name)' that its definition does not declare")
        }
        return spec
    }

    /// Whether the user wrote the option (as opposed to using its default).
    public func isSet(_ name: String) -> Bool {
        if let value = node[name], value.scalar != nil || value.list != nil || value.entries != nil { return true }
        return false
    }

    /// The raw text of a scalar option, or its default.
    public func string(_ name: String) -> String? {
        node[name]?.scalar ?? spec(name).defaultValue
    }

    /// An integer option.
    public func integer(_ name: String) -> Int {
        string(name).flatMap { Int($0) } ?? 0
    }

    /// A boolean option.
    public func boolean(_ name: String) -> Bool {
        string(name).flatMap { OptionValidator.parseBool($0) } ?? false
    }

    /// A duration option.
    public func duration(_ name: String) -> Duration {
        string(name).flatMap { Units.duration($0) } ?? .zero
    }

    /// A size option, in bytes.
    public func size(_ name: String) -> Int {
        string(name).flatMap { Units.size($0) } ?? 0
    }

    /// A list option (a single scalar counts as a list of one).
    public func stringList(_ name: String) -> [String] {
        if let value = node[name] {
            if let items = value.list { return items.compactMap(\.scalar) }
            if let scalar = value.scalar { return [scalar] }
        }
        return spec(name).defaultValue.map { [$0] } ?? []
    }

    /// A nested map option, or `nil` when not given.
    public func object(_ name: String) -> StageOptions? {
        guard case .object(let nested) = spec(name).type, let value = node[name], value.entries != nil else {
            return nil
        }
        return StageOptions(stageName: stageName, node: value, specs: nested, settings: settings, path: qualified(name))
    }

    /// A template option, parsed.
    public func template(_ name: String) throws -> Template? {
        guard let text = string(name) else { return nil }
        do {
            return try Template(text)
        } catch let failure as Template.ParseError {
            throw error(name, failure.message, hint: failure.hint)
        }
    }

    /// An error about item `item` of list option `name`, located at that item.
    public func error(_ name: String, item: Int, _ message: String, hint: String? = nil) -> OptionError {
        var error = error(name, message, hint: hint)
        if let items = node[name]?.list, item < items.count, let location = items[item].location {
            error.location = location
        }
        return error
    }

    /// An error about option `name`, located where its value was written.
    public func error(_ name: String, _ message: String, hint: String? = nil) -> OptionError {
        OptionError(
            option: qualified(name),
            message: message,
            hint: hint,
            location: node[name]?.location ?? node.location
        )
    }

    private func qualified(_ name: String) -> String {
        path.isEmpty ? name : path + "." + name
    }
}

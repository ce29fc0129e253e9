/// The typed settings a stage is built from. `init()` holds every default:
/// the defaults shown by `logpipe stages` and docs/stages.md are read from
/// it, so the documented and the typed default cannot differ.
public protocol StageSettings: Sendable {
    /// The settings with every option at its default.
    init()
}

/// One option of a stage, declared once: its name, type, meaning and where
/// its value goes in the stage's ``StageSettings``. The ``OptionSpec`` that
/// validation, `logpipe stages` and the stage reference use is made from it,
/// with the default read from `Settings()`.
///
/// ```swift
/// static let options: [StageOption<Settings>] = [
///     .integer("partitions", \.partitions, in: 1...1_000_000, "Number of partitions."),
///     .choice("hash", \.hash, "`crc32` or `fnv1a`."),
/// ]
/// ```
public struct StageOption<Settings: StageSettings>: Sendable {
    /// The spec, with the default read from settings holding the defaults.
    let makeSpec: @Sendable (Settings) -> OptionSpec
    /// Stores the value the user gave (nothing when the option is absent:
    /// the default is already there).
    let apply: @Sendable (StageOptions, inout Settings) throws -> Void
    /// Reads the documented default back as a pipeline file would give it
    /// and says how it differs from the typed default (`nil`: it does not).
    let check: @Sendable (Settings) -> String?

    /// The option as validation and the reference see it.
    public var spec: OptionSpec { makeSpec(Settings()) }

    /// An option with its own reading (values that need a conversion or a
    /// check across options) and no default; `apply` runs only when the user
    /// gave it.
    public static func custom(
        _ name: String, _ type: OptionType, required: Bool = false, _ summary: String,
        apply: @escaping @Sendable (StageOptions, inout Settings) throws -> Void
    ) -> StageOption {
        StageOption(
            makeSpec: { _ in OptionSpec(name, type, required: required, summary) },
            apply: { options, settings in
                if options.isSet(name) { try apply(options, &settings) }
            },
            check: { _ in nil })
    }

    /// Declares an option read with `read` into `keyPath`, its default
    /// shown with `format` and read back with `parse`.
    static func typed<Value: Equatable & Sendable>(
        _ name: String, _ type: OptionType, _ keyPath: WritableKeyPath<Settings, Value> & Sendable,
        required: Bool, _ summary: String, format: @escaping @Sendable (Value) -> String?,
        read: @escaping @Sendable (StageOptions, String) throws -> Value, parse: @escaping @Sendable (String) -> Value?
    ) -> StageOption {
        StageOption(
            makeSpec: { defaults in
                OptionSpec(
                    name, type, default: required ? nil : format(defaults[keyPath: keyPath]), required: required,
                    summary)
            },
            apply: { options, settings in
                guard options.isSet(name) else { return }
                settings[keyPath: keyPath] = try read(options, name)
            },
            check: { defaults in
                let value = defaults[keyPath: keyPath]
                guard !required, let text = format(value) else { return nil }
                guard let parsed = parse(text) else { return "\(name): default '\(text)' does not parse" }
                return parsed == value ? nil : "\(name): default '\(text)' reads back as \(parsed), not \(value)"
            })
    }

    /// A whole number within `range`.
    public static func integer(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Int> & Sendable, in range: ClosedRange<Int>,
        required: Bool = false, _ summary: String
    ) -> StageOption {
        typed(
            name, .integer(range), keyPath, required: required, summary, format: { String($0) },
            read: { options, name in options.integer(name) }, parse: { Int($0) })
    }

    /// `true` or `false`.
    public static func boolean(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Bool> & Sendable, _ summary: String
    ) -> StageOption {
        typed(
            name, .boolean, keyPath, required: false, summary, format: { String($0) },
            read: { options, name in options.boolean(name) }, parse: { OptionValidator.parseBool($0) })
    }

    /// A duration (`500ms`, `30s`); `positive` refuses 0.
    public static func duration(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Duration> & Sendable, positive: Bool = false,
        _ summary: String
    ) -> StageOption {
        typed(
            name, .duration, keyPath, required: false, summary, format: { Units.format($0) },
            read: { options, name in
                let value = options.duration(name)
                if positive, value <= .zero { throw options.error(name, "must be longer than 0") }
                return value
            }, parse: { Units.duration($0) })
    }

    /// A size in bytes (`64KiB`), at least `minimum`.
    public static func size(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Int> & Sendable, minimum: Int = 0, _ summary: String
    ) -> StageOption {
        typed(
            name, .size, keyPath, required: false, summary, format: { Units.formatSize($0) },
            read: { options, name in
                let value = options.size(name)
                if value < minimum {
                    throw options.error(name, "must be at least \(Units.formatSize(minimum))")
                }
                return value
            }, parse: { Units.size($0) })
    }

    /// One of the cases of `Value`, written as their raw values.
    public static func choice<Value: RawRepresentable & CaseIterable & Equatable & Sendable>(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Value> & Sendable, _ summary: String
    ) -> StageOption where Value.RawValue == String {
        typed(
            name, .choice(Value.allCases.map(\.rawValue)), keyPath, required: false, summary,
            format: { $0.rawValue },
            read: { options, name in
                // Validation accepted only the listed words.
                Value(rawValue: options.string(name) ?? "") ?? Settings()[keyPath: keyPath]
            }, parse: { Value(rawValue: $0) })
    }

    /// Text, with a default.
    public static func string(
        _ name: String, _ keyPath: WritableKeyPath<Settings, String> & Sendable, required: Bool = false,
        _ summary: String
    ) -> StageOption {
        typed(
            name, .string, keyPath, required: required, summary, format: { $0.isEmpty ? nil : $0 },
            read: { options, name in options.string(name) ?? "" }, parse: { $0 })
    }

    /// Text without a default.
    public static func string(
        _ name: String, _ keyPath: WritableKeyPath<Settings, String?> & Sendable, _ summary: String
    ) -> StageOption {
        typed(
            name, .string, keyPath, required: false, summary, format: { $0 },
            read: { options, name in options.string(name) }, parse: { $0 })
    }

    /// A list of texts (a single text counts as a list of one).
    public static func stringList(
        _ name: String, _ keyPath: WritableKeyPath<Settings, [String]> & Sendable, required: Bool = false,
        _ summary: String
    ) -> StageOption {
        typed(
            name, .stringList, keyPath, required: required, summary, format: { _ in nil },
            read: { options, name in options.stringList(name) }, parse: { [$0] })
    }

    /// A template with `{field}` placeholders.
    public static func template(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Template> & Sendable, required: Bool = false,
        _ summary: String
    ) -> StageOption {
        typed(
            name, .template, keyPath, required: required, summary, format: { $0.text },
            read: { options, name in try options.template(name)! }, parse: { try? Template($0) })
    }

    /// A template without a default.
    public static func template(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Template?> & Sendable, _ summary: String
    ) -> StageOption {
        typed(
            name, .template, keyPath, required: false, summary, format: { $0?.text },
            read: { options, name in try options.template(name) }, parse: { try? Template($0) })
    }

    /// A map with options of its own, read into `keyPath`.
    public static func object<Nested: StageSettings>(
        _ name: String, _ keyPath: WritableKeyPath<Settings, Nested> & Sendable, _ options: [StageOption<Nested>],
        required: Bool = false, _ summary: String
    ) -> StageOption {
        StageOption(
            makeSpec: { defaults in
                let nested = defaults[keyPath: keyPath]
                return OptionSpec(name, .object(options.map { $0.makeSpec(nested) }), required: required, summary)
            },
            apply: { stageOptions, settings in
                guard let nested = stageOptions.object(name) else { return }
                for option in options { try option.apply(nested, &settings[keyPath: keyPath]) }
            },
            check: { defaults in
                let problems = options.compactMap { $0.check(defaults[keyPath: keyPath]) }
                return problems.isEmpty ? nil : problems.map { "\(name).\($0)" }.joined(separator: "; ")
            })
    }

    /// The same option for settings that hold these at `keyPath` (options
    /// several stages share: NATS connections, line handling). Its default
    /// is the outer settings' value.
    public func lifted<Outer: StageSettings>(_ keyPath: WritableKeyPath<Outer, Settings> & Sendable) -> StageOption<
        Outer
    > {
        let (makeSpec, apply, check) = (self.makeSpec, self.apply, self.check)
        return StageOption<Outer>(
            makeSpec: { makeSpec($0[keyPath: keyPath]) },
            apply: { options, settings in try apply(options, &settings[keyPath: keyPath]) },
            check: { check($0[keyPath: keyPath]) })
    }
}

extension Array {
    /// Reads the options the user gave into settings that start at their
    /// defaults.
    public func read<Settings: StageSettings>(_ options: StageOptions) throws -> Settings
    where Element == StageOption<Settings> {
        var settings = Settings()
        for option in self { try option.apply(options, &settings) }
        return settings
    }

    /// Where a documented default would not read back as the typed one.
    public func defaultMismatches<Settings: StageSettings>() -> [String] where Element == StageOption<Settings> {
        let defaults = Settings()
        return compactMap { $0.check(defaults) }
    }
}

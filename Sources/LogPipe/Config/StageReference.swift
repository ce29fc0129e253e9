/// The reference of stage types and their options, generated from the same
/// definitions the validator uses (`logpipe stages`, docs/stages.md).
public enum StageReference {
    /// Renders every stage type of `registry` as plain text or Markdown.
    public static func render(_ registry: StageRegistry, markdown: Bool) -> String {
        var text = ""
        for kind in StageKind.allCases {
            let definitions = registry.all.filter { $0.kind == kind }
            guard !definitions.isEmpty else { continue }
            text += markdown ? "### \(kind.section.capitalized)\n\n" : "\(kind.section.uppercased())\n\n"
            for definition in definitions {
                if markdown {
                    text += "#### `\(definition.type)`\n\n\(definition.summary)\n\n"
                    if definition.options.isEmpty {
                        text += "No options.\n\n"
                    } else {
                        text += "| option | type | default | description |\n|---|---|---|---|\n"
                        for option in flattened(definition.options) {
                            let fallback =
                                option.spec.isRequired ? "required" : option.spec.defaultValue.map { "`\($0)`" } ?? "—"
                            // A `|` inside a cell would end it.
                            let cells = [
                                "`\(option.name)`", option.spec.type.displayName, fallback, option.spec.summary,
                            ]
                            .map { String($0.flatMap { $0 == "|" ? ["\\", "|"] : [$0] }) }
                            text += "| " + cells.joined(separator: " | ") + " |\n"
                        }
                        text += "\n"
                    }
                } else {
                    text += "  \(definition.type): \(definition.summary)\n"
                    for option in flattened(definition.options) {
                        let fallback =
                            option.spec.isRequired
                            ? "required" : option.spec.defaultValue.map { "default \($0)" } ?? "optional"
                        text +=
                            "      \(option.name) (\(option.spec.type.displayName); \(fallback)): \(option.spec.summary)\n"
                    }
                    text += "\n"
                }
            }
        }
        return text
    }

    private static func flattened(_ specs: [OptionSpec], prefix: String = "") -> [(name: String, spec: OptionSpec)] {
        specs.flatMap { spec -> [(name: String, spec: OptionSpec)] in
            if case .object(let nested) = spec.type {
                return [(prefix + spec.name, spec)] + flattened(nested, prefix: prefix + spec.name + ".")
            }
            return [(prefix + spec.name, spec)]
        }
    }
}

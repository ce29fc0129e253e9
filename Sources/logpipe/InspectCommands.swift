import ArgumentParser
import Foundation
import LogPipe
import LogPipeNATS

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check pipeline files without running anything; prints every problem with file:line:column."
    )

    @Argument(help: "Pipeline files to check.")
    var files: [String]

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp("Override an option: stage.option=value (repeatable).", valueName: "stage.option=value"))
    var overrides: [String] = []

    func run() throws {
        let loader = PipelineLoader(registry: .all())
        var failed = false
        for file in files {
            let result = loader.load(file: file, overrides: overrides)
            printDiagnostics(result.diagnostics)
            if result.errors.isEmpty {
                let warnings = result.diagnostics.count
                print("\(file): ok" + (warnings > 0 ? " (\(warnings) warning\(warnings == 1 ? "" : "s"))" : ""))
            } else {
                failed = true
                print("\(file): \(result.errors.count) error\(result.errors.count == 1 ? "" : "s")")
            }
        }
        if failed { throw ExitCode(ExitStatus.configurationError) }
    }
}

struct GraphCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graph",
        abstract: "Print a pipeline's stage graph as Graphviz DOT or Mermaid."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case dot, mermaid
    }

    @Argument(help: "The pipeline file.")
    var file: String

    @Option(help: "Output format: dot or mermaid.")
    var format: Format = .dot

    func run() throws {
        let result = PipelineLoader(registry: .all()).load(file: file)
        guard let pipeline = result.pipeline else {
            printDiagnostics(result.diagnostics)
            throw ExitCode(ExitStatus.configurationError)
        }
        print(GraphRenderer.render(pipeline, format: format), terminator: "")
    }
}

enum GraphRenderer {
    static func render(_ pipeline: Pipeline, format: GraphCommand.Format) -> String {
        var text = ""
        switch format {
        case .dot:
            text += "digraph pipeline {\n  rankdir=LR;\n"
            for node in pipeline.nodes {
                let shape =
                    switch node.stage.kind {
                    case .source: "invhouse"
                    case .transform: "box"
                    case .sink: "house"
                    }
                text +=
                    "  \"\(node.name)\" [label=\"\(node.name)\\n(\(node.typeName ?? "\(node.stage.kind)"))\", shape=\(shape)];\n"
            }
            for node in pipeline.nodes {
                for input in node.inputs { text += "  \"\(input)\" -> \"\(node.name)\";\n" }
            }
            text += "}\n"
        case .mermaid:
            text += "flowchart LR\n"
            for node in pipeline.nodes {
                let label = "\(node.name)<br/>\(node.typeName ?? "\(node.stage.kind)")"
                let id = mermaidID(node.name)
                let line =
                    switch node.stage.kind {
                    case .source: "  \(id)([\"\(label)\"])\n"
                    case .transform: "  \(id)[\"\(label)\"]\n"
                    case .sink: "  \(id)[(\"\(label)\")]\n"
                    }
                text += line
            }
            for node in pipeline.nodes {
                for input in node.inputs { text += "  \(mermaidID(input)) --> \(mermaidID(node.name))\n" }
            }
        }
        return text
    }

    static func mermaidID(_ name: String) -> String {
        "s_" + name.replacingOccurrences(of: "-", with: "_")
    }
}

struct StagesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stages",
        abstract: "List every stage type with its options, defaults and a description."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, markdown
    }

    @Option(help: "Output format: text or markdown (docs/stages.md).")
    var format: Format = .text

    func run() throws {
        print(StageReference.render(StageRegistry.all(), markdown: format == .markdown), terminator: "")
    }
}

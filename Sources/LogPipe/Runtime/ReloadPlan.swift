/// What a reload changes, worked out from the running graph and the new one
/// before anything is touched.
///
/// A stage is kept when its name, type name and ``Pipeline/Node/configuration``
/// are the same (its inputs may differ: edges are added and removed around
/// it). A stage whose type or options changed is swapped: the old instance
/// drains and the new one takes over its input and output. Edges are only
/// planned for producers in both graphs; a removed producer lets go of its
/// consumers itself when it ends.
struct ReloadPlan: Equatable {
    struct Edge: Hashable {
        var producer: String
        var consumer: String
    }

    var added: [String] = []
    var removed: [String] = []
    var changed: [String] = []
    var unchanged: [String] = []
    /// Edges from a stage of both graphs to a consumer it did not feed.
    var edgesAdded: [Edge] = []
    /// Edges from a stage of both graphs to a consumer it no longer feeds.
    var edgesRemoved: [Edge] = []
    /// Why the new graph cannot replace the running one live.
    var problems: [String] = []
    /// What the reload leaves as it was (settings that need a restart).
    var notes: [String] = []

    init(from old: Pipeline, to new: Pipeline) {
        let oldNodes = Dictionary(old.nodes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let newNames = Set(new.nodes.map(\.name))
        for node in new.nodes {
            guard let previous = oldNodes[node.name] else {
                added.append(node.name)
                continue
            }
            if previous.stage.kind != node.stage.kind {
                problems.append(
                    "stage '\(node.name)' was a \(previous.stage.kind) and is now a \(node.stage.kind): give it another name, or restart logpipe"
                )
            } else if node.configuration != nil, previous.configuration == node.configuration,
                previous.typeName == node.typeName
            {
                unchanged.append(node.name)
            } else {
                changed.append(node.name)
            }
        }
        removed = old.nodes.map(\.name).filter { !newNames.contains($0) }
        for node in new.nodes where oldNodes[node.name] != nil {
            let before = Set(old.consumers(of: node.name))
            let after = new.consumers(of: node.name)
            edgesAdded += after.filter { !before.contains($0) }.map { Edge(producer: node.name, consumer: $0) }
            edgesRemoved += old.consumers(of: node.name).filter { !after.contains($0) }.map {
                Edge(producer: node.name, consumer: $0)
            }
        }

        let before = old.settings
        let after = new.settings
        if after.dataDirectory != before.dataDirectory {
            problems.append(
                "data_dir changed from '\(before.dataDirectory)' to '\(after.dataDirectory)': the running stages keep their state there; restart logpipe to move it"
            )
        }
        if after.edgeCapacity != before.edgeCapacity {
            notes.append(
                "edge_capacity \(after.edgeCapacity) applies to stages added from now; restart to apply it to all")
        }
        if after.apiAddress != before.apiAddress {
            notes.append("api.address changes at the next restart; the API stays where it is")
        }
    }

    /// True when nothing changes.
    var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && changed.isEmpty && edgesAdded.isEmpty && edgesRemoved.isEmpty
    }
}

/// What a reload did, returned by ``PipelineRunner/reload(to:)``.
public struct ReloadReport: Sendable, Equatable, CustomStringConvertible {
    /// Stages started by the reload.
    public var added: [String]
    /// Stages drained and stopped.
    public var removed: [String]
    /// Stages whose type or options changed: drained and swapped.
    public var changed: [String]
    /// Stages that kept running untouched (their inputs may have changed).
    public var unchanged: [String]
    /// Swapped or removed stages still draining when the reload stopped
    /// waiting (after `shutdown_timeout`); they finish in the background.
    public var stillDraining: [String]
    /// Settings the reload could not apply live (they apply at restart).
    public var notes: [String]

    public var description: String {
        func list(_ names: [String]) -> String { names.isEmpty ? "none" : names.joined(separator: ", ") }
        var text =
            "changed: \(list(changed)); added: \(list(added)); removed: \(list(removed)); unchanged: \(list(unchanged))"
        if !stillDraining.isEmpty { text += "; still draining: \(list(stillDraining))" }
        for note in notes { text += "; \(note)" }
        return text
    }
}

/// Why ``PipelineRunner/reload(to:)`` left the running pipeline as it was.
public enum ReloadError: Error, CustomStringConvertible, Equatable {
    /// The pipeline is not running (not started yet, stopping or ended).
    case notRunning(PipelinePhase)
    /// Another reload is being applied; try again when it is done.
    case inProgress
    /// The new pipeline cannot replace the running one; each string says why.
    case rejected([String])

    public var description: String {
        switch self {
        case .notRunning(let phase):
            return "the pipeline is \(phase.rawValue), so it cannot be reloaded"
        case .inProgress:
            return "a reload is being applied; try again once it is done"
        case .rejected(let problems):
            return "the new pipeline was not applied:\n" + problems.map { "  - " + $0 }.joined(separator: "\n")
        }
    }
}

// Stage types are named after their stage type and kind
// (`<Name>Source|Transform|Sink`); the old names still compile.

@available(*, deprecated, renamed: "RegexTransform")
public typealias RegexFilter = RegexTransform

@available(*, deprecated, renamed: "SeverityTransform")
public typealias SeverityFilter = SeverityTransform

@available(*, deprecated, renamed: "PartitionTransform")
public typealias PartitionStage = PartitionTransform

@available(*, deprecated, renamed: "FileSource")
public typealias FileTailSource = FileSource

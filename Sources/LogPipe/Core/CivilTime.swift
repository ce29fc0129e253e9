/// Calendar fields of a UTC timestamp, without Foundation.
struct CivilTime {
    var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, milliseconds3: Int

    init(_ time: Timestamp) {
        let milliseconds = time.nanosecondsSinceEpoch / 1_000_000
        let seconds = Int(milliseconds / 1000)
        milliseconds3 = Int(milliseconds % 1000)
        var days = seconds / 86400
        let secondOfDay = seconds % 86400
        hour = secondOfDay / 3600
        minute = secondOfDay / 60 % 60
        second = secondOfDay % 60
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        days += 719_468
        let era = days / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthPrime = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * monthPrime + 2) / 5 + 1
        month = monthPrime < 10 ? monthPrime + 3 : monthPrime - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    }

    static func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
    private func two(_ value: Int) -> String { Self.twoDigits(value) }
    var dayOfYear: Int {
        let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        return cumulative[month - 1] + day + (leap && month > 2 ? 1 : 0)
    }
    var clock: String { "\(two(hour)):\(two(minute)):\(two(second))" }
    var date: String { "\(year)-\(two(month))-\(two(day))" }
    var milliseconds: String {
        milliseconds3 < 10 ? "00\(milliseconds3)" : milliseconds3 < 100 ? "0\(milliseconds3)" : "\(milliseconds3)"
    }
    var iso8601: String { "\(date)T\(clock).\(milliseconds)Z" }
}

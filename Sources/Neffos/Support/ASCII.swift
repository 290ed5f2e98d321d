/// ASCII comparisons without copies, for HTTP header names and tokens.
///
/// Concrete overloads (not one generic function): called from another module, a generic
/// would run unspecialized, through protocol witnesses, per byte.
package enum ASCII {
    /// Whether `a` and `b` are the same bytes, ASCII letters compared without case.
    package static func equalsIgnoringCase(_ a: Substring.UTF8View, _ b: String.UTF8View) -> Bool {
        compare(a, b)
    }

    /// Whether `a` and `b` are the same bytes, ASCII letters compared without case.
    package static func equalsIgnoringCase(_ a: String.UTF8View, _ b: String.UTF8View) -> Bool {
        compare(a, b)
    }

    /// Whether `a` and `b` are the same bytes, ASCII letters compared without case.
    package static func equalsIgnoringCase(_ a: ArraySlice<UInt8>, _ b: String.UTF8View) -> Bool {
        compare(a, b)
    }

    @inline(__always)
    private static func compare(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        a.count == b.count && a.elementsEqual(b) { x, y in
            x == y || (x | 0x20 == y | 0x20 && (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(x | 0x20))
        }
    }
}

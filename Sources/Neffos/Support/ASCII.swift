/// ASCII comparisons without copies, for HTTP header names and tokens.
package enum ASCII {
    /// Whether `a` and `b` are the same bytes, ASCII letters compared without case.
    package static func equalsIgnoringCase(_ a: some Sequence<UInt8>, _ b: some Sequence<UInt8>) -> Bool {
        a.elementsEqual(b) { x, y in
            x == y || (x | 0x20 == y | 0x20 && (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(x | 0x20))
        }
    }
}

extension Server {
    /// A random UUID (version 4) as lower-case text, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`: the
    /// default connection ID.
    ///
    /// Written straight from 16 random bytes into the string's storage: the same form as
    /// `UUID().uuidString.lowercased()` with one allocation instead of three (it runs per
    /// connect).
    public static func randomConnectionID() -> String {
        var random = SystemRandomNumberGenerator()
        // Version 4 in the high nibble of byte 6, variant 10 in the top bits of byte 8.
        let high = (random.next() & ~UInt64(0xF000)) | 0x4000
        let low = (random.next() & ~UInt64(0xC000_0000_0000_0000)) | 0x8000_0000_0000_0000
        return String(unsafeUninitializedCapacity: 36) { out in
            var index = 0
            for nibble in 0..<32 {
                if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 {
                    out[index] = UInt8(ascii: "-")
                    index += 1
                }
                let word = nibble < 16 ? high : low
                let value = UInt8(truncatingIfNeeded: word >> UInt64(60 - 4 * (nibble % 16))) & 0xF
                out[index] = value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
                index += 1
            }
            return index
        }
    }
}

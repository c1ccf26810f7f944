extension UInt8 {
    /// `0-9`, `A-Z` or `a-z`: the byte test of the ASCII fast paths that stand in for
    /// `Character.isLetter || isNumber` (names, Message-ID stems, MIME boundaries, narrations).
    @inlinable public var isASCIIAlphanumeric: Bool {
        (self >= 0x30 && self <= 0x39) || (self >= 0x41 && self <= 0x5A) || (self >= 0x61 && self <= 0x7A)
    }
}

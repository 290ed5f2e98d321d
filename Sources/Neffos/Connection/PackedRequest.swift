import HTTPTypes

/// An upgrade request's line and header fields packed into one byte buffer: what
/// ``UpgradeRequest`` keeps for the life of its connection.
///
/// As `HTTPRequest` and `HTTPFields` values, the request of a browser's upgrade takes a
/// dozen allocations and about a kilobyte more than its text; packed, one allocation of about
/// its size. The parts are rebuilt when read; ``value(of:)`` looks a header up in place.
///
/// Layout: method, scheme, authority, path, then name and value of each field, every string as
/// a LEB128 length and its UTF-8 bytes. The first ``requestFieldCount`` pairs are the request's
/// own fields, the rest extra ones: the `X-Websocket-Header-*` query parameters folded in, or,
/// with ``extraReplaces``, the whole list set through ``UpgradeRequest/headerFields``.
struct PackedRequest: Sendable {
    private var bytes: [UInt8] = []
    private var requestFieldCount: UInt32 = 0
    private var hasScheme = false
    private var hasAuthority = false
    /// Whether the extra fields are the whole header list (set explicitly), not an addition.
    private(set) var extraReplaces = false

    init(
        method: String, scheme: String?, authority: String?, path: String,
        fields: some Sequence<(name: String, value: String)>, folded: [(name: String, value: String)]
    ) {
        hasScheme = scheme != nil
        hasAuthority = authority != nil
        for part in [method, scheme ?? "", authority ?? "", path] { append(part) }
        for (name, value) in fields {
            append(name)
            append(value)
            requestFieldCount += 1
        }
        for (name, value) in folded where HTTPField.Name(name) != nil {
            append(name)
            append(value)
        }
        // Appending grew the array by doubling: kept for the connection's life, up to half of
        // it would be spare capacity (~100 bytes of a typical upgrade's).
        if bytes.capacity - bytes.count > 16 {
            bytes = [UInt8](unsafeUninitializedCapacity: bytes.count) { buffer, count in
                count = buffer.initialize(fromContentsOf: bytes)
            }
        }
    }

    init(_ request: HTTPRequest, folded: [HTTPField], extraReplaces: Bool = false) {
        self.init(
            method: request.method.rawValue, scheme: request.scheme, authority: request.authority, path: request.path ?? "/",
            fields: request.headerFields.lazy.map { ($0.name.rawName, $0.value) },
            folded: folded.map { ($0.name.rawName, $0.value) })
        self.extraReplaces = extraReplaces
    }

    // MARK: Reading

    /// The path with its query.
    var path: String {
        var path = "/"
        walk { index, range in
            if index == 3 { path = string(range) }
            return index < 3
        }
        return path
    }

    /// The request: method, scheme, authority, path and its own fields.
    func request() -> HTTPRequest {
        var line: [String] = []
        var fields = HTTPFields()
        var name: Range<Int>?
        walk { index, range in
            if index < 4 {
                line.append(string(range))
            } else if (index - 4) / 2 >= Int(requestFieldCount) {
                return false
            } else if let named = name {
                if let fieldName = HTTPField.Name(string(named)) { fields.append(HTTPField(name: fieldName, value: string(range))) }
                name = nil
            } else {
                name = range
            }
            return true
        }
        while line.count < 4 { line.append("") }
        return HTTPRequest(
            method: HTTPRequest.Method(line[0]) ?? .get, scheme: hasScheme ? line[1] : nil, authority: hasAuthority ? line[2] : nil,
            path: line[3], headerFields: fields)
    }

    /// The header fields a lookup sees: the request's and the folded ones, or the list set
    /// in their place.
    func fields() -> HTTPFields {
        var fields = HTTPFields()
        forEachField(visibleOnly: true) { name, value in
            if let fieldName = HTTPField.Name(string(name)) { fields.append(HTTPField(name: fieldName, value: string(value))) }
        }
        return fields
    }

    /// The extra fields (folded, or set in place of the list).
    func extraFields() -> [HTTPField] {
        var fields: [HTTPField] = []
        var index = 0
        forEachField(visibleOnly: false) { name, value in
            defer { index += 1 }
            guard index >= Int(requestFieldCount), let fieldName = HTTPField.Name(string(name)) else { return }
            fields.append(HTTPField(name: fieldName, value: string(value)))
        }
        return fields
    }

    /// The value of the fields named `name` (ASCII case ignored): one field's value, or
    /// several joined with `, ` (`; ` for `Cookie`); `nil` when there is none. Names are
    /// compared in place, with no copy.
    func value(of name: String) -> String? {
        var found: String?
        forEachField(visibleOnly: true) { fieldName, value in
            guard ASCII.equalsIgnoringCase(bytes[fieldName], name.utf8) else { return }
            if let earlier = found {
                found = earlier + (ASCII.equalsIgnoringCase(name.utf8, "cookie".utf8) ? "; " : ", ") + string(value)
            } else {
                found = string(value)
            }
        }
        return found
    }

    // MARK: Packing

    private mutating func append(_ string: String) {
        var length = UInt(string.utf8.count)
        repeat {
            let low = UInt8(length & 0x7F)
            length >>= 7
            bytes.append(length == 0 ? low : low | 0x80)
        } while length != 0
        bytes.append(contentsOf: string.utf8)
    }

    /// Calls `body` with the index and byte range of each packed string, in order, while it
    /// returns `true`.
    private func walk(_ body: (Int, Range<Int>) -> Bool) {
        var offset = 0
        var index = 0
        while offset < bytes.count {
            var length = 0
            var shift = 0
            while offset < bytes.count {
                let byte = bytes[offset]
                offset += 1
                length |= Int(byte & 0x7F) << shift
                shift += 7
                if byte & 0x80 == 0 { break }
            }
            let end = min(bytes.count, offset + length)
            guard body(index, offset..<end) else { return }
            offset = end
            index += 1
        }
    }

    /// Calls `body` with the name and value ranges of each field (with `visibleOnly`, only
    /// those a lookup sees: all, or the extra ones when they replace the list).
    private func forEachField(visibleOnly: Bool, _ body: (Range<Int>, Range<Int>) -> Void) {
        var name: Range<Int>?
        walk { index, range in
            guard index >= 4 else { return true }
            if let named = name {
                if !visibleOnly || !extraReplaces || (index - 4) / 2 >= Int(requestFieldCount) { body(named, range) }
                name = nil
            } else {
                name = range
            }
            return true
        }
    }

    private func string(_ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }
}

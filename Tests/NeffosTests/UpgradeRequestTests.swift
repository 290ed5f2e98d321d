import HTTPTypes
import Testing
@testable import Neffos

/// ``UpgradeRequest`` keeps its request packed (``PackedRequest``): what it gives back must be
/// what it was given.
@Suite("The upgrade request")
struct UpgradeRequestTests {
    static let host = HTTPField.Name("Host")!

    static let long = String(repeating: "v", count: 300) + "é"

    static func request(path: String = "/chat?room=1") -> HTTPRequest {
        var fields = HTTPFields()
        fields[Self.host] = "example.com"
        fields.append(HTTPField(name: HTTPField.Name("X-Long")!, value: long))
        fields.append(HTTPField(name: .cookie, value: "a=1"))
        fields.append(HTTPField(name: .cookie, value: "b=2"))
        fields.append(HTTPField(name: HTTPField.Name("X-Twice")!, value: "one"))
        fields.append(HTTPField(name: HTTPField.Name("x-twice")!, value: "two"))
        return HTTPRequest(method: .get, scheme: "https", authority: "example.com", path: path, headerFields: fields)
    }

    @Test("the request comes back as given: method, scheme, authority, path and fields in order, names as sent")
    func roundTrip() {
        let http = Self.request()
        let request = UpgradeRequest(http, remoteAddress: "[IPv4]127.0.0.1:5000")
        #expect(request.http == http)
        #expect(request.http.headerFields.map(\.name.rawName) == ["Host", "X-Long", "Cookie", "Cookie", "X-Twice", "x-twice"])
        #expect(request.path == "/chat")
        #expect(request.query == "room=1")
        #expect(request.remoteAddress == "[IPv4]127.0.0.1:5000")
        let bare = UpgradeRequest(HTTPRequest(method: .post, scheme: nil, authority: nil, path: "/", headerFields: [:]))
        #expect(bare.http.scheme == nil && bare.http.authority == nil && bare.http.method == .post)
    }

    @Test("an IPv4 peer is kept as numbers and read as host:port; other addresses as given")
    func peerAddress() {
        #expect(PeerAddress.ipv4(0x7F00_0001, port: 5000).description == "127.0.0.1:5000")
        #expect(PeerAddress.ipv4(0xCB71_91C9, port: 65535).description == "203.113.145.201:65535")
        var request = UpgradeRequest(method: "GET", scheme: nil, authority: nil, path: "/", fields: [], peer: .ipv4(0x0A00_0002, port: 80))
        #expect(request.remoteAddress == "10.0.0.2:80")
        request.remoteAddress = "[::1]:9"
        #expect(request.remoteAddress == "[::1]:9")
        request.remoteAddress = nil
        #expect(request.remoteAddress == nil)
    }

    @Test("a header is looked up ignoring case; several fields of a name read as one value, cookies joined with ;")
    func lookups() {
        let request = UpgradeRequest(Self.request())
        #expect(request.header("HOST") == "example.com")
        #expect(request.header("x-long") == Self.long)
        #expect(request.header("X-TWICE") == "one, two")
        #expect(request.header("cookie") == "a=1; b=2")
        #expect(request.header("missing") == nil)
        #expect(request.header("") == nil)
    }

    @Test("X-Websocket-Header-* query parameters are fields after the request's, not part of http")
    func folded() {
        let request = UpgradeRequest(Self.request(path: "/?X-Websocket-Header-X-Username=b%C3%B6b&plain=1"))
        #expect(request.header("X-Username") == "böb")
        #expect(request.headerFields.count == Self.request().headerFields.count + 1)
        #expect(request.http.headerFields[HTTPField.Name("X-Username")!] == nil)
        let unfolded = UpgradeRequest(Self.request(path: "/?X-Websocket-Header-X-Username=a"), foldingQueryHeaders: false)
        #expect(unfolded.header("X-Username") == nil)
    }

    @Test("setting the fields replaces what lookups see and leaves http alone; setting http keeps the folded fields")
    func setters() {
        var request = UpgradeRequest(Self.request(path: "/?X-Websocket-Header-X-Username=a"))
        var http = request.http
        http.headerFields[Self.host] = "other.example"
        request.http = http
        #expect(request.header("host") == "other.example")
        #expect(request.header("X-Username") == "a")
        request.headerFields = HTTPFields([HTTPField(name: HTTPField.Name("X-Only")!, value: "1")])
        #expect(request.header("X-Only") == "1")
        #expect(request.header("host") == nil)
        #expect(request.headerFields.count == 1)
        #expect(request.http.headerFields[Self.host] == "other.example")
    }

    @Test("a request from a transport's parts packs its fields as received")
    func fromParts() {
        let request = UpgradeRequest(
            method: "GET", scheme: "http", authority: "h", path: "/p?X-Websocket-Header-A=1",
            fields: [(name: "Host", value: "h"), (name: "Sec-WebSocket-Key", value: "k")], peer: nil)
        #expect(request.header("sec-websocket-key") == "k")
        #expect(request.header("a") == "1")
        #expect(request.http.method == .get && request.http.path == "/p?X-Websocket-Header-A=1")
    }
}

/// The entries under one connection ID in the server's index: one inline, more in a dictionary.
@Suite("ID entries")
struct IDEntriesTests {
    final class Item {}

    @Test("entries are set, found, removed and listed whether one or several share the ID")
    func entries() {
        let (a, b, c) = (Item(), Item(), Item())
        let (ka, kb, kc) = (ObjectIdentifier(a), ObjectIdentifier(b), ObjectIdentifier(c))
        var entries = IDEntries<Item>()
        #expect(entries.isEmpty)
        entries[ka] = a
        #expect(entries[ka] === a && entries[kb] == nil && entries.values.count == 1)
        entries[kb] = b
        entries[kc] = c
        #expect(Set(entries.map(\.key)) == [ka, kb, kc])
        entries[ka] = nil  // the inline one: another takes its place
        #expect(entries[ka] == nil && entries[kb] === b && entries[kc] === c)
        #expect(Set(entries.values.map(ObjectIdentifier.init)) == [kb, kc])
        entries[kb] = nil
        entries[kc] = nil
        #expect(entries.isEmpty && entries.values.isEmpty)
        entries[kc] = c
        #expect(entries.values.count == 1 && entries[kc] === c)
    }
}

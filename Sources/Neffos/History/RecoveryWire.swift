import NIOCore

/// The frames of the history extension (DocC: *History and recovery*, "The wire"). A client
/// asks for it with the upgrade header `X-Neffos-Recovery: 1`; without it, every frame is
/// exactly the neffos protocol's.
///
/// - A broadcast to a room with history reaches such a client with its position as the wait
///   field: `~<epoch>:<offset>;<namespace>;<room>;<event>;0;0;<body>`.
/// - A join may ask to recover: its body is `~<epoch>:<offset>`, the last position the client
///   received in that room (a first join sends no body).
/// - The server then answers the join with the data reply `~<status> <count> <epoch>:<offset>`:
///   `status` `1` (everything after the position follows), `0` (not everything: trimmed, another
///   epoch, more than the server sends back) or `-` (no recovery asked), `count` the kept
///   messages that follow the reply, and the room's latest position as of the join. Then the
///   `count` messages, positioned, oldest first; then live ones.
package enum RecoveryWire {
    /// The upgrade header a client sends to get positions and recovery.
    package static let header = "X-Neffos-Recovery"
    /// The first byte of a positioned frame's wait field, and of a recovery request's body.
    package static let marker = UInt8(ascii: "~")

    /// How a join's recovery went.
    package enum Status: String, Sendable {
        case recovered = "1", incomplete = "0", notAsked = "-"
    }

    /// `frame` (a broadcast, empty wait field) with `position` as its wait field.
    package static func positioned(_ frame: ByteBuffer, at position: HistoryPosition) -> ByteBuffer {
        prefixed(frame, with: "~\(position)")
    }

    /// `frame` (a broadcast, empty wait field) with `text` as its wait field.
    package static func prefixed(_ frame: ByteBuffer, with text: String) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(text.utf8.count + frame.readableBytes)
        out.writeString(text)
        out.writeImmutableBuffer(frame)
        return out
    }

    /// The position in a wait field `~<epoch>:<offset>`, or `nil`.
    package static func position(inWait wait: String) -> HistoryPosition? {
        guard wait.utf8.first == marker else { return nil }
        return HistoryPosition(wait.dropFirst())
    }

    /// Whether a join's body is the extension's (`~…`), and the position it asks to recover
    /// after: `nil` when the body is the app's; `.some(nil)` for `~` or an unreadable position
    /// (no recovery); `.some(position)` for `~<epoch>:<offset>`.
    package static func recoveryRequest(in body: ByteBuffer) -> HistoryPosition?? {
        guard body.readableBytesView.first == marker, body.readableBytes <= 96 else { return nil }
        return .some(HistoryPosition(String(buffer: body).dropFirst()))
    }

    /// A join's body asking to recover after `position`.
    package static func recoveryBody(after position: HistoryPosition) -> ByteBuffer {
        ByteBuffer(string: "~\(position)")
    }

    /// The join reply's body.
    package static func joinReply(_ status: Status, count: Int, latest: HistoryPosition) -> ByteBuffer {
        ByteBuffer(string: "~\(status.rawValue) \(count) \(latest)")
    }

    /// A room of a namespace (the client's key for the last position it received).
    package struct RoomKey: Hashable, Sendable {
        package var namespace: String
        package var room: String
        package init(_ namespace: String, _ room: String) {
            self.namespace = namespace
            self.room = room
        }
    }

    /// Parses a join reply's body; `nil` when it is not one.
    package static func parseJoinReply(_ body: ByteBuffer) -> (status: Status, count: Int, latest: HistoryPosition)? {
        guard body.readableBytesView.first == marker, body.readableBytes <= 128 else { return nil }
        let fields = String(buffer: body).dropFirst().split(separator: " ")
        guard fields.count == 3, let status = Status(rawValue: String(fields[0])), let count = Int(fields[1]), count >= 0,
            let latest = HistoryPosition(fields[2])
        else { return nil }
        return (status, count, latest)
    }
}

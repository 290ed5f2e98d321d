/// The seeds of the `frames` target (`neffos-fuzz write-seeds frames DIRECTORY`): each is a
/// ``FrameFuzzing/Plan``, two control bytes then client frames, for one path through the
/// server: handshake, namespaces, rooms, asks, broadcasts, control frames, fragments, and
/// the protocol errors.
enum FrameSeeds {
    /// Handshake (`M`) then a connect to `default`, added by the plan.
    private static let connected: UInt8 = 0x03

    private static func seed(_ name: String, _ flags: UInt8, offset: UInt8 = 0, _ frames: [[UInt8]]) -> (name: String, bytes: [UInt8]) {
        (name, [flags, offset] + frames.flatMap { $0 })
    }

    private static func text(_ text: String) -> [UInt8] { ClientFrame.text(text) }

    private static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    static var all: [(name: String, bytes: [UInt8])] {
        [
            seed("handshake", 0, [text("M")]),
            seed("handshake-masked", 0, [ClientFrame.frame(.text, bytes("M"), maskKey: [0x37, 0xFA, 0x21, 0x3D])]),
            seed("connect", 0x01, [text("$1;default;;_OnNamespaceConnect;0;0;")]),
            seed("connect-unknown-namespace", 0x01, [text("$1;nope;;_OnNamespaceConnect;0;0;")]),
            seed("connect-other-disconnect", 0x03, [
                text("$1;other;;_OnNamespaceConnect;0;0;"), text(";other;;anything;0;0;x"),
                text("$2;other;;_OnNamespaceDisconnect;0;0;"), text("$3;default;;_OnNamespaceDisconnect;0;0;"),
            ]),
            seed("echo", connected, [text("$2;default;;echo;0;0;hello")]),
            seed("echo-binary", connected, [ClientFrame.frame(.binary, bytes("$2;default;;echo;0;0;") + [0x00, 0xFF, 0xFE])]),
            seed("echo-escaped-noop", connected, [text("$2;default;a@%!semicolon@%!b;echo;0;1;x;y")]),
            seed("echo-later", connected, [text("$3;default;;echoLater;0;0;later"), text("$4;default;;echo;0;0;now")]),
            seed("echo-before-handshake", 0, [text("$1;default;;echo;0;0;early"), text("M")]),
            seed("broadcast", connected, [text(";default;;broadcast;0;0;hi all")]),
            seed("rooms", connected, [
                text("$4;default;room1;_OnRoomJoin;0;0;"), text(";default;room1;broadcast;0;0;in room"),
                text("$5;default;room1;_OnRoomLeave;0;0;"), text("$6;default;room2;_OnRoomJoin;0;0;"),
            ]),
            seed("askback", connected, [text("$7;default;;askback;0;0;question")]),
            seed("fail", connected, [text("$8;default;;fail;0;0;"), text(";default;;fail;0;0;")]),
            seed("error-reply", connected, [text("$9;default;;echo;1;0;bad namespace")]),
            seed("ping", connected, [ClientFrame.frame(.ping, bytes("p")), ClientFrame.frame(.pong, [])]),
            seed("close", connected, [ClientFrame.frame(.close, [0x03, 0xE8] + bytes("bye"))]),
            seed("close-bad-code", connected, [ClientFrame.frame(.close, [0x03, 0xED])]),
            seed("close-one-byte", connected, [ClientFrame.frame(.close, [0x03])]),
            seed("fragmented-text", connected, [
                ClientFrame.frame(.text, bytes("$7;default;;ec"), fin: false),
                ClientFrame.frame(.ping, bytes("between")),
                ClientFrame.frame(.continuation, bytes("ho;0;0;fr"), fin: false),
                ClientFrame.frame(.continuation, bytes("ag")),
            ]),
            seed("fragmented-utf8", connected, [
                ClientFrame.frame(.text, bytes("$7;default;;echo;0;0;") + [0xE2], fin: false),
                ClientFrame.frame(.continuation, [0x82, 0xAC]),
            ]),
            seed("invalid-utf8", connected, [ClientFrame.frame(.text, bytes("$2;default;;echo;0;0;") + [0xFF, 0xFE])]),
            seed("invalid-utf8-fragment", connected, [
                ClientFrame.frame(.text, bytes("abc") + [0xED, 0xA0], fin: false),
                ClientFrame.frame(.continuation, [0x80]),
            ]),
            seed("unmasked", 0, [[0x81, 0x01] + bytes("M")]),
            seed("reserved-bits", 0x01, [[0xC1, 0x81, 0, 0, 0, 0] + bytes("x")]),
            seed("continuation-first", 0x01, [ClientFrame.frame(.continuation, bytes("x"))]),
            seed("frame-too-big", 0x01, [[0x81, 0xFE, 0x13, 0x88, 0, 0, 0, 0]]),
            seed("control-too-long", 0x01, [[0x89, 0xFE, 0x00, 0x7E, 0, 0, 0, 0] + [UInt8](repeating: 0x61, count: 126)]),
            seed("split-reads", connected | 0x04, offset: 3, [text("$2;default;;echo;0;0;split")]),
            seed("handshake-timeout", 0x08, [text("M")]),
            seed("heartbeat", connected | 0x04 | 0x08, [text("$2;default;;echo;0;0;after a while")]),
            seed("full-outbox", connected | 0x10, [
                text(";default;;broadcast;0;0;dropped"), text("$2;default;;echo;0;0;reliable"),
            ]),
            seed("refused", 0x21, [text("$2;default;;echo;0;0;refused")]),
            seed("accepted-later", 0x43, [text("$2;default;;echo;0;0;later")]),
            seed("many-queued", connected, (0..<12).map { text("$\($0 + 10);default;;echoLater;0;0;\($0)") }),
        ]
    }
}

import NIOCore
import Testing
import NIOPosix
import Synchronization
@testable import Neffos

/// A timer that records whether it was cancelled.
final class FakeTimer: Cancellable {
    private let flag = Atomic<Bool>(false)
    var isCancelled: Bool { flag.load(ordering: .relaxed) }
    func cancel() { flag.store(true, ordering: .relaxed) }
}

/// A transport that only exists: the machine hands it back in its actions, never uses it.
final class FakeTransport: ConnTransport {
    let eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()
    var lane: LoopLane { LoopLane.lane(for: eventLoop) }
    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool { true }
    func flush() {}
    func close(code: CloseCode, reason: String) {}
    func setReadingPaused(_ paused: Bool) {}
}

/// An owner that ignores everything (the machine's tests read its owner events instead).
final class SilentOwner: ConnDelegate {
    func connDidOpen(_ conn: Conn) {}
    func conn(_ conn: Conn, didConnect ns: NSConn, transport: (any ConnTransport)?) {}
    func conn(_ conn: Conn, didDisconnect ns: NSConn) {}
    func conn(_ conn: Conn, didJoin room: String, in ns: NSConn, recovery: JoinRecovery?) {}
    func conn(_ conn: Conn, didLeave room: String, in ns: NSConn) {}
    func connShouldReconnect(_ conn: Conn, reason: CloseReason) -> Bool { false }
    func connDidClose(_ conn: Conn, reason: CloseReason) {}
    func connDidFinish(_ conn: Conn, reason: CloseReason) async {}
    func conn(_ conn: Conn, didReceiveUnmatchedReply reply: Message) -> Bool { false }
}

/// Namespace connections to put into a machine: `NSConn` needs a `Conn` to belong to.
enum Fixture {
    static let owner = SilentOwner()

    static func events() -> Events {
        var events = Events()
        events.on("sync") { _, _ in }
        events.on("async") { _, _ in await Task.yield() }
        return events
    }

    static func conn(isClient: Bool = false) -> Conn {
        Conn(
            isClient: isClient, id: "c1", server: nil, request: UpgradeRequest(), reconnectTries: 0,
            namespaces: ["default": events(), "other": events()],
            settings: ConnSettings(
                askTimeout: .seconds(1), bodyCoder: JSONBodyCoder(), knownErrors: KnownErrors(),
                maxQueuedEvents: 4, maxBytesBeforeHandshake: 100, logger: .init(label: "test")),
            delegate: owner)
    }

    static func ns(_ name: String = "default", of conn: Conn = conn()) -> NSConn {
        NSConn(conn: conn, namespace: name, events: events())
    }

    static let closedByPeer = CloseReason(code: .normal, initiatedLocally: false)
}

/// A server-side machine, open, with a transport.
func openServerMachine(maxQueuedEvents: Int = 4) -> (ConnStateMachine, FakeTransport) {
    var machine = ConnStateMachine(isClient: false, maxQueuedEvents: maxQueuedEvents)
    let transport = FakeTransport()
    machine.startServer(transport: transport, timer: nil, nativeNamespace: nil)
    _ = machine.verdictArrived(.accepted)
    _ = machine.identified()
    _ = machine.completeHandshake()
    _ = machine.startNotifying()
    _ = machine.continueNotifying()
    return (machine, transport)
}

/// A short description of owner events, to compare.
func describe(_ events: [ConnStateMachine.OwnerEvent]?) -> [String] {
    (events ?? []).map { event in
        switch event {
        case .opened: "opened"
        case .connected(let ns, _): "connected \(ns.namespace)"
        case .disconnected(let ns): "disconnected \(ns.namespace)"
        case .joined(let room, let ns, _): "joined \(ns.namespace)/\(room)"
        case .left(let room, let ns): "left \(ns.namespace)/\(room)"
        case .closed: "closed"
        }
    }
}

/// Everything the owner was told so far (as one deliverer would).
func ownerEvents(_ machine: inout ConnStateMachine) -> [String] {
    var all = describe(machine.startNotifying())
    while let more = machine.continueNotifying() { all += describe(more) }
    return all
}

/// Runs `body` with a fresh continuation (which `body` must get resumed, through the machine's
/// actions) and returns how it ended.
func outcome<Value: Sendable>(
    _ type: Value.Type = Value.self, _ body: (CheckedContinuation<Value, any Error>) -> Void
) async -> Result<Value, any Error> {
    do {
        return .success(try await withCheckedThrowingContinuation { body($0) })
    } catch {
        return .failure(error)
    }
}

extension Result {
    /// The error, as a ``NeffosError``, if it failed with one.
    var neffosError: NeffosError? {
        if case .failure(let error) = self { return error as? NeffosError }
        return nil
    }
}

/// `#expect` for a value computed by a mutating call (the macro cannot capture `inout`
/// state): the call runs first, then its result is checked.
func check(_ condition: Bool, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(condition, comment, sourceLocation: sourceLocation)
}

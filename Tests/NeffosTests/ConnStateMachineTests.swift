import NIOCore
import Testing
@testable import Neffos

@Suite("ConnStateMachine: handshake")
struct ConnStateMachineHandshakeTests {
    @Test("M then the hook's acceptance: opens, tells the owner, hands back the frames that came first")
    func identifyThenAccept() {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 4)
        let timer = FakeTimer()
        machine.startServer(transport: FakeTransport(), timer: timer, nativeNamespace: nil)
        check(machine.queueDuringHandshake(ByteBuffer(string: "one"), binary: false, maxBytes: 100))
        check(machine.queueDuringHandshake(ByteBuffer(string: "two"), binary: true, maxBytes: 100))
        check(machine.identified() == false, "no verdict yet")
        guard case .completeHandshake = machine.verdictArrived(.accepted) else {
            Issue.record("the verdict should complete the handshake")
            return
        }
        guard case .accept(_, let waiters, let queued) = machine.completeHandshake() else {
            Issue.record("accepted")
            return
        }
        #expect(waiters.isEmpty)
        #expect(queued.map { String(buffer: $0.frame) } == ["one", "two"])
        #expect(queued.map(\.binary) == [false, true])
        #expect(timer.isCancelled)
        #expect(machine.phase.isOpen && machine.everOpened)
        check(ownerEvents(&machine) == ["opened"])
        #expect(machine.handshakeTimerFired() == false, "a late handshake timer does nothing")
    }

    @Test("the verdict first, then M: M completes the handshake")
    func acceptThenIdentify() {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 4)
        machine.startServer(transport: FakeTransport(), timer: nil, nativeNamespace: nil)
        guard case .none = machine.verdictArrived(.accepted) else {
            Issue.record("nothing to do before M")
            return
        }
        check(machine.identified())
        check(machine.identified() == false, "a second M is ignored")
        guard case .accept = machine.completeHandshake() else {
            Issue.record("accepted")
            return
        }
    }

    @Test("a refusal: H and a close, no owner event, and the connection never opens")
    func refused() {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 4)
        machine.startServer(transport: FakeTransport(), timer: nil, nativeNamespace: nil)
        _ = machine.identified()
        _ = machine.verdictArrived(.refused(NeffosError.badNamespace))
        guard case .refuse(let error, _) = machine.completeHandshake() else {
            Issue.record("refused")
            return
        }
        #expect((error as? NeffosError) == .badNamespace)
        #expect(machine.closeRequested)
        #expect(!machine.everOpened)
        check(ownerEvents(&machine).isEmpty)
        #expect(machine.handshakeTimerFired(), "still not open")
    }

    @Test("frames before the handshake are bounded in count and in bytes")
    func queueBounded() {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 2)
        machine.startServer(transport: FakeTransport(), timer: nil, nativeNamespace: nil)
        check(machine.queueDuringHandshake(ByteBuffer(string: "a"), binary: false, maxBytes: 10))
        check(machine.queueDuringHandshake(ByteBuffer(string: "b"), binary: false, maxBytes: 10))
        check(!machine.queueDuringHandshake(ByteBuffer(string: "c"), binary: false, maxBytes: 10), "count")

        var bytes = ConnStateMachine(isClient: false, maxQueuedEvents: 100)
        bytes.startServer(transport: FakeTransport(), timer: nil, nativeNamespace: nil)
        check(bytes.queueDuringHandshake(ByteBuffer(repeating: 1, count: 8), binary: true, maxBytes: 10))
        check(!bytes.queueDuringHandshake(ByteBuffer(repeating: 1, count: 3), binary: true, maxBytes: 10), "bytes")
    }

    @Test("an on-connect hook that waits for the open connection accepts early; throwing afterwards closes")
    func acceptedEarlyThenThrew() async {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 4)
        machine.startServer(transport: FakeTransport(), timer: nil, nativeNamespace: nil)
        let opened = await outcome(Void.self) { continuation in
            guard case .wait = machine.waitOpen(continuation) else {
                Issue.record("waits for M")
                return
            }
            check(machine.identified(), "the early acceptance is the verdict")
            guard case .accept(_, let waiters, _) = machine.completeHandshake() else { return }
            for waiter in waiters { waiter.resume() }
        }
        #expect((try? opened.get()) != nil)
        guard case .close(let reason) = machine.verdictArrived(.refused(NeffosError.badRoom.with(detail: "no"))) else {
            Issue.record("closes")
            return
        }
        #expect(reason == NeffosError.wireText(of: NeffosError.badRoom.with(detail: "no")))
    }

    @Test("a native-only server opens at once, connected to its one namespace")
    func nativeOnly() {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 4)
        machine.startServer(transport: FakeTransport(), timer: nil, nativeNamespace: Fixture.ns(""))
        #expect(machine.phase.isOpen)
        check(ownerEvents(&machine) == ["opened", "connected "])
    }

    @Test("client: A<id> opens and resumes the dial; a refusal stays the answer for late waiters")
    func clientHandshake() async {
        var machine = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        let transport = FakeTransport()
        let timer = FakeTimer()
        check(machine.attachClient(transport, timer: timer))
        let opened = await outcome(Void.self) { continuation in
            _ = machine.waitOpen(continuation)
            machine.clientAccepted()?.waiters.forEach { $0.resume() }
        }
        #expect((try? opened.get()) != nil)
        #expect(timer.isCancelled)
        check(ownerEvents(&machine) == ["opened"])

        var refused = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        check(refused.attachClient(transport, timer: FakeTimer()))
        let refusal = NeffosError.handshakeRefused.with(detail: "banned")
        check(refused.clientHandshakeFailed(refusal, on: transport, final: true) != nil)
        #expect(refused.closeRequested, "no reconnection after a refusal")
        guard case .finish(_, let error) = refused.transportClosed(Fixture.closedByPeer, reconnect: false) else {
            Issue.record("finished")
            return
        }
        #expect(error == .handshakeRefused && error.detail == "banned")
        let late = await outcome(Void.self) { continuation in
            if case .failed(let error) = refused.waitOpen(continuation) { continuation.resume(throwing: error) }
        }
        #expect(late.neffosError == .handshakeRefused)
    }

    @Test("client: a handshake timeout is what a dial gets, even one that starts waiting after the timer")
    func clientHandshakeTimeout() async {
        var machine = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        let transport = FakeTransport()
        check(machine.attachClient(transport, timer: FakeTimer()))
        let failed = machine.clientHandshakeFailed(NeffosError.handshakeTimeout, on: transport, final: false)
        #expect(failed?.waiters.isEmpty == true, "nobody waited yet")
        check(machine.clientHandshakeFailed(NeffosError.handshakeTimeout, on: FakeTransport(), final: false) == nil,
                "another transport's timer")
        _ = machine.transportClosed(Fixture.closedByPeer, reconnect: false)
        let late = await outcome(Void.self) { continuation in
            if case .failed(let error) = machine.waitOpen(continuation) { continuation.resume(throwing: error) }
        }
        #expect(late.neffosError == .handshakeTimeout)
    }

    @Test("client: a reconnection attempt that fails its handshake goes back to reconnecting")
    func reconnectAttemptFails() {
        var machine = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        let first = FakeTransport()
        _ = machine.attachClient(first, timer: FakeTimer())
        _ = machine.clientAccepted()
        guard case .lost = machine.transportClosed(Fixture.closedByPeer, reconnect: true) else {
            Issue.record("lost, reconnecting")
            return
        }
        let second = FakeTransport()
        check(machine.attachClient(second, timer: FakeTimer()))
        guard case .attemptFailed(_, let error) = machine.transportClosed(Fixture.closedByPeer, reconnect: false) else {
            Issue.record("the attempt failed")
            return
        }
        #expect(error == .dialFailed)
        #expect(!machine.phase.isClosed)
    }
}

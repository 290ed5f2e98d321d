import NIOCore
import Testing
@testable import Neffos

@Suite("ConnStateMachine: namespaces and rooms")
struct ConnStateMachineMembershipTests {
    @Test("connecting a namespace tells the owner and wakes those waiting for it; twice is refused")
    func connectNamespace() async {
        var (machine, _) = openServerMachine()
        let conn = Fixture.conn()
        let ns = Fixture.ns("default", of: conn)
        let woken = await outcome(NSConn.self) { continuation in
            guard case .wait = machine.waitNamespace("default", continuation) else {
                Issue.record("waits")
                return
            }
            for waiter in machine.addNamespace(ns) ?? [] { waiter.resume(returning: ns) }
        }
        #expect((try? woken.get()) === ns)
        check(machine.addNamespace(Fixture.ns("default", of: conn)) == nil)
        #expect(machine.namespace("default") === ns)
        check(ownerEvents(&machine) == ["connected default"])
    }

    @Test("joining and leaving rooms: only in a connected namespace, once each, each told to the owner")
    func rooms() {
        var (machine, _) = openServerMachine()
        check(!machine.addRoom("r", in: "default"), "namespace not connected")
        _ = machine.addNamespace(Fixture.ns())
        check(machine.addRoom("r", in: "default"))
        check(!machine.addRoom("r", in: "default"), "joined already: no second event")
        #expect(machine.isJoined("r", in: "default"))
        check(machine.removeRoom("r", in: "default"))
        check(!machine.removeRoom("r", in: "default"), "not joined any more")
        check(ownerEvents(&machine) == ["connected default", "joined default/r", "left default/r"])
    }

    @Test("disconnecting a namespace leaves its rooms first, in name order")
    func disconnectNamespace() {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        for room in ["b", "a", "c"] { machine.addRoom(room, in: "default") }
        _ = ownerEvents(&machine)
        let removed = machine.removeNamespace("default")
        #expect(removed?.rooms == ["a", "b", "c"])
        check(machine.removeNamespace("default") == nil)
        check(ownerEvents(&machine) == ["left default/a", "left default/b", "left default/c", "disconnected default"])
    }

    @Test("leaving every room and namespace at close, namespaces in name order")
    func leaveAll() {
        var (machine, _) = openServerMachine()
        let conn = Fixture.conn()
        _ = machine.addNamespace(Fixture.ns("other", of: conn))
        _ = machine.addNamespace(Fixture.ns("default", of: conn))
        machine.addRoom("r", in: "other")
        _ = ownerEvents(&machine)
        let removed = machine.removeAllNamespaces()
        #expect(removed.map(\.0.namespace) == ["default", "other"])
        #expect(machine.namespaces.isEmpty)
        check(ownerEvents(&machine) == ["disconnected default", "left other/r", "disconnected other"])
    }

    @Test("a namespace waiter's deadline ends it once")
    func namespaceWaitTimesOut() async {
        var (machine, _) = openServerMachine()
        let ended = await outcome(NSConn.self) { continuation in
            guard case .wait(let id, _) = machine.waitNamespace("default", continuation) else { return }
            machine.namespaceWaitTimedOut("default", id: id)?.resume(throwing: NeffosError.timeout)
            check(machine.namespaceWaitTimedOut("default", id: id) == nil)
        }
        #expect(ended.neffosError == .timeout)
    }

    @Test("owner events are delivered by one thread at a time, in order")
    func oneDeliverer() {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        check(describe(machine.startNotifying()) == ["connected default"])
        machine.addRoom("r", in: "default")
        check(machine.startNotifying() == nil, "another thread delivers: it picks this one up")
        check(describe(machine.continueNotifying()) == ["joined default/r"])
        check(machine.continueNotifying() == nil)
        machine.addRoom("s", in: "default")
        check(describe(machine.startNotifying()) == ["joined default/s"])
    }
}

@Suite("ConnStateMachine: asks")
struct ConnStateMachineAskTests {
    private func ask(_ message: Message) -> Message {
        var message = message
        message.wait = "$1"
        return message
    }

    @Test("an ask is refused before it waits: closed, reconnecting, namespace not connected, room not joined")
    func refusedAsks() async {
        var handshaking = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        var (open, _) = openServerMachine()
        _ = open.addNamespace(Fixture.ns())
        let cases: [(Message, NeffosError)] = [
            (Message(namespace: "nope", event: "x"), .badNamespace),
            (Message(namespace: "default", room: "r", event: "x"), .badRoom),
        ]
        for (message, expected) in cases {
            let result = await outcome(ConnStateMachine.Answer.self) { continuation in
                if case .failure(let error) = open.registerAsk("1", message, continuation, effect: .none) {
                    continuation.resume(throwing: error)
                }
            }
            #expect(result.neffosError == expected)
        }
        let closed = await outcome(ConnStateMachine.Answer.self) { continuation in
            if case .failure(let error) = handshaking.registerAsk("1", Message(event: "x"), continuation, effect: .none) {
                continuation.resume(throwing: error)
            }
        }
        #expect(closed.neffosError == .writeClosed)
        #expect(open.pending.count == 0)
    }

    @Test("a successful reply applies its effect before the asker resumes; an error reply does not")
    func matched() async {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        _ = ownerEvents(&machine)
        let joined = await outcome(ConnStateMachine.Answer.self) { continuation in
            _ = machine.registerAsk("$1", Message(namespace: "default", room: "r", event: "_OnRoomJoin"), continuation,
                                    effect: .addRoom("r", namespace: "default"))
            let timer = FakeTimer()
            check(machine.pending.setTimer(timer, for: "$1"))
            guard let matched = machine.matchReply("$1", succeeded: true) else { return }
            #expect(machine.isJoined("r", in: "default"), "applied before the asker goes on")
            matched.ask.resume(with: .success(.init(reply: Message(event: "ok"))))
            #expect(timer.isCancelled)
        }
        #expect((try? joined.get())?.reply.event == "ok")
        check(ownerEvents(&machine) == ["joined default/r"])

        let refused = await outcome(ConnStateMachine.Answer.self) { continuation in
            _ = machine.registerAsk("$2", Message(namespace: "default", room: "s", event: "_OnRoomJoin"), continuation,
                                    effect: .addRoom("s", namespace: "default"))
            machine.matchReply("$2", succeeded: false)?.ask.resume(with: .failure(NeffosError.badRoom))
        }
        #expect(refused.neffosError == .badRoom)
        #expect(!machine.isJoined("s", in: "default"))
        check(machine.matchReply("$2", succeeded: true) == nil, "a late or duplicate reply matches nothing")
    }

    @Test("a disconnect's reply hands back the rooms it removed")
    func disconnectRemovesRooms() async {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        machine.addRoom("r", in: "default")
        let answer = await outcome(ConnStateMachine.Answer.self) { continuation in
            _ = machine.registerAsk("$1", Message(namespace: "default", event: "_OnNamespaceDisconnect"), continuation,
                                    effect: .removeNamespace("default"))
            guard let matched = machine.matchReply("$1", succeeded: true) else { return }
            matched.ask.resume(with: .success(.init(reply: Message(event: ""), removedRooms: matched.removedRooms)))
        }
        #expect((try? answer.get())?.removedRooms == ["r"])
        #expect(machine.namespace("default") == nil)
    }

    @Test("an ask that timed out is gone: its timer is not kept and a late reply matches nothing")
    func timedOut() async {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        let result = await outcome(ConnStateMachine.Answer.self) { continuation in
            _ = machine.registerAsk("$1", Message(namespace: "default", event: "q"), continuation, effect: .none)
            machine.pending.take("$1")?.resume(with: .failure(NeffosError.timeout))
        }
        #expect(result.neffosError == .timeout)
        check(!machine.pending.setTimer(FakeTimer(), for: "$1"), "the caller cancels a timer set too late")
        check(machine.matchReply("$1", succeeded: true) == nil)
    }

    @Test("asks still waiting fail when the connection closes")
    func failedAtClose() async {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        let result = await outcome(ConnStateMachine.Answer.self) { continuation in
            _ = machine.registerAsk("$1", Message(namespace: "default", event: "q"), continuation, effect: .none)
            guard case .finish(let waiters, let error) = machine.transportClosed(Fixture.closedByPeer, reconnect: false) else { return }
            #expect(waiters.asks.count == 1)
            waiters.fail(error)
        }
        #expect(result.neffosError == .writeClosed)
        #expect(machine.pending.count == 0)
    }
}

@Suite("ConnStateMachine: dispatch and close")
struct ConnStateMachineDispatchTests {
    @Test("a synchronous handler runs inline; an async one starts the queue; later ones queue behind it")
    func routes() {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        guard case .inline = machine.route(Message(namespace: "default", event: "sync")) else {
            Issue.record("inline")
            return
        }
        guard case .start = machine.route(Message(namespace: "default", event: "async")) else {
            Issue.record("start")
            return
        }
        guard case .queued(nil) = machine.route(Message(namespace: "default", event: "sync")) else {
            Issue.record("queued behind the running handler, in order")
            return
        }
        guard case .queued = machine.route(Message(namespace: "nope", event: "sync")) else {
            Issue.record("a busy queue queues everything, in order")
            return
        }
        #expect(machine.inbox.count == 2)
    }

    @Test("unknown namespaces and events are dropped, unless the sender waits for an answer")
    func drops() {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        guard case .drop = machine.route(Message(namespace: "nope", event: "sync")) else {
            Issue.record("no namespace, nobody waits")
            return
        }
        guard case .drop = machine.route(Message(namespace: "default", event: "unknown")) else {
            Issue.record("no handler")
            return
        }
        var asked = Message(namespace: "nope", event: "sync")
        asked.wait = "$1"
        guard case .start = machine.route(asked) else {
            Issue.record("the queue answers it with an error")
            return
        }
    }

    @Test("the queue pauses reading at its bound and resumes at half")
    func backpressure() {
        var (machine, transport) = openServerMachine(maxQueuedEvents: 4)
        _ = machine.addNamespace(Fixture.ns())
        _ = machine.route(Message(namespace: "default", event: "async"))
        var pauses: [Bool] = []
        for _ in 0..<4 {
            if case .queued(let pause) = machine.route(Message(namespace: "default", event: "async")) {
                pauses.append(pause === transport)
            }
        }
        #expect(pauses == [false, false, false, true])
        var resumed: [Bool] = []
        while case (.some, let resume) = machine.nextInbound() { resumed.append(resume != nil) }
        #expect(resumed == [false, true, false, false])
        #expect(!machine.busy)
    }
}

extension ConnStateMachineDispatchTests {
    @Test("the queue also pauses reading at its byte bound, whatever the count, and resumes at half")
    func byteBackpressure() {
        var machine = ConnStateMachine(isClient: false, maxQueuedEvents: 100, maxQueuedBytes: 10)
        let transport = FakeTransport()
        machine.startServer(transport: transport, timer: nil, nativeNamespace: nil)
        _ = machine.verdictArrived(.accepted)
        _ = machine.identified()
        _ = machine.completeHandshake()
        _ = machine.addNamespace(Fixture.ns())
        let big = Message(namespace: "default", event: "async", body: "1234")
        _ = machine.route(big)  // Runs: not queued.
        var pauses: [Bool] = []
        for _ in 0..<3 {
            if case .queued(let pause) = machine.route(big) { pauses.append(pause === transport) }
        }
        check(pauses == [false, false, true], "12 bytes queued pass the 10-byte bound")
        check(machine.inboxBytes == 12)
        var resumed: [Bool] = []
        while case (.some, let resume) = machine.nextInbound() { resumed.append(resume != nil) }
        check(resumed == [false, true, false], "resumed once 4 bytes (≤ 5) remain")
        check(machine.inboxBytes == 0)
    }
}

extension ConnStateMachineMembershipTests {
    @Test("a peer's join is checked against the bounds: rooms over all namespaces, and name bytes")
    func joinBounds() {
        var (machine, _) = openServerMachine()
        let conn = Fixture.conn()
        _ = machine.addNamespace(Fixture.ns("default", of: conn))
        _ = machine.addNamespace(Fixture.ns("other", of: conn))
        let bounds = ConnStateMachine.MembershipBounds(maxRooms: 2, maxNameBytes: 4)
        #expect(machine.checkJoin("a", in: "default", bounds: bounds) == nil)
        machine.addRoom("a", in: "default")
        machine.addRoom("b", in: "other")
        #expect(machine.checkJoin("c", in: "default", bounds: bounds) == .limitExceeded, "2 rooms over two namespaces")
        machine.removeRoom("b", in: "other")
        #expect(machine.checkJoin("abcd", in: "other", bounds: bounds) == nil)
        #expect(machine.checkJoin("abcdé", in: "other", bounds: bounds) == .limitExceeded, "6 bytes")
    }
}

@Suite("ConnStateMachine: close")
struct ConnStateMachineCloseTests {
    @Test("closed for good: waiters fail, the owner is told, the close events queue behind the handlers")
    func finish() async {
        var (machine, _) = openServerMachine()
        _ = machine.addNamespace(Fixture.ns())
        _ = machine.route(Message(namespace: "default", event: "async"))
        _ = ownerEvents(&machine)
        let waiting = await outcome(NSConn.self) { continuation in
            _ = machine.waitNamespace("other", continuation)
            guard case .finish(let waiters, let error) = machine.transportClosed(Fixture.closedByPeer, reconnect: false) else { return }
            waiters.fail(error)
        }
        #expect(waiting.neffosError == .writeClosed)
        #expect(machine.phase.isClosed)
        check(ownerEvents(&machine) == ["closed"])
        check(!machine.enqueue(.closed(Fixture.closedByPeer)), "behind the running handler")
        guard case .none = machine.transportClosed(Fixture.closedByPeer, reconnect: false) else {
            Issue.record("closing twice does nothing")
            return
        }
    }

    @Test("a client that loses an open connection keeps its namespaces for the reconnection")
    func lost() async {
        var machine = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        _ = machine.attachClient(FakeTransport(), timer: FakeTimer())
        _ = machine.clientAccepted()
        _ = machine.addNamespace(Fixture.ns(of: Fixture.conn(isClient: true)))
        _ = ownerEvents(&machine)
        #expect(machine.mayReconnect)
        let asked = await outcome(ConnStateMachine.Answer.self) { continuation in
            _ = machine.registerAsk("$1", Message(namespace: "default", event: "q"), continuation, effect: .none)
            guard case .lost(let asks, let error) = machine.transportClosed(Fixture.closedByPeer, reconnect: true) else { return }
            for ask in asks { ask.resume(with: .failure(error)) }
        }
        #expect(asked.neffosError == .writeClosed)
        guard case .reconnecting = machine.phase else {
            Issue.record("reconnecting")
            return
        }
        check(ownerEvents(&machine) == ["closed"])
        check(machine.takeForRestore().map(\.0.namespace) == ["default"])
        let write = await outcome(ConnStateMachine.Answer.self) { continuation in
            if case .failure(let error) = machine.registerAsk("$2", Message(namespace: "default", event: "q"), continuation, effect: .none) {
                continuation.resume(throwing: error)
            }
        }
        #expect(write.neffosError == .reconnecting)
    }

    @Test("a close asked for here is not followed by a reconnection")
    func requestedClose() {
        var machine = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        let transport = FakeTransport()
        _ = machine.attachClient(transport, timer: FakeTimer())
        _ = machine.clientAccepted()
        check(machine.requestClose() === transport)
        #expect(!machine.mayReconnect)
        check(!machine.attachClient(FakeTransport(), timer: FakeTimer()), "no new transport after a close")
    }

    @Test("a client that gave up reconnecting finishes without a transport, once")
    func finishWithoutTransport() async {
        var machine = ConnStateMachine(isClient: true, maxQueuedEvents: 4)
        _ = machine.attachClient(FakeTransport(), timer: FakeTimer())
        _ = machine.clientAccepted()
        _ = machine.transportClosed(Fixture.closedByPeer, reconnect: true)
        let waiting = await outcome(Void.self) { continuation in
            check(machine.waitOpen(continuation).isFailure, "reconnecting: writes and waits fail at once")
            continuation.resume()
        }
        #expect((try? waiting.get()) != nil)
        check(machine.finishWithoutTransport(Fixture.closedByPeer) != nil)
        check(machine.finishWithoutTransport(Fixture.closedByPeer) == nil)
        #expect(machine.phase.isClosed)
    }
}

extension ConnStateMachine.OpenWait {
    var isFailure: Bool {
        if case .failed = self { return true }
        return false
    }
}

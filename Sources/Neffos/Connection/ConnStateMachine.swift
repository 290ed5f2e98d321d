import DequeModule
import NIOCore

/// One connection's protocol state, as a value: handshake phase, namespaces and rooms, pending
/// asks, the ordered handler queue, and closing.
///
/// Each mutating method takes one input (a frame decoded, a verdict, a reply matched, the
/// transport closed, a timer fired…) and returns what to do about it: frames to send,
/// waiters to resume, a handler to run inline or a queue to start draining, reading to pause.
/// ``Conn`` calls it with its lock held and carries the returned action out after releasing
/// the lock, so no delegate, continuation or user code ever runs under that lock. The machine
/// has no clock and no I/O: timers are inputs, and it can be driven with plain values in tests
/// (`swift test --filter StateMachine`).
///
/// Changes the owner (the server's index, the client) must learn are queued as
/// ``OwnerEvent``s, in order; ``Conn`` delivers them outside the lock, one deliverer at a time
/// (``startNotifying()``), so the owner sees them in the order they happened.
struct ConnStateMachine {
    // MARK: Types

    /// Where the connection is in its life.
    enum Phase {
        /// Before the neffos handshake completed. (Boxed, as `closed`: inline, their payloads
        /// made every connection's state ~65 bytes bigger for its whole life.)
        indirect case handshaking(Handshake)
        /// Handshake done: messages flow.
        case open
        /// A client connection between a lost transport and a new one (reconnection).
        case reconnecting
        /// Closed for good.
        indirect case closed(CloseReason)

        var isClosed: Bool {
            if case .closed = self { return true }
            return false
        }
        var isOpen: Bool {
            if case .open = self { return true }
            return false
        }
        var isHandshaking: Bool {
            if case .handshaking = self { return true }
            return false
        }
    }

    /// The handshake: on the server, `M` from the client plus the on-connect hook's verdict;
    /// on the client, the wait for `A<id>`.
    struct Handshake {
        var identified = false
        var verdict: Verdict?
        /// Frames that arrived before the handshake completed, in order.
        var queue: [QueuedFrame] = []
        /// Bytes held in ``queue``.
        var queuedBytes = 0
        var timer: (any Cancellable)?
    }

    /// The server's on-connect hook's decision.
    enum Verdict {
        case accepted
        case refused(any Error)
    }

    /// A frame kept until the handshake completes.
    struct QueuedFrame {
        var frame: ByteBuffer
        var binary: Bool
    }

    /// What one connection may hold, as its peer asks for it.
    struct MembershipBounds: Sendable {
        /// Rooms joined, over all namespaces.
        var maxRooms = Int.max
        /// Bytes of a room name.
        var maxNameBytes = Int.max
    }

    /// A connected namespace and the rooms joined in it.
    struct NamespaceEntry {
        let nsConn: NSConn
        var rooms: SmallSet<String> = []
    }

    /// An item of the ordered handler queue.
    enum Inbound {
        case message(Message)
        /// The transport closed: fire the local close events.
        case closed(CloseReason)
    }

    /// What a successful reply to one of this side's asks confirms (applied when the reply is
    /// matched, before any later frame is read, so the events that follow are accepted).
    enum ReplyEffect {
        case none
        case addNamespace(NSConn)
        case removeNamespace(String)
        case addRoom(String, namespace: String)
        case removeRoom(String, namespace: String)
    }

    /// What an answered ask hands its caller: the reply, and the rooms its effect removed
    /// (a namespace disconnect fires their leave events).
    struct Answer: Sendable {
        var reply: Message
        var removedRooms: Set<String> = []
    }

    /// Client side: the last position received in each room with history (kept across
    /// reconnections, to recover from; dropped when the room is left).
    var positions: [RecoveryWire.RoomKey: HistoryPosition] = [:]
    /// Client side: namespaces and rooms a restore could not finish because the connection was
    /// lost again; the next restore takes them.
    var unrestored: [(NSConn, Set<String>)] = []

    /// A change the owner must learn, delivered in order.
    enum OwnerEvent {
        /// The handshake completed.
        case opened
        /// A namespace was connected (over `transport`).
        case connected(NSConn, any ConnTransport)
        /// A namespace was disconnected.
        case disconnected(NSConn)
        /// A room was joined (with what its reply carries, for a room with history).
        case joined(String, NSConn, JoinRecovery?)
        /// A room was left.
        case left(String, NSConn)
        /// The transport closed (before the local close events fire).
        case closed(CloseReason)
    }

    // MARK: State
    //
    // Read anywhere; changed only by the machine's own methods (its files in this folder).

    let isClient: Bool
    /// Events (and frames before the handshake) a connection may have waiting before it stops
    /// reading (after the handshake) or is closed (before it).
    let maxQueuedEvents: Int
    /// Body bytes of queued events past which the connection stops reading.
    let maxQueuedBytes: Int

    var phase: Phase = .handshaking(Handshake()) {
        didSet { if phase.isOpen { everOpened = true } }
    }
    /// Whether the handshake ever completed.
    var everOpened = false
    var transport: (any ConnTransport)?
    var namespaces: SmallDictionary<NamespaceEntry> = [:]
    /// This side's asks waiting for their reply.
    var pending = PendingReplies<Answer, ReplyEffect>()
    /// This side's asks that ended lately: a reply to one is late or duplicate.
    var endedAsks = EndedTokens(capacity: 256)
    /// Whether this side asked to close (no reconnection follows).
    var closeRequested = false
    /// Why the handshake failed (the server's refusal, the handshake timeout): what waiters
    /// get instead of a plain "closed", whenever they arrive.
    var failure: NeffosError? {
        get { failureBox?.error as? NeffosError }
        set { failureBox = newValue.map(ErrorBox.init) }
    }
    /// ``failure``, boxed: rare, and 32 bytes inline.
    private var failureBox: ErrorBox?

    /// Whether the handler queue is being drained (a handler task is running).
    var busy = false
    var inbox: Deque<Inbound> = []
    /// Body bytes of the messages in ``inbox``.
    var inboxBytes = 0
    var readingPaused = false

    /// Tasks waiting for the connection to open.
    var openWaiters: [CheckedContinuation<Void, any Error>] = []
    /// Tasks waiting for the remote side to connect this side to a namespace.
    var namespaceWaiters: [String: [UInt64: CheckedContinuation<NSConn, any Error>]] = [:]
    var nextWaiterID: UInt64 = 0

    var ownerEvents: [OwnerEvent] = []
    var notifying = false
    /// ``Conn/store``, once used.
    var store: ConnStore?

    init(isClient: Bool, maxQueuedEvents: Int, maxQueuedBytes: Int = .max) {
        self.isClient = isClient
        self.maxQueuedEvents = maxQueuedEvents
        self.maxQueuedBytes = maxQueuedBytes
    }

    // MARK: Queries

    /// The namespace connection for `name`, if connected.
    func namespace(_ name: String) -> NSConn? { namespaces[name]?.nsConn }

    /// Whether `room` is joined in namespace `name`.
    func isJoined(_ room: String, in name: String) -> Bool {
        namespaces[name]?.rooms.contains(room) ?? false
    }

    // MARK: Owner events

    /// Begins delivering the queued owner events: returns them when nobody else is delivering
    /// (the caller is now the deliverer and must call ``continueNotifying()`` until it returns
    /// `nil`), or `nil` (nothing queued, or another thread delivers them).
    mutating func startNotifying() -> [OwnerEvent]? {
        guard !notifying, !ownerEvents.isEmpty else { return nil }
        notifying = true
        defer { ownerEvents = [] }
        return ownerEvents
    }

    /// The events queued while the deliverer delivered the previous ones; `nil` ends its turn.
    mutating func continueNotifying() -> [OwnerEvent]? {
        guard !ownerEvents.isEmpty else {
            notifying = false
            return nil
        }
        defer { ownerEvents = [] }
        return ownerEvents
    }

    // MARK: Server handshake

    /// A server-side connection starts on `transport`; `timer` is its handshake deadline. A
    /// native-only server opens at once with `nativeNamespace`.
    mutating func startServer(transport: any ConnTransport, timer: (any Cancellable)?, nativeNamespace: NSConn?) {
        self.transport = transport
        if let ns = nativeNamespace {
            phase = .open
            ownerEvents.append(.opened)
            _ = addNamespace(ns)
            return
        }
        if case .handshaking(var handshake) = phase {
            handshake.timer = timer
            phase = .handshaking(handshake)
        }
    }

    /// What to do once the on-connect hook decided.
    enum VerdictAction {
        case none
        /// The client identified itself already: complete the handshake.
        case completeHandshake
        /// The hook had accepted early (it connected a namespace) and threw afterwards.
        case close(reason: String)
    }

    /// The server's on-connect hook returned (or threw).
    mutating func verdictArrived(_ verdict: Verdict) -> VerdictAction {
        switch phase {
        case .handshaking(var handshake):
            guard handshake.verdict == nil else { return .none }
            handshake.verdict = verdict
            phase = .handshaking(handshake)
            return handshake.identified ? .completeHandshake : .none
        case .open:
            if case .refused(let error) = verdict { return .close(reason: NeffosError.wireText(of: error)) }
            return .none
        case .reconnecting, .closed:
            return .none
        }
    }

    /// The client sent `M`; returns whether the handshake can complete now (the verdict is in).
    mutating func identified() -> Bool {
        guard case .handshaking(var handshake) = phase, !handshake.identified else { return false }
        handshake.identified = true
        phase = .handshaking(handshake)
        return handshake.verdict != nil
    }

    /// How a completed handshake ends.
    enum HandshakeOutcome {
        case none
        /// Send `A<id>`, resume `waiters`, then handle the frames that arrived meanwhile.
        case accept(any ConnTransport, waiters: [CheckedContinuation<Void, any Error>], queued: [QueuedFrame])
        /// Send `H<error>` and close (1008).
        case refuse(any Error, any ConnTransport)
    }

    /// Completes the server handshake once the client identified itself and the hook decided.
    mutating func completeHandshake() -> HandshakeOutcome {
        guard case .handshaking(let handshake) = phase, handshake.identified,
            let verdict = handshake.verdict, let transport
        else { return .none }
        handshake.timer?.cancel()
        switch verdict {
        case .accepted:
            phase = .open
            ownerEvents.append(.opened)
            return .accept(transport, waiters: takeOpenWaiters(), queued: handshake.queue)
        case .refused(let error):
            phase = .handshaking(Handshake(identified: true, verdict: verdict))
            closeRequested = true
            return .refuse(error, transport)
        }
    }

    /// The handshake deadline passed; returns whether the connection must be closed (1008)
    /// because it still has not completed. (Server side.)
    func handshakeTimerFired() -> Bool {
        phase.isHandshaking
    }

    /// A frame arrived before the handshake completed: kept for after it, up to
    /// ``maxQueuedEvents`` frames and `maxBytes` bytes; returns `false` when that bound is
    /// passed (the connection must be closed, 1008).
    mutating func queueDuringHandshake(_ frame: ByteBuffer, binary: Bool, maxBytes: Int) -> Bool {
        guard case .handshaking(var handshake) = phase else { return true }
        guard handshake.queue.count < maxQueuedEvents, handshake.queuedBytes + frame.readableBytes <= maxBytes else {
            return false
        }
        handshake.queue.append(QueuedFrame(frame: frame, binary: binary))
        handshake.queuedBytes += frame.readableBytes
        phase = .handshaking(handshake)
        return true
    }

    // MARK: Waiting for the open connection

    /// What a task that waits for the connection to open does.
    enum OpenWait {
        /// Open already: go on.
        case ready
        /// Registered: it is resumed when the handshake ends.
        case wait
        case failed(NeffosError)
        /// A server connection accepted early by its on-connect hook: complete the handshake
        /// on the event loop.
        case completeHandshake(any EventLoop)
    }

    /// A task waits for the connection to open. On the server, waiting from the on-connect
    /// hook accepts the connection early (the hook may then force namespaces).
    mutating func waitOpen(_ continuation: CheckedContinuation<Void, any Error>) -> OpenWait {
        switch phase {
        case .open:
            return .ready
        case .closed:
            return .failed(failure ?? .writeClosed)
        case .reconnecting:
            return .failed(.reconnecting)
        case .handshaking(var handshake):
            openWaiters.append(continuation)
            guard !isClient, handshake.verdict == nil else { return .wait }
            handshake.verdict = .accepted
            phase = .handshaking(handshake)
            guard handshake.identified, let loop = transport?.eventLoop else { return .wait }
            return .completeHandshake(loop)
        }
    }

    mutating func takeOpenWaiters() -> [CheckedContinuation<Void, any Error>] {
        defer { openWaiters = [] }
        return openWaiters
    }

    /// What a task that waits for the remote side to connect a namespace does.
    enum NamespaceWait {
        case ready(NSConn)
        case failed(NeffosError)
        /// Registered as `id`: its deadline is scheduled on `loop`.
        case wait(UInt64, any EventLoop)
    }

    /// A task waits until the remote side connects this side to `name`.
    mutating func waitNamespace(_ name: String, _ continuation: CheckedContinuation<NSConn, any Error>) -> NamespaceWait {
        if let entry = namespaces[name] { return .ready(entry.nsConn) }
        if phase.isClosed { return .failed(.writeClosed) }
        guard let loop = transport?.eventLoop else { return .failed(.writeClosed) }
        let id = nextWaiterID
        nextWaiterID += 1
        namespaceWaiters[name, default: [:]][id] = continuation
        return .wait(id, loop)
    }

    /// The deadline of namespace waiter `id` passed: returns it, if it still waits.
    mutating func namespaceWaitTimedOut(_ name: String, id: UInt64) -> CheckedContinuation<NSConn, any Error>? {
        namespaceWaiters[name]?.removeValue(forKey: id)
    }

    // MARK: Closing on request

    /// This side asks to close: returns the transport to close, if any.
    mutating func requestClose() -> (any ConnTransport)? {
        closeRequested = true
        return transport
    }
}

import NIOCore
import NIOPosix
import Neffos
import Synchronization

/// A connection to a ``Server`` with no socket: the test hands it client frames and reads the
/// frames the server wrote, byte for byte. Handshake, handlers, rooms, asks and broadcasts run
/// exactly as over WebSocket; only the socket is missing.
///
/// ```swift
/// let server = try Server(namespaces: ["default": events])
/// let client = try await MemoryConnection.open(to: server)
/// await client.send("M")
/// #expect(try await client.next().hasPrefix("A"))
/// await client.send("$1;default;;_OnNamespaceConnect;0;0;")
/// #expect(try await client.next() == "$1;;;;;;")
/// ```
public final class MemoryConnection: Sendable {
    private let transport: MemoryTransport
    /// The server-side connection.
    public let conn: Conn

    private init(transport: MemoryTransport, conn: Conn) {
        self.transport = transport
        self.conn = conn
    }

    /// Opens a connection to `server` whose socket lives on `loop`.
    ///
    /// - Parameters:
    ///   - server: the server to connect to.
    ///   - request: what the HTTP upgrade request would have said (headers, path).
    ///   - loop: the event loop the connection runs on (default: one of NIO's singleton group).
    ///   - keepsFrames: whether written frames are kept for ``next(timeout:)``; turn it off to
    ///     only count them (``framesWritten``), as a benchmark does.
    /// - Throws: when `loop` is shut down.
    public static func open(
        to server: Server,
        request: UpgradeRequest = UpgradeRequest(),
        on loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
        keepsFrames: Bool = true
    ) async throws -> MemoryConnection {
        let transport = MemoryTransport(eventLoop: loop, keepsFrames: keepsFrames)
        let conn = try await loop.submit { server.accept(transport: transport, request: request) }.get()
        transport.conn.withLock { $0 = conn }
        return MemoryConnection(transport: transport, conn: conn)
    }

    /// Hands the server a text frame from the client, on the connection's event loop.
    public func send(_ text: String) async {
        await send(ByteBuffer(string: text), binary: false)
    }

    /// Hands the server a frame from the client, on the connection's event loop.
    public func send(_ frame: ByteBuffer, binary: Bool) async {
        let conn = self.conn
        await transport.eventLoop.submit { conn.transportReceived(frame, binary: binary) }.whenDone()
    }

    /// The next frame the server wrote, as text, waiting up to `timeout`.
    ///
    /// - Throws: ``RawWebSocketError/timedOut(_:)`` when nothing comes in time,
    ///   ``RawWebSocketError/closed`` when the server closed the connection and every frame
    ///   written before was taken.
    public func next(timeout: Duration = .seconds(5)) async throws -> String {
        String(buffer: try await nextFrame(timeout: timeout).frame)
    }

    /// The next frame the server wrote, with its binary flag, waiting up to `timeout`.
    public func nextFrame(timeout: Duration = .seconds(5)) async throws -> (frame: ByteBuffer, binary: Bool) {
        let item = try await transport.inbox.next(timeout: timeout)
        return (item.frame, item.binary)
    }

    /// Whether the server writes nothing for `duration`.
    public func staysQuiet(for duration: Duration) async -> Bool {
        do {
            _ = try await nextFrame(timeout: duration)
            return false
        } catch let error as RawWebSocketError where error == .closed {
            return false
        } catch {
            return true
        }
    }

    /// How many frames the server wrote to this connection.
    public var framesWritten: Int { transport.written.load(ordering: .relaxed) }

    /// The event loop the connection runs on.
    public var eventLoop: any EventLoop { transport.eventLoop }

    /// The close the server asked for, if any.
    public var closeRequest: (code: CloseCode, reason: String)? { transport.closed.withLock { $0 } }

    /// The client goes away without a close frame: the server sees the transport close.
    public func disconnect() async {
        let conn = self.conn
        await transport.eventLoop.submit {
            conn.transportClosed(CloseReason(code: nil, text: "the peer went away", initiatedLocally: false))
        }.whenDone()
        transport.inbox.close()
    }
}

extension EventLoopFuture<Void> {
    /// Waits for the future to complete, ignoring an error (a loop that shut down).
    fileprivate func whenDone() async {
        try? await get()
    }
}

/// Frames the server writes, kept in memory for a ``MemoryConnection``.
final class MemoryTransport: ConnTransport {
    let eventLoop: any EventLoop
    let lane: LoopLane
    let inbox = Inbox<MemoryFrame>(what: "a frame from the server")
    let closed = Locked<(code: CloseCode, reason: String)?>(nil)
    let conn = Locked<Conn?>(nil)
    let keepsFrames: Bool
    let written = Atomic<Int>(0)

    init(eventLoop: any EventLoop, keepsFrames: Bool) {
        self.eventLoop = eventLoop
        self.lane = LoopLane.lane(for: eventLoop)
        self.keepsFrames = keepsFrames
    }

    func write(_ frame: ByteBuffer, binary: Bool, reliable: Bool) -> Bool {
        guard closed.withLock({ $0 == nil }) else { return false }
        written.add(1, ordering: .relaxed)
        if keepsFrames { inbox.deliver(MemoryFrame(frame: frame, binary: binary)) }
        return true
    }

    func flush() {}

    func close(code: CloseCode, reason: String) {
        let first = closed.withLock { state -> Bool in
            guard state == nil else { return false }
            state = (code, reason)
            return true
        }
        guard first else { return }
        let conn = self.conn.withLock { $0 }
        let inbox = self.inbox
        eventLoop.execute {
            conn?.transportClosed(CloseReason(code: code, text: reason, initiatedLocally: true))
            inbox.close()
        }
    }

    func setReadingPaused(_ paused: Bool) {}
}

/// One frame a ``MemoryTransport`` recorded.
struct MemoryFrame: Sendable {
    var frame: ByteBuffer
    var binary: Bool
}

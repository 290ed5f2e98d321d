// Built with the Mounts trait (on by default): without it this file is empty and the target
// has no Hummingbird or Vapor to import.
#if Mounts
import HTTPTypes
import Hummingbird
import NIOCore
import Neffos
import Synchronization

/// What the neffos route decided for one upgrade request, read back by the channel that ran the
/// router for it (``NeffosHTTP1Channel``).
///
/// The channel runs the application's router for an upgrade request inside a task that binds
/// ``current``; the route (``Hummingbird/RouterMethods/neffos(_:identify:)``), reached once
/// every middleware let the request through, records its decision there. So any request
/// context works, and what middleware put in the context reaches the connection.
final class UpgradeSlot: Sendable {
    @TaskLocal static var current: UpgradeSlot?

    private let state = Mutex<(accepted: Bool, identity: (any Sendable)?)>((false, nil))

    func accept(identity: (any Sendable)?) {
        state.withLock { $0 = (true, identity) }
    }

    /// Whether the route accepted, and the identity it gave.
    var decision: (accepted: Bool, identity: (any Sendable)?) { state.withLock { $0 } }
}

extension RouterMethods {
    /// Serves neffos at `path` (a WebSocket endpoint), behind the middleware added before it.
    ///
    /// An upgrade request reaches this route only if every middleware lets it through: an
    /// authenticator that answers `401` refuses the connection, and the client gets that
    /// answer. `identify` runs last, with the context the middleware built; what it returns
    /// becomes the connection's ``Neffos/UpgradeRequest/identity`` (read it in the server's
    /// ID generator or connect hook); throw an `HTTPError` from it to refuse.
    ///
    /// The upgrade itself happens in the HTTP server that ``HummingbirdCore/HTTPServerBuilder/neffos(_:router:configuration:)``
    /// builds: pass that as the application's `server`.
    ///
    /// ```swift
    /// router.add(middleware: NameRequired())
    /// router.neffos("/echo") { request, context in context.user }
    /// let app = Application(router: router, server: .neffos(server, router: router))
    /// ```
    ///
    /// The upgrade must be the first request on its TCP connection (browsers and neffos
    /// clients open a fresh connection for a WebSocket); an upgrade request that follows
    /// other requests on a kept-alive connection is answered like a plain `GET`.
    ///
    /// A plain `GET` (no upgrade) is answered `400`; `HEAD` is answered `302 Found`, as the
    /// standalone listener does (neffos.js probes with it before it redials).
    @discardableResult
    public func neffos(
        _ path: RouterPath,
        identify: @escaping @Sendable (Request, Context) async throws -> (any Sendable)? = { _, _ in nil }
    ) -> Self {
        on(path, method: .get) { request, context -> Response in
            guard let slot = UpgradeSlot.current else {
                return .text("this endpoint speaks WebSocket (neffos)\n", status: .badRequest)
            }
            slot.accept(identity: try await identify(request, context))
            return Response(status: .ok)
        }
        on(path, method: .head) { _, _ in Response(status: .found) }
        return self
    }
}

extension Response {
    /// A plain-text response.
    static func text(_ text: String, status: HTTPResponse.Status, headerFields: HTTPFields = [:]) -> Response {
        var fields = headerFields
        fields[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
#endif

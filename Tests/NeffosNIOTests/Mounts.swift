import Foundation
import HTTPTypes
import Logging
import NIOCore
import Neffos
import NeffosNIO
import ServiceLifecycle
import Testing
#if Mounts
import Hummingbird
import NeffosHummingbird
import NeffosVapor
import Vapor
#endif

/// The ways a neffos server is served in the tests: the suites that take a `Mount` run against
/// each.
///
/// Both applications put a test middleware in front of the neffos route: a request with
/// `X-Refuse` is answered `401` by the middleware, and the value of `X-User` becomes the
/// connection's identity (through the request context in Hummingbird, `req.storage` in Vapor).
enum Mount: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case listener
    #if Mounts
    case hummingbird
    case vapor
    #endif

    var testDescription: String { rawValue }

    /// Serves `server` at `path` on 127.0.0.1, on a free port; `responder` (listener only)
    /// answers plain HTTP.
    func start(_ server: Neffos.Server, path: String, responder: HTTPPageResponder? = nil) async throws -> RunningServer {
        switch self {
        case .listener:
            let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0, path: path, responder: responder)
            try await listener.start()
            return RunningServer(server: server, mount: self, port: listener.port ?? 0, path: path) {
                await listener.stop(timeout: .seconds(5))
            }
        #if Mounts
        case .hummingbird:
            let app = HummingbirdMount.application(server, path: path)
            return try await RunningGroup.start(server, mount: self, path: path, app: app.service, port: app.port)
        case .vapor:
            let app = try await VaporMount.application(server, path: path)
            return try await RunningGroup.start(server, mount: self, path: path, app: app, port: { await app.boundPort() })
        #endif
        }
    }
}

/// An application and the neffos server in one `ServiceGroup`, as an app runs them; stopping
/// triggers the group's graceful shutdown.
enum RunningGroup {
    static func start(
        _ server: Neffos.Server, mount: Mount, path: String, app: any Service, port: @escaping @Sendable () async -> Int?
    ) async throws -> RunningServer {
        try await server.start()
        let group = ServiceGroup(services: [server, app], logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let task = Task { try await group.run() }
        guard let bound = await port() else {
            task.cancel()
            _ = await task.result
            throw TextError("\(mount) did not start listening")
        }
        return RunningServer(server: server, mount: mount, port: bound, path: path) {
            await group.triggerGracefulShutdown()
            _ = await task.result
        }
    }
}

#if Mounts

// MARK: Hummingbird

/// A request context with a user, set by ``HummingbirdGate``.
struct GatedContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var user: String?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }
}

/// Refuses requests with `X-Refuse` (401); takes the user from `X-User`.
struct HummingbirdGate: RouterMiddleware {
    typealias Context = GatedContext

    func handle(_ request: Hummingbird.Request, context: GatedContext, next: (Hummingbird.Request, GatedContext) async throws -> Hummingbird.Response) async throws -> Hummingbird.Response {
        if request.headers[HTTPField.Name("X-Refuse")!] != nil { throw HTTPError(.unauthorized, message: "refused by the test middleware") }
        var context = context
        context.user = request.headers[HTTPField.Name("X-User")!]
        return try await next(request, context)
    }
}

enum HummingbirdMount {
    static func application(_ server: Neffos.Server, path: String) -> (service: any Service, port: @Sendable () async -> Int?) {
        let router = Router(context: GatedContext.self)
        router.add(middleware: HummingbirdGate())
        router.get("/hello") { _, _ in "hello from hummingbird\n" }
        router.neffos(RouterPath(path)) { _, context in context.user }
        let port = Watched<Int?>(nil)
        let app = Application(
            router: router,
            server: .neffos(server, router: router),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in port.update { $0 = channel.localAddress?.port ?? -1 } },
            logger: Logger(label: "test.hummingbird") { _ in SwiftLogNoOpLogHandler() })
        return (app, {
            try? await port.wait(timeout: .seconds(10), orThrow: { TextError("hummingbird did not start") }) { $0.map { .success($0) } }
        })
    }
}

// MARK: Vapor

/// Refuses requests with `X-Refuse` (401); keeps the user from `X-User` in `req.storage`.
struct VaporGate: AsyncMiddleware {
    struct UserKey: StorageKey { typealias Value = String }

    func respond(to request: Vapor.Request, chainingTo next: any AsyncResponder) async throws -> Vapor.Response {
        if request.headers.first(name: "X-Refuse") != nil { throw Abort(.unauthorized, reason: "refused by the test middleware") }
        if let user = request.headers.first(name: "X-User") { request.storage[UserKey.self] = user }
        return try await next.respond(to: request)
    }
}

enum VaporMount {
    static func application(_ server: Neffos.Server, path: String) async throws -> VaporApplicationService {
        let app = try await Application.make(.testing)
        app.logger = Logger(label: "test.vapor") { _ in SwiftLogNoOpLogHandler() }
        app.get("hello") { _ in "hello from vapor\n" }
        app.grouped(VaporGate()).neffos(path.pathComponents, server: server) { req in req.storage[VaporGate.UserKey.self] }
        return VaporApplicationService(app, address: .hostname("127.0.0.1", port: 0))
    }
}
#endif

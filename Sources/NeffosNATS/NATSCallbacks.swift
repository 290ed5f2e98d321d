import CNATS
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import Neffos
import Synchronization

/// A nats.c handle (`natsConnection *` or `natsSubscription *`).
///
/// `@unchecked Sendable`: nats.c's connection and subscription functions are thread-safe (the
/// library locks internally), and the pointer itself never changes; its lifetime is managed
/// by ``NATSConnection`` (destroyed only after every use has ended).
struct NATSHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// What nats.c's callbacks need, shared by the connection and its subscriptions: the status
/// hook, the counters, and the waits of `close()`.
final class NATSCallbackContext: Sendable {
    let node: String
    let logger: Logger
    let status: @Sendable (ExchangeStatus) -> Void
    let published = Atomic<Int>(0)
    let delivered = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)
    let reconnects = Atomic<Int>(0)
    /// Set when this side closes: the disconnection that follows is not news.
    let closing = Atomic<Bool>(false)
    /// Subscriptions whose completion callback has not run yet.
    let openSubscriptions = Atomic<Int>(0)
    /// The subject and last dropped count of each subscription, by its pointer's address.
    let subscriptionSubjects = Locked<[UInt: (subject: String, dropped: Int64)]>([:])
    /// Whether nats.c reported the connection closed (read with the subscription count under
    /// its lock, so that the last of the two events always sees the other).
    private let closed = Locked(false)
    /// Set once the connection is closed and no subscription handler can run any more.
    private let quiet = OnceFlag()

    init(node: String, logger: Logger, status: @escaping @Sendable (ExchangeStatus) -> Void) {
        self.node = node
        self.logger = logger
        self.status = status
    }

    /// nats.c closed the connection (its last connection callback).
    func markClosed() {
        closed.withLock { $0 = true }
        wakeIfQuiet()
    }

    /// A subscription completed: its message handler will not run again.
    func subscriptionCompleted() {
        openSubscriptions.subtract(1, ordering: .relaxed)
        wakeIfQuiet()
    }

    /// Ends the waits of `close()` once the connection is closed and no handler can run.
    private func wakeIfQuiet() {
        if closed.withLock({ $0 && openSubscriptions.load(ordering: .relaxed) == 0 }) { quiet.set() }
    }

    /// Waits until nats.c has closed the connection and every subscription completed, or
    /// `timeout` passed; returns whether it did.
    func waitUntilQuiet(timeout: Duration) async -> Bool {
        await quiet.wait(timeout: timeout)
    }
}

/// One subscription's context, passed to nats.c as the message handler's closure.
final class NATSSubscriptionContext: Sendable {
    let subject: String
    let deliver: @Sendable (String, ByteBuffer) -> Void
    let shared: NATSCallbackContext

    init(subject: String, deliver: @escaping @Sendable (String, ByteBuffer) -> Void, shared: NATSCallbackContext) {
        self.subject = subject
        self.deliver = deliver
        self.shared = shared
    }
}

// MARK: - C callbacks
//
// They capture nothing (C function pointers cannot): what they need comes through the
// closure pointer, an `Unmanaged` reference retained for as long as nats.c may call them.

/// A message for a subscription: copy it into a buffer, free it, deliver.
let onMessage: natsMsgHandler = { _, _, message, closure in
    guard let message else { return }
    defer { natsMsg_Destroy(message) }
    guard let closure else { return }
    let context = Unmanaged<NATSSubscriptionContext>.fromOpaque(closure).takeUnretainedValue()
    let length = Int(natsMsg_GetDataLength(message))
    var buffer = ByteBufferAllocator().buffer(capacity: length)
    if length > 0, let data = natsMsg_GetData(message) {
        buffer.writeBytes(UnsafeRawBufferPointer(start: data, count: length))
    }
    context.shared.delivered.add(1, ordering: .relaxed)
    context.deliver(context.subject, buffer)
}

/// A subscription is closed and its handler returned: release its context.
let onSubscriptionComplete: natsOnCompleteCB = { closure in
    guard let closure else { return }
    let context = Unmanaged<NATSSubscriptionContext>.fromOpaque(closure).takeRetainedValue()
    context.shared.subscriptionCompleted()
}

let onDisconnected: natsConnectionHandler = { _, closure in
    guard let closure else { return }
    let context = Unmanaged<NATSCallbackContext>.fromOpaque(closure).takeUnretainedValue()
    guard !context.closing.load(ordering: .relaxed) else { return }
    context.status(.disconnected(reason: "lost the connection to NATS; reconnecting"))
}

let onReconnected: natsConnectionHandler = { connection, closure in
    guard let closure else { return }
    let context = Unmanaged<NATSCallbackContext>.fromOpaque(closure).takeUnretainedValue()
    context.reconnects.add(1, ordering: .relaxed)
    var url = [CChar](repeating: 0, count: 256)
    if let connection { _ = natsConnection_GetConnectedUrl(connection, &url, url.count) }
    let server = url.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    context.logger.info("NATS reconnected", metadata: ["node": "\(context.node)", "server": "\(server)"])
    context.status(.reconnected)
}

/// The connection is closed for good: the last connection callback; releases the context
/// retained for the callbacks.
let onClosed: natsConnectionHandler = { _, closure in
    guard let closure else { return }
    let context = Unmanaged<NATSCallbackContext>.fromOpaque(closure).takeRetainedValue()
    context.status(.closed)
    context.markClosed()
}

/// Asynchronous errors: slow consumers (dropped messages, counted) and the rest.
let onError: natsErrHandler = { _, subscription, status, closure in
    guard let closure else { return }
    let context = Unmanaged<NATSCallbackContext>.fromOpaque(closure).takeUnretainedValue()
    if status == NATS_SLOW_CONSUMER, let subscription {
        var total: Int64 = 0
        natsSubscription_GetDropped(subscription, &total)
        let key = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(subscription)))
        let (subject, delta) = context.subscriptionSubjects.withLock { subjects -> (String, Int64) in
            guard var entry = subjects[key] else { return ("?", 0) }
            let delta = max(0, total - entry.dropped)
            entry.dropped = total
            subjects[key] = entry
            return (entry.subject, delta)
        }
        context.dropped.add(Int(delta), ordering: .relaxed)
        context.logger.warning("NATS slow consumer: messages dropped", metadata: ["subject": "\(subject)", "dropped": "\(delta)"])
        context.status(.slowConsumer(subject: subject, dropped: Int(delta)))
    } else {
        let text = String(cString: natsStatus_GetText(status))
        context.logger.warning("NATS error", metadata: ["error": "\(text)"])
        context.status(.error(text))
    }
}

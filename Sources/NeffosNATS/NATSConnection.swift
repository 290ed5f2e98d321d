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

// MARK: - The connection

/// One node's NATS connection.
///
/// nats.c may block: a publish waits for its connection lock, which a reconnection attempt
/// holds for up to the connect timeout. So nothing here calls nats.c on the caller's thread
/// (an event loop shared by many connections): publishes, subscriptions and flushes go, in
/// order, to this connection's own serial queue, in batches. The queue is bounded; what does
/// not fit is dropped and counted.
final class NATSConnection: ExchangeConnection {
    private let handle: NATSHandle
    private let shared: NATSCallbackContext
    private let options: NATSExchange.Options
    private let deliver: @Sendable (String, ByteBuffer) -> Void
    private let subscriptions = Locked<[String: NATSHandle]>([:])
    private let lastDropLog = Atomic<Int>(0)
    private let queue: DispatchQueue
    private let outbox = Locked(Outbox())
    /// Set on the queue when the connection is destroyed: operations queued after that (a
    /// publish racing `close()`, a late flush) must not touch the freed handle.
    private let destroyed = Atomic<Bool>(false)

    /// Operations waiting for the queue, in order.
    private struct Outbox {
        var operations: [Operation] = []
        var queuedPublishes = 0
        var scheduled = false
    }

    private enum Operation {
        case publish(String, ByteBuffer)
        case subscribe(String)
        case unsubscribe(String)
        /// Work on the queue; it gets the handle, or `nil` once the connection is destroyed.
        case run(@Sendable (NATSHandle?) -> Void)
    }

    /// Publishes that may wait for the queue before more are dropped.
    static let maxQueuedPublishes = 65_536

    private init(handle: NATSHandle, shared: NATSCallbackContext, options: NATSExchange.Options,
                 deliver: @escaping @Sendable (String, ByteBuffer) -> Void) {
        self.handle = handle
        self.shared = shared
        self.options = options
        self.deliver = deliver
        self.queue = DispatchQueue(label: "neffos.nats.\(shared.node)")
    }

    private static let deliveryPool = Locked<Int>(0)

    /// Makes nats.c's shared delivery pool at least `threads` wide.
    private static func ensureDeliveryPool(_ threads: Int) {
        deliveryPool.withLock { size in
            guard threads > size else { return }
            if nats_SetMessageDeliveryPoolSize(Int32(threads)) == NATS_OK { size = threads }
        }
    }

    /// Connects (nats.c's blocking connect runs on a dispatch thread).
    static func open(
        options: NATSExchange.Options, node: String, logger: Logger,
        deliver: @escaping @Sendable (String, ByteBuffer) -> Void,
        status: @escaping @Sendable (ExchangeStatus) -> Void
    ) async throws -> NATSConnection {
        ensureDeliveryPool(options.deliveryThreads)
        let shared = NATSCallbackContext(node: node, logger: logger, status: status)
        let result: Result<NATSHandle, NeffosError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: connectBlocking(options: options, node: node, shared: shared))
            }
        }
        let handle = try result.get()
        let connection = NATSConnection(handle: handle, shared: shared, options: options, deliver: deliver)
        logger.info("NATS connected", metadata: ["node": "\(node)", "servers": "\(options.servers.joined(separator: ","))"])
        status(.connected)
        return connection
    }

    private static func connectBlocking(options: NATSExchange.Options, node: String, shared: NATSCallbackContext) -> Result<NATSHandle, NeffosError> {
        var natsOptions: OpaquePointer?
        guard natsOptions_Create(&natsOptions) == NATS_OK, let natsOptions else {
            return .failure(NeffosError.dialFailed.with(detail: "nats.c could not create options"))
        }
        defer { natsOptions_Destroy(natsOptions) }
        let check = NATSExchange.Options.check
        let closure = Unmanaged.passRetained(shared).toOpaque()
        var errors: [NeffosError?] = options.apply(to: natsOptions, name: "neffos \(node)")
        errors.append(check(natsOptions_SetNoEcho(natsOptions, true), "no echo"))
        errors.append(check(natsOptions_SetReconnectBufSize(natsOptions, Int32(options.reconnectBufferBytes)), "reconnect buffer"))
        errors.append(check(natsOptions_SetMaxPendingMsgs(natsOptions, Int32(options.pendingMessagesLimit)), "pending messages"))
        errors.append(check(natsOptions_UseGlobalMessageDelivery(natsOptions, true), "delivery pool"))
        errors.append(check(natsOptions_SetDisconnectedCB(natsOptions, onDisconnected, closure), "disconnected callback"))
        errors.append(check(natsOptions_SetReconnectedCB(natsOptions, onReconnected, closure), "reconnected callback"))
        errors.append(check(natsOptions_SetClosedCB(natsOptions, onClosed, closure), "closed callback"))
        errors.append(check(natsOptions_SetErrorHandler(natsOptions, onError, closure), "error handler"))
        if let error = errors.compactMap({ $0 }).first {
            Unmanaged<NATSCallbackContext>.fromOpaque(closure).release()
            return .failure(error)
        }
        var connection: OpaquePointer?
        let status = natsConnection_Connect(&connection, natsOptions)
        guard status == NATS_OK, let connection else {
            // No connection, so no callback will ever release the context.
            Unmanaged<NATSCallbackContext>.fromOpaque(closure).release()
            var lastStatus = NATS_OK
            let detail = nats_GetLastError(&lastStatus).map { String(cString: $0) } ?? String(cString: natsStatus_GetText(status))
            return .failure(NeffosError.dialFailed.with(detail: "no NATS server reachable at \(options.servers.joined(separator: ",")) (\(detail)); is nats-server running?"))
        }
        return .success(NATSHandle(pointer: connection))
    }


    // MARK: The queue

    private func enqueue(_ operation: Operation) {
        let schedule = outbox.withLock { outbox -> Bool? in
            if case .publish = operation {
                guard outbox.queuedPublishes < Self.maxQueuedPublishes else { return nil }
                outbox.queuedPublishes += 1
            }
            outbox.operations.append(operation)
            if outbox.scheduled { return false }
            outbox.scheduled = true
            return true
        }
        switch schedule {
        case nil: countDrop(reason: "the NATS connection is not keeping up (\(Self.maxQueuedPublishes) publishes waiting)")
        case true?: queue.async { self.drainOutbox() }
        case false?: break
        }
    }

    /// On the queue: performs what was enqueued, batch by batch, until nothing is left.
    private func drainOutbox() {
        while true {
            let batch = outbox.withLock { outbox -> [Operation] in
                if outbox.operations.isEmpty {
                    outbox.scheduled = false
                    return []
                }
                defer {
                    outbox.operations = []
                    outbox.queuedPublishes = 0
                }
                return outbox.operations
            }
            if batch.isEmpty { return }
            for operation in batch { perform(operation) }
        }
    }

    private func perform(_ operation: Operation) {
        if destroyed.load(ordering: .relaxed) {
            switch operation {
            case .publish: countDrop(reason: "closed")
            case .subscribe, .unsubscribe: break
            case .run(let work): work(nil)
            }
            return
        }
        switch operation {
        case .publish(let subject, let payload):
            let status = payload.withUnsafeReadableBytes { bytes in
                natsConnection_Publish(handle.pointer, subject, bytes.baseAddress, Int32(bytes.count))
            }
            if status != NATS_OK { countDrop(reason: String(cString: natsStatus_GetText(status))) }
        case .subscribe(let subject):
            subscribeNow(subject)
        case .unsubscribe(let subject):
            unsubscribeNow(subject)
        case .run(let work):
            work(handle)
        }
    }

    // MARK: ExchangeConnection

    func publish(_ payload: ByteBuffer, to subject: String) {
        guard !shared.closing.load(ordering: .relaxed) else {
            countDrop(reason: "closed")
            return
        }
        shared.published.add(1, ordering: .relaxed)
        enqueue(.publish(subject, payload))
    }

    private func countDrop(reason: String) {
        let total = shared.dropped.add(1, ordering: .relaxed).newValue
        // Log the first drop and then every thousandth, not each one.
        let previous = lastDropLog.load(ordering: .relaxed)
        if previous == 0 || total - previous >= 1000 {
            lastDropLog.store(total, ordering: .relaxed)
            shared.logger.warning("NATS publish dropped", metadata: ["reason": "\(reason)", "dropped": "\(total)"])
        }
    }

    func subscribe(_ subject: String) {
        guard !shared.closing.load(ordering: .relaxed) else { return }
        enqueue(.subscribe(subject))
    }

    func unsubscribe(_ subject: String) {
        enqueue(.unsubscribe(subject))
    }

    /// On the queue.
    private func subscribeNow(_ subject: String) {
        guard !shared.closing.load(ordering: .relaxed) else { return }
        subscriptions.withLock { subscriptions in
            guard subscriptions[subject] == nil else { return }
            let context = NATSSubscriptionContext(subject: subject, deliver: deliver, shared: shared)
            let closure = Unmanaged.passRetained(context).toOpaque()
            var subscription: OpaquePointer?
            let status = natsConnection_Subscribe(&subscription, handle.pointer, subject, onMessage, closure)
            guard status == NATS_OK, let subscription else {
                Unmanaged<NATSSubscriptionContext>.fromOpaque(closure).release()
                let text = String(cString: natsStatus_GetText(status))
                shared.logger.error("NATS subscribe failed", metadata: ["subject": "\(subject)", "error": "\(text)"])
                shared.status(.error("subscribe \(subject): \(text)"))
                return
            }
            shared.openSubscriptions.add(1, ordering: .relaxed)
            if natsSubscription_SetOnCompleteCB(subscription, onSubscriptionComplete, closure) != NATS_OK {
                // Already closed (the connection closes): the handler may still run once, so the
                // context is kept rather than freed under it.
                shared.openSubscriptions.subtract(1, ordering: .relaxed)
                shared.logger.debug("a NATS subscription closed before its completion callback was set", metadata: ["subject": "\(subject)"])
            }
            _ = natsSubscription_SetPendingLimits(subscription, Int32(options.pendingMessagesLimit), Int32(clamping: options.pendingBytesLimit))
            shared.subscriptionSubjects.withLock {
                $0[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(subscription)))] = (subject, 0)
            }
            subscriptions[subject] = NATSHandle(pointer: subscription)
        }
    }

    /// On the queue.
    private func unsubscribeNow(_ subject: String) {
        guard let subscription = subscriptions.withLock({ $0.removeValue(forKey: subject) }) else { return }
        shared.subscriptionSubjects.withLock {
            $0[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(subscription.pointer)))] = nil
        }
        _ = natsSubscription_Unsubscribe(subscription.pointer)
        natsSubscription_Destroy(subscription.pointer)
    }

    /// Runs `work` on the queue after everything enqueued before it, and returns its result;
    /// `work` gets the handle, or `nil` once the connection is destroyed.
    private func afterQueued<Result: Sendable>(_ work: @escaping @Sendable (NATSHandle?) -> Result) async -> Result {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result, Never>) in
            enqueue(.run { handle in continuation.resume(returning: work(handle)) })
        }
    }

    func flush() async throws {
        let status = await afterQueued { handle in
            handle.map { natsConnection_FlushTimeout($0.pointer, 5_000) } ?? NATS_CONNECTION_CLOSED
        }
        guard status == NATS_OK else {
            throw NeffosError.timeout.with(detail: "NATS flush: \(String(cString: natsStatus_GetText(status)))")
        }
    }

    /// Drains (pending messages are delivered), closes, waits until nats.c has called its last
    /// callback, and destroys the connection: nothing is delivered after this returns.
    func close() async {
        guard !shared.closing.exchange(true, ordering: .relaxed) else { return }
        // After what was queued (publishes included) has been handed to nats.c: drain
        // unsubscribes every subscription, lets their pending messages through, then closes.
        await afterQueued { handle in
            guard let handle else { return }
            if natsConnection_DrainTimeout(handle.pointer, 2_000) != NATS_OK {
                natsConnection_Close(handle.pointer)
            }
        }
        if !(await shared.waitUntilQuiet(timeout: .seconds(5))) {
            shared.logger.warning("NATS connection did not report its close in time; closing it now")
            await afterQueued { handle in handle.map { natsConnection_Close($0.pointer) } }
            _ = await shared.waitUntilQuiet(timeout: .seconds(5))
        }
        let remaining = subscriptions.withLock { subscriptions in
            defer { subscriptions = [:] }
            return Array(subscriptions.values)
        }
        await afterQueued { [self] handle in
            guard let handle else { return }
            for subscription in remaining { natsSubscription_Destroy(subscription.pointer) }
            natsConnection_Destroy(handle.pointer)
            destroyed.store(true, ordering: .relaxed)
        }
    }

    var statistics: ExchangeStatistics {
        ExchangeStatistics(
            published: shared.published.load(ordering: .relaxed),
            delivered: shared.delivered.load(ordering: .relaxed),
            dropped: shared.dropped.load(ordering: .relaxed),
            reconnects: shared.reconnects.load(ordering: .relaxed))
    }
}

extension NATSExchange.Options {
    /// Sets what every connection of ours takes from the options on `natsOptions`: servers,
    /// name (`name` unless one is given), order, timeouts, reconnection, credentials and TLS.
    /// Returns an error per option nats.c refused (`nil` for those it took).
    func apply(to natsOptions: OpaquePointer, name: String) -> [NeffosError?] {
        let check = Self.check
        var errors: [NeffosError?] = []
        var servers = self.servers.map { strdup($0) }
        defer { servers.forEach { free($0) } }
        servers.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { pointers in
                errors.append(check(natsOptions_SetServers(natsOptions, pointers.baseAddress, Int32(pointers.count)), "servers"))
            }
        }
        errors.append(check(natsOptions_SetName(natsOptions, self.name ?? name), "name"))
        errors.append(check(natsOptions_SetNoRandomize(natsOptions, !randomize), "randomize"))
        errors.append(check(natsOptions_SetIgnoreDiscoveredServers(natsOptions, !discoveredServers), "discovered servers"))
        errors.append(check(natsOptions_SetTimeout(natsOptions, Self.milliseconds(connectTimeout)), "connect timeout"))
        errors.append(check(natsOptions_SetAllowReconnect(natsOptions, true), "reconnect"))
        errors.append(check(natsOptions_SetMaxReconnect(natsOptions, Int32(maxReconnects ?? -1)), "max reconnects"))
        errors.append(check(natsOptions_SetReconnectWait(natsOptions, Self.milliseconds(reconnectWait)), "reconnect wait"))
        errors.append(check(natsOptions_SetReconnectJitter(natsOptions, Self.milliseconds(reconnectJitter), Self.milliseconds(reconnectJitter)), "reconnect jitter"))
        errors.append(check(natsOptions_SetPingInterval(natsOptions, Self.milliseconds(pingInterval)), "ping interval"))
        if let user { errors.append(check(natsOptions_SetUserInfo(natsOptions, user, password), "user")) }
        if let token { errors.append(check(natsOptions_SetToken(natsOptions, token), "token")) }
        if let credentialsFile { errors.append(check(natsOptions_SetUserCredentialsFromFiles(natsOptions, credentialsFile, nil), "credentials")) }
        if tls {
            errors.append(check(natsOptions_SetSecure(natsOptions, true), "TLS"))
            if let tlsCAFile { errors.append(check(natsOptions_LoadCATrustedCertificates(natsOptions, tlsCAFile), "TLS CA")) }
        }
        return errors
    }

    /// `nil` for `NATS_OK`, else an error naming the option nats.c refused.
    static func check(_ status: natsStatus, _ what: String) -> NeffosError? {
        status == NATS_OK ? nil : NeffosError.invalidConfiguration.with(detail: "\(what): \(String(cString: natsStatus_GetText(status)))")
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        Int64(duration.components.seconds) * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}

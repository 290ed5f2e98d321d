import CNATS
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import Neffos

/// JetStream through nats.c, for a history kept by the cluster: one stream, publishes chained
/// per subject (each must name the subject's last sequence, so that every message's
/// predecessor in its room is known), and direct reads by subject.
///
/// nats.c blocks (a request waits for its reply): every call runs on this client's own serial
/// queue, never on the caller's thread.
package final class JetStreamClient: Sendable {
    /// A stream's identity: its name and when it was created. A stream deleted and made again
    /// has another identity, so positions taken in the old one are recognised as stale.
    package struct StreamIdentity: Sendable, Equatable, CustomStringConvertible {
        package var name: String
        /// Nanoseconds since 1970 (UTC).
        package var created: Int64
        /// `<name>-<created>`: the epoch of the history it keeps.
        package var description: String { "\(name)-\(created)" }
    }

    /// A stored message.
    package struct Stored: Sendable {
        package var sequence: UInt64
        package var subject: String
        package var data: ByteBuffer
    }

    /// Why a publish was refused.
    package enum PublishError: Error, Equatable {
        /// The subject's last sequence is not the one the publish expected (another message
        /// was stored for it meanwhile).
        case wrongLastSequence
        /// Anything else (the text of nats.c or the server).
        case failed(String)
    }

    private let connection: NATSHandle
    private let context: NATSHandle
    private let queue = DispatchQueue(label: "neffos.jetstream")

    private init(connection: NATSHandle, context: NATSHandle) {
        self.connection = connection
        self.context = context
    }

    deinit {
        jsCtx_Destroy(context.pointer)
        natsConnection_Destroy(connection.pointer)
    }

    /// Connects to `url` (as ``NATSExchange/init(url:)-(String)`` takes it).
    package static func connect(_ url: String) async throws -> JetStreamClient {
        try await connect(options: NATSExchange(url: url).options)
    }

    /// Connects to the servers of `options` (JetStream on: `nats-server -js`), reconnecting
    /// every 100 ms for ever whatever the options say: a history read during a bus outage waits
    /// for the bus (see `run`), it does not fail at once.
    ///
    /// - Throws: ``NeffosError/dialFailed`` when no server answers or JetStream is off;
    ///   ``NeffosError/invalidConfiguration`` for options nats.c refuses.
    package static func connect(options: NATSExchange.Options) async throws -> JetStreamClient {
        var adjusted = options
        adjusted.maxReconnects = nil
        adjusted.reconnectWait = .milliseconds(100)
        let options = adjusted
        let url = options.servers.joined(separator: ",")
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var natsOptions: OpaquePointer?
                guard natsOptions_Create(&natsOptions) == NATS_OK, let natsOptions else {
                    continuation.resume(throwing: NeffosError.dialFailed.with(detail: "nats.c could not create options"))
                    return
                }
                defer { natsOptions_Destroy(natsOptions) }
                if let error = options.apply(to: natsOptions, name: "neffos history").compactMap({ $0 }).first {
                    continuation.resume(throwing: error)
                    return
                }
                var connection: OpaquePointer?
                let status = natsConnection_Connect(&connection, natsOptions)
                guard status == NATS_OK, let connection else {
                    continuation.resume(throwing: NeffosError.dialFailed.with(detail: "no NATS server at \(url) (\(Self.text(status))); is nats-server running with -js?"))
                    return
                }
                var context: OpaquePointer?
                let jsStatus = natsConnection_JetStream(&context, connection, nil)
                guard jsStatus == NATS_OK, let context else {
                    natsConnection_Destroy(connection)
                    continuation.resume(throwing: NeffosError.dialFailed.with(detail: "JetStream at \(url): \(Self.text(jsStatus))"))
                    return
                }
                continuation.resume(returning: JetStreamClient(connection: NATSHandle(pointer: connection), context: NATSHandle(pointer: context)))
            }
        }
    }

    /// Runs `work` on the queue with the JetStream context.
    /// A call that fails because the bus is away (disconnected, JetStream not answering yet
    /// after a restart) is tried again, every 50 ms, for up to `patience`.
    /// (The closure holds `self`: the handles outlive every call in flight.)
    private func run<Value: Sendable>(
        patience: Duration = JetStreamClient.patience, _ work: @escaping @Sendable (OpaquePointer) throws -> Value
    ) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { [self] in
                let deadline = ContinuousClock.now + patience
                while true {
                    do {
                        return continuation.resume(returning: try work(context.pointer))
                    } catch let error as Unavailable where ContinuousClock.now < deadline {
                        _ = error
                        usleep(50_000)
                    } catch let error as Unavailable {
                        return continuation.resume(throwing: NeffosError.timeout.with(
                            detail: "JetStream unavailable for \(patience) (\(error.text)); is nats-server running with -js?"))
                    } catch {
                        return continuation.resume(throwing: error)
                    }
                }
            }
        }
    }

    /// How long a call waits for the bus to come back.
    static let patience = Duration.seconds(10)

    /// The bus is away for now: the call is tried again.
    private struct Unavailable: Error {
        let text: String
    }

    /// Throws ``Unavailable`` for a status that says the bus is away.
    private static func checkAvailable(_ status: natsStatus) throws {
        if status == NATS_CONNECTION_DISCONNECTED || status == NATS_NO_RESPONDERS || status == NATS_TIMEOUT {
            throw Unavailable(text: text(status))
        }
    }

    private static func text(_ status: natsStatus) -> String { String(cString: natsStatus_GetText(status)) }

    /// Makes stream `name` over `subjects` (or updates its limits), with file or memory storage
    /// and direct reads on; returns its identity. Waits `patience` for JetStream to answer (a
    /// server without JetStream never does).
    package func ensureStream(
        name: String, subjects: [String], maxMessagesPerSubject: Int, maxAge: Duration, fileStorage: Bool,
        patience: Duration = JetStreamClient.patience
    ) async throws -> StreamIdentity {
        try await run(patience: patience) { js in
            var config = jsStreamConfig()
            jsStreamConfig_Init(&config)
            let ageNanoseconds = Int64(maxAge.components.seconds) * 1_000_000_000 + maxAge.components.attoseconds / 1_000_000_000
            let copies = subjects.map { strdup($0) }
            defer { copies.forEach { free($0) } }
            let nameCopy = strdup(name)
            defer { free(nameCopy) }
            var pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var error = jsErrCode(rawValue: 0)
            let status: natsStatus = pointers.withUnsafeMutableBufferPointer { buffer in
                config.Name = UnsafePointer(nameCopy)
                config.Subjects = buffer.baseAddress
                config.SubjectsLen = Int32(buffer.count)
                config.MaxMsgsPerSubject = Int64(maxMessagesPerSubject)
                config.MaxAge = ageNanoseconds
                config.Storage = fileStorage ? js_FileStorage : js_MemoryStorage
                config.AllowDirect = true
                var status = js_AddStream(&info, js, &config, nil, &error)
                if status != NATS_OK && error == JSStreamNameExistErr {
                    error = jsErrCode(rawValue: 0)
                    status = js_UpdateStream(&info, js, &config, nil, &error)
                }
                return status
            }
            try Self.checkAvailable(status)
            guard status == NATS_OK, let info else {
                throw NeffosError.invalidConfiguration.with(detail: "JetStream stream \(name): \(Self.text(status)) (error \(error.rawValue))")
            }
            defer { jsStreamInfo_Destroy(info) }
            return StreamIdentity(name: name, created: info.pointee.Created)
        }
    }

    /// Deletes stream `name` (for tests and tools).
    package func deleteStream(_ name: String) async throws {
        try await run { js in
            var error = jsErrCode(rawValue: 0)
            let status = js_DeleteStream(js, name, nil, &error)
            guard status == NATS_OK else { throw NeffosError.invalidConfiguration.with(detail: "deleting JetStream stream \(name): \(Self.text(status))") }
        }
    }

    /// Stores `data` under `subject` in `stream`, expecting `last` as the subject's last
    /// sequence (0: no message yet); returns the new message's sequence.
    ///
    /// - Throws: ``PublishError/wrongLastSequence`` when another message was stored meanwhile.
    package func publish(_ data: ByteBuffer, to subject: String, stream: String, expectingLast last: UInt64) async throws -> UInt64 {
        try await run { js in
            var options = jsPubOptions()
            jsPubOptions_Init(&options)
            if last == 0 { options.ExpectNoMessage = true } else { options.ExpectLastSubjectSeq = last }
            var ack: UnsafeMutablePointer<jsPubAck>?
            var error = jsErrCode(rawValue: 0)
            let status = stream.withCString { streamName -> natsStatus in
                options.ExpectStream = streamName
                return data.withUnsafeReadableBytes { bytes in
                    js_Publish(&ack, js, subject, bytes.baseAddress, Int32(bytes.count), &options, &error)
                }
            }
            guard status == NATS_OK, let ack else {
                if error == JSStreamWrongLastSequenceErr { throw PublishError.wrongLastSequence }
                try Self.checkAvailable(status)
                throw PublishError.failed("\(Self.text(status)) (error \(error.rawValue))")
            }
            defer { jsPubAck_Destroy(ack) }
            return ack.pointee.Sequence
        }
    }

    /// The last message stored under `subject` in `stream`, or `nil` when there is none.
    package func last(in stream: String, subject: String) async throws -> Stored? {
        try await directGet(stream: stream, subject: subject) { options, text in options.LastBySubject = text }
    }

    /// The messages stored under `subject` in `stream` from `start` through `end` (sequences),
    /// oldest first, at most `limit` (the first ones): one ordered consumer streams them,
    /// thousands a second where a message-by-message read makes a round trip each.
    package func range(in stream: String, subject: String, from start: UInt64, through end: UInt64, limit: Int) async throws -> [Stored] {
        guard start <= end, limit > 0 else { return [] }
        return try await run { js in
            var options = jsSubOptions()
            jsSubOptions_Init(&options)
            options.Ordered = true
            options.Config.DeliverPolicy = js_DeliverByStartSequence
            options.Config.OptStartSeq = start
            var subscription: OpaquePointer?
            var error = jsErrCode(rawValue: 0)
            let status = stream.withCString { name in
                options.Stream = name
                return js_SubscribeSync(&subscription, js, subject, nil, &options, &error)
            }
            try Self.checkAvailable(status)
            guard status == NATS_OK, let subscription else {
                throw NeffosError.invalidConfiguration.with(detail: "JetStream read of \(subject) in \(stream): \(Self.text(status)) (error \(error.rawValue))")
            }
            defer {
                natsSubscription_Unsubscribe(subscription)
                natsSubscription_Destroy(subscription)
            }
            var found: [Stored] = []
            while found.count < limit {
                var message: OpaquePointer?
                let next = natsSubscription_NextMsg(&message, subscription, 2000)
                // Nothing more came (the rest aged out meanwhile): what was found.
                if next == NATS_TIMEOUT { break }
                try Self.checkAvailable(next)
                guard next == NATS_OK, let message else { throw NeffosError.invalidConfiguration.with(detail: "JetStream read of \(subject): \(Self.text(next))") }
                defer { natsMsg_Destroy(message) }
                var metadata: UnsafeMutablePointer<jsMsgMetaData>?
                guard natsMsg_GetMetaData(&metadata, message) == NATS_OK, let metadata else { continue }
                defer { jsMsgMetaData_Destroy(metadata) }
                let sequence = metadata.pointee.Sequence.Stream
                guard sequence <= end else { break }
                let length = Int(natsMsg_GetDataLength(message))
                var data = ByteBuffer()
                if length > 0, let bytes = natsMsg_GetData(message) { data.writeBytes(UnsafeRawBufferPointer(start: bytes, count: length)) }
                found.append(Stored(sequence: sequence, subject: subject, data: data))
                if sequence == end || metadata.pointee.NumPending == 0 { break }
            }
            return found
        }
    }

    /// The message at `sequence` in `stream`, or `nil` when there is none (never stored,
    /// deleted, or aged out).
    package func message(in stream: String, at sequence: UInt64) async throws -> Stored? {
        guard sequence > 0 else { return nil }
        return try await directGet(stream: stream, subject: "") { options, _ in options.Sequence = sequence }
    }

    private func directGet(
        stream: String, subject: String, set: @escaping @Sendable (inout jsDirectGetMsgOptions, UnsafePointer<CChar>) -> Void
    ) async throws -> Stored? {
        try await run { js in
            var options = jsDirectGetMsgOptions()
            jsDirectGetMsgOptions_Init(&options)
            var message: OpaquePointer?
            let status = subject.withCString { text -> natsStatus in
                set(&options, text)
                return js_DirectGetMsg(&message, js, stream, nil, &options)
            }
            if status == NATS_NOT_FOUND { return nil }
            try Self.checkAvailable(status)
            guard status == NATS_OK, let message else {
                throw NeffosError.invalidConfiguration.with(detail: "JetStream read of \(subject) in \(stream): \(Self.text(status))")
            }
            defer { natsMsg_Destroy(message) }
            let length = Int(natsMsg_GetDataLength(message))
            var data = ByteBuffer()
            if length > 0, let bytes = natsMsg_GetData(message) {
                data.writeBytes(UnsafeRawBufferPointer(start: bytes, count: length))
            }
            let stored = natsMsg_GetSubject(message).map { String(cString: $0) } ?? subject
            return Stored(sequence: natsMsg_GetSequence(message), subject: stored, data: data)
        }
    }
}

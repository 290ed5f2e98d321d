import NIOCore

/// What one node tells another over an exchange: the routing of a message and the frame
/// itself, already encoded as clients receive it (so a receiving node writes it as is).
///
/// Layout (integers big-endian): version `3`; kind; flags (bit 0: binary); the publisher's
/// incarnation (UInt64, random per start, so a restarted node's sequence starts afresh) and
/// sequence number (UInt64, over everything it publishes: for de-duplication); its stream
/// epoch (UInt32) and the sequence number on the envelope's subject (UInt64, 0 when not
/// counted: receivers detect lost envelopes by its gaps); six length-prefixed (UInt16)
/// strings: origin node, namespace, room, target ID, excluded ID, wait token; the ask deadline
/// (Int64 Unix nanoseconds, 0 when none); the trace context (a UInt8 count of pairs, each two
/// length-prefixed strings, in key order; 0 when the publisher traces nothing); then the
/// frame, to the end. Nodes of different versions drop each other's envelopes (as
/// malformed): upgrade a cluster all at once.
struct Envelope: Sendable, Equatable {
    enum Kind: UInt8, Sendable {
        /// A broadcast: deliver the frame to the local targets.
        case broadcast = 0
        /// A server ask from `origin`: deliver it, and forward the first reply to `origin`.
        case ask = 1
        /// A reply to an ask of the receiving node; the frame is the client's reply.
        case reply = 2
        /// A node is alive (sent every heartbeat interval to every node); with the token
        /// `leaving`, it is shutting down. No frame.
        case heartbeat = 3
        /// A ``ClusterQuery`` from `origin` to every node (JSON in the frame, its token).
        case query = 4
        /// A node's ``ClusterReply`` to a query of the receiving node (JSON in the frame).
        case answer = 5
        /// A ``PresenceEvent`` of the publisher's node, to the nodes following its room (JSON
        /// in the frame).
        case presence = 6
    }

    var kind: Kind
    var binary: Bool
    var incarnation: UInt64
    var sequence: UInt64
    /// Changes when the publisher forgets its per-subject counters (see ``ClusterLink``).
    var streamEpoch: UInt32 = 0
    /// The publisher's count of envelopes on this envelope's subject; 0: not counted.
    var streamSequence: UInt64 = 0
    var origin: String
    /// Where the frame goes on the receiving node (its `except` travels as an empty string
    /// when nobody is excluded).
    var target: BroadcastTarget
    var token: String
    var deadline: Int64
    /// The publisher's trace context (`traceparent`…), so that the receiving node's spans
    /// continue its trace; empty when it traces nothing.
    var traceContext: [String: String] = [:]
    var frame: ByteBuffer

    static let version: UInt8 = 4

    /// Encodes the envelope; `nil` when a field is longer than 65,535 bytes.
    func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer? {
        let fields = [origin, target.namespace, target.room, target.to, target.except ?? "", token]
        let trace = traceContext.sorted { $0.key < $1.key }
        guard fields.allSatisfy({ $0.utf8.count <= Int(UInt16.max) }), trace.count <= Int(UInt8.max),
            trace.allSatisfy({ $0.key.utf8.count <= Int(UInt16.max) && $0.value.utf8.count <= Int(UInt16.max) })
        else { return nil }
        let traceBytes = trace.reduce(0) { $0 + 4 + $1.key.utf8.count + $1.value.utf8.count }
        var buffer = allocator.buffer(capacity: 40 + fields.reduce(0) { $0 + 2 + $1.utf8.count } + traceBytes + frame.readableBytes)
        buffer.writeInteger(Self.version)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(UInt8(binary ? 1 : 0))
        buffer.writeInteger(incarnation)
        buffer.writeInteger(sequence)
        buffer.writeInteger(streamEpoch)
        buffer.writeInteger(streamSequence)
        for field in fields {
            buffer.writeInteger(UInt16(field.utf8.count))
            buffer.writeString(field)
        }
        buffer.writeInteger(deadline)
        buffer.writeInteger(UInt8(trace.count))
        for (key, value) in trace {
            for text in [key, value] {
                buffer.writeInteger(UInt16(text.utf8.count))
                buffer.writeString(text)
            }
        }
        buffer.writeImmutableBuffer(frame)
        return buffer
    }

    /// Decodes an envelope; `nil` for anything malformed (never a trap).
    init?(decoding payload: ByteBuffer) {
        var buffer = payload
        guard buffer.readInteger(as: UInt8.self) == Self.version,
            let rawKind = buffer.readInteger(as: UInt8.self), let kind = Kind(rawValue: rawKind),
            let flags = buffer.readInteger(as: UInt8.self),
            let incarnation = buffer.readInteger(as: UInt64.self),
            let sequence = buffer.readInteger(as: UInt64.self),
            let streamEpoch = buffer.readInteger(as: UInt32.self),
            let streamSequence = buffer.readInteger(as: UInt64.self)
        else { return nil }
        var fields: [String] = []
        for _ in 0..<6 {
            guard let length = buffer.readInteger(as: UInt16.self),
                let field = buffer.readString(length: Int(length))
            else { return nil }
            fields.append(field)
        }
        guard let deadline = buffer.readInteger(as: Int64.self), let pairs = buffer.readInteger(as: UInt8.self) else { return nil }
        var traceContext: [String: String] = [:]
        for _ in 0..<pairs {
            guard let keyLength = buffer.readInteger(as: UInt16.self), let key = buffer.readString(length: Int(keyLength)),
                let valueLength = buffer.readInteger(as: UInt16.self), let value = buffer.readString(length: Int(valueLength))
            else { return nil }
            traceContext[key] = value
        }
        self.traceContext = traceContext
        self.kind = kind
        self.binary = flags & 1 != 0
        self.incarnation = incarnation
        self.sequence = sequence
        self.streamEpoch = streamEpoch
        self.streamSequence = streamSequence
        self.origin = fields[0]
        self.target = BroadcastTarget(namespace: fields[1], room: fields[2], to: fields[3], except: fields[4].isEmpty ? nil : fields[4])
        self.token = fields[5]
        self.deadline = deadline
        self.frame = buffer
    }

    init(
        kind: Kind, binary: Bool, incarnation: UInt64, sequence: UInt64, origin: String,
        target: BroadcastTarget = BroadcastTarget(namespace: ""), token: String = "",
        deadline: Int64 = 0, frame: ByteBuffer
    ) {
        self.kind = kind
        self.binary = binary
        self.incarnation = incarnation
        self.sequence = sequence
        self.origin = origin
        self.target = target
        self.token = token
        self.deadline = deadline
        self.frame = frame
    }
}

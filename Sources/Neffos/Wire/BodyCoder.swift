#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import NIOFoundationEssentialsCompat

/// Turns typed values into message bodies and back.
///
/// The default is ``JSONBodyCoder``. Provide your own (MessagePack, Protobuf…) through the
/// server's or client's configuration; handlers registered with
/// `Events.on(_:as:_:)` decode with it.
public protocol BodyCoder: Sendable {
    /// Encodes `value` into a body.
    func encode<Value: Encodable>(_ value: Value) throws -> ByteBuffer
    /// Decodes a body into `type`.
    func decode<Value: Decodable>(_ type: Value.Type, from body: ByteBuffer) throws -> Value
}

/// The coder of the connection whose handler is running: what the typed body helpers
/// (``Reply/encoded(_:coder:)``, ``Message/decode(_:using:)``,
/// ``Message/init(namespace:room:event:encoding:coder:)``) use when no coder is given.
///
/// Inside a handler it is the server's (or client's) configured ``BodyCoder``; elsewhere it
/// is ``JSONBodyCoder``. Bind it yourself around code that runs outside handlers:
///
/// ```swift
/// try BodyCoders.$current.withValue(server.configuration.bodyCoder) {
///     server.broadcast(try Message(namespace: "default", event: "tick", encoding: tick))
/// }
/// ```
public enum BodyCoders {
    /// The coder in effect here.
    @TaskLocal public static var current: any BodyCoder = JSONBodyCoder()
}

/// A ``BodyCoder`` that reads and writes JSON.
public struct JSONBodyCoder: BodyCoder {
    private let encoder: JSONEncoder
    private let decoder: JSONDecoder
    /// Whether it was made with Foundation's default encoder and decoder (then it need not be
    /// bound as ``BodyCoders/current``: that is the default).
    let isPlain: Bool

    /// Creates a JSON coder with the given Foundation encoder and decoder (default ones when
    /// `nil`).
    public init(encoder: JSONEncoder? = nil, decoder: JSONDecoder? = nil) {
        self.encoder = encoder ?? JSONEncoder()
        self.decoder = decoder ?? JSONDecoder()
        self.isPlain = encoder == nil && decoder == nil
    }

    /// Encodes `value` as JSON.
    public func encode<Value: Encodable>(_ value: Value) throws -> ByteBuffer {
        try encoder.encodeAsByteBuffer(value, allocator: ByteBufferAllocator())
    }

    /// Decodes JSON into `type`.
    public func decode<Value: Decodable>(_ type: Value.Type, from body: ByteBuffer) throws -> Value {
        try decoder.decode(type, from: body)
    }
}

extension BodyCoder {
    /// Whether handlers must run with this coder bound as ``BodyCoders/current`` (it is not
    /// the default one).
    var needsBinding: Bool { !((self as? JSONBodyCoder)?.isPlain ?? false) }
}

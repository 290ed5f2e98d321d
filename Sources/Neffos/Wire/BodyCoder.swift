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

/// A ``BodyCoder`` that reads and writes JSON.
public struct JSONBodyCoder: BodyCoder {
    private let encoder: JSONEncoder
    private let decoder: JSONDecoder

    /// Creates a JSON coder with the given Foundation encoder and decoder.
    public init(encoder: JSONEncoder = JSONEncoder(), decoder: JSONDecoder = JSONDecoder()) {
        self.encoder = encoder
        self.decoder = decoder
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

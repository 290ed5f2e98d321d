import Foundation
import NIOCore
import Testing

@testable import Neffos

/// One row of `vectors.tsv`.
struct Vector: CustomTestStringConvertible, Sendable {
    var name: String
    var frame: String
    var valid: Bool
    var wait = ""
    var namespace = ""
    var room = ""
    var event = ""
    var isError = ""
    var isNoOp = ""
    var body = ""

    var testDescription: String { name }

    static let fixtureURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/vectors.tsv")
    static let sharedURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/protocol/vectors.tsv")

    static let all: [Vector] = {
        guard let text = try? String(contentsOf: fixtureURL, encoding: .utf8) else { return [] }
        return text.split(separator: "\n", omittingEmptySubsequences: true).compactMap { line in
            if line.hasPrefix("#") { return nil }
            let columns = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            func column(_ index: Int) -> String { index < columns.count ? columns[index] : "" }
            return Vector(
                name: column(0), frame: column(1), valid: column(2) == "1", wait: column(3),
                namespace: column(4), room: column(5), event: column(6), isError: column(7),
                isNoOp: column(8), body: column(9))
        }
    }()
}

@Suite("Codec vectors")
struct CodecVectorTests {
    @Test("the fixture holds the vectors")
    func fixtureLoads() {
        #expect(Vector.all.count >= 20)
    }

    @Test("the fixture copy matches ../shared when it is present")
    func fixtureMatchesShared() throws {
        guard FileManager.default.fileExists(atPath: Vector.sharedURL.path) else { return }
        let shared = try Data(contentsOf: Vector.sharedURL)
        let copy = try Data(contentsOf: Vector.fixtureURL)
        #expect(shared == copy, "Tests/NeffosTests/Fixtures/vectors.tsv differs from \(Vector.sharedURL.path): copy it again")
    }

    @Test("a valid vector decodes to its fields", arguments: Vector.all.filter(\.valid))
    func decodesValid(_ vector: Vector) throws {
        let message = try MessageCodec.decode(ByteBuffer(string: vector.frame))
        #expect(message.wait == vector.wait)
        #expect(message.namespace == vector.namespace)
        #expect(message.room == vector.room)
        #expect(message.event.rawValue == vector.event)
        #expect(message.isNoOp == (vector.isNoOp == "1"))
        if vector.isError == "1" {
            let error = try #require(message.error)
            #expect(NeffosError.wireText(of: error) == vector.body)
            #expect(message.body.readableBytes == 0)
        } else {
            #expect(message.error == nil)
            #expect(message.bodyString == vector.body)
        }
    }

    @Test("a valid vector's fields encode back to its exact frame", arguments: Vector.all.filter(\.valid))
    func encodesValid(_ vector: Vector) throws {
        var message = Message(namespace: vector.namespace, room: vector.room, event: EventName(vector.event), body: vector.body)
        message.wait = vector.wait
        message.isNoOp = vector.isNoOp == "1"
        if vector.isError == "1" {
            message.body = ByteBuffer()
            message.error = RemoteError(vector.body)
        }
        let frame = try MessageCodec.encode(message)
        #expect(String(buffer: frame) == vector.frame)
    }

    @Test("an invalid vector is rejected, never trapped", arguments: Vector.all.filter { !$0.valid })
    func rejectsInvalid(_ vector: Vector) {
        #expect(throws: NeffosError.invalidPayload) {
            try MessageCodec.decode(ByteBuffer(string: vector.frame))
        }
    }

    @Test("an invalid vector is a native message where native messages are enabled",
          arguments: Vector.all.filter { !$0.valid && !$0.frame.isEmpty })
    func invalidIsNative(_ vector: Vector) throws {
        let message = try MessageCodec.decode(ByteBuffer(string: vector.frame), allowNative: true)
        #expect(message.isNative)
        #expect(message.event == .nativeMessage)
        #expect(message.namespace == "")
        #expect(message.bodyString == vector.frame)
    }

    @Test("an empty frame is invalid even with native messages enabled")
    func emptyFrameNeverNative() {
        #expect(throws: NeffosError.invalidPayload) {
            try MessageCodec.decode(ByteBuffer(), allowNative: true)
        }
    }
}

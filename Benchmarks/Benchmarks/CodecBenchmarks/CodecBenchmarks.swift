import Benchmark
import NIOCore
import Neffos

/// Encode and decode of one frame with a 64-byte body, as a broadcast or an emit does.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    let body = ByteBuffer(bytes: Array(repeating: UInt8(ascii: "x"), count: 64))
    let message = Message(namespace: "default", room: "lobby", event: "chat", body: body)
    let frame = try! MessageCodec.encode(message)

    Benchmark("encode 64-byte body") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! MessageCodec.encode(message))
        }
    }

    Benchmark("decode 64-byte body") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! MessageCodec.decode(frame))
        }
    }

    // An ask as a client sends it: the frame of `message` behind a wait token (the token's
    // setter is the package's own, so the frame is written here).
    var askFrame = ByteBuffer(string: "$1732200000000000001")
    var rest = frame
    askFrame.writeBuffer(&rest)
    Benchmark("decode ask with token") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! MessageCodec.decode(askFrame))
        }
    }

    let escaped = Message(namespace: "a;b", room: "r;1", event: "chat", body: body)
    Benchmark("encode escaped names") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! MessageCodec.encode(escaped))
        }
    }
}

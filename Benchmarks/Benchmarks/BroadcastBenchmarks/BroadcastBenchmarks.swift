import Benchmark
import NIOCore
import NIOPosix
import Neffos
import NeffosTesting

/// The broadcast path without sockets: one `Server.broadcast` to N connections (in-memory
/// transports on 2 event loops, frames counted, not kept), until every frame was written.
/// What it measures: routing through the room index, one encode, one hop per event loop, and
/// N outbox writes.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        maxDuration: .seconds(3),
        maxIterations: 100_000
    )

    for receivers in [100, 1_000, 10_000] {
        Benchmark("broadcast to a namespace of \(receivers)", configuration: .init(scalingFactor: .one)) { benchmark, setup in
            let (server, connections) = setup
            let message = Message(namespace: "default", event: "tick", body: ByteBuffer(repeating: UInt8(ascii: "x"), count: 64))
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(server.broadcast(message))
                // Every write hops to its connection's loop in order: a no-op queued behind
                // them on each loop marks the end.
                for loop in loops { try? loop.submit {}.wait() }
            }
            benchmark.stopMeasurement()
            blackHole(connections.reduce(0) { $0 + $1.framesWritten })
        } setup: {
            try await connectedServer(receivers: receivers)
        }
    }

    Benchmark("room broadcast: 10 members among 10,000 connections", configuration: .init(scalingFactor: .kilo)) { benchmark, setup in
        let (server, _) = setup
        let message = Message(namespace: "default", room: "room-7", event: "tick", body: ByteBuffer(repeating: UInt8(ascii: "x"), count: 64))
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(server.broadcast(message))
        }
        for loop in loops { try? loop.submit {}.wait() }
        benchmark.stopMeasurement()
    } setup: {
        try await connectedServer(receivers: 10_000, roomSize: 10)
    }
}

/// The event loops the connections are spread over.
let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator().prefix(2))

/// A server with `receivers` connections in namespace `default`, each in room
/// `room-<index / roomSize>` when `roomSize` is given.
func connectedServer(receivers: Int, roomSize: Int? = nil) async throws -> (Server, [MemoryConnection]) {
    var configuration = Server.Configuration()
    configuration.logger.logLevel = .critical
    let server = try Server(namespaces: ["default": Events()], configuration: configuration)
    var connections: [MemoryConnection] = []
    for index in 0..<receivers {
        let client = try await MemoryConnection.open(to: server, on: loops[index % loops.count], keepsFrames: false)
        await client.send("M")
        await client.send("$1;default;;_OnNamespaceConnect;0;0;")
        if let roomSize { await client.send("$2;default;room-\(index / roomSize);_OnRoomJoin;0;0;") }
        connections.append(client)
    }
    // Wait until every connection is in the namespace (system events run in tasks).
    while server.connections(namespace: "default").count < receivers { await Task.yield() }
    if let roomSize {
        while server.members(ofRoom: "room-\((receivers - 1) / roomSize)", in: "default").count < roomSize { await Task.yield() }
    }
    return (server, connections)
}

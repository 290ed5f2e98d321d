import Logging
import NIOCore
import Neffos
import NeffosNIO
import Synchronization

extension ExchangeConformance {
    // MARK: Checks

    func binaryAcrossNodes() async throws {
        try await withCluster { cluster in
            var members: [(Client, NSConn, Received)] = []
            for index in 0..<nodes { members.append(try await member(cluster, at: index)) }
            try await warmUp(cluster, from: 0, receivers: members.map(\.2))
            let bytes: [UInt8] = [0, 1, 0x3B, 0xFF, 0xFE, 10, 13]
            cluster.servers[0].broadcast(Message(namespace: "default", event: "blob", body: ByteBuffer(bytes: bytes), isBinary: true))
            for (_, _, received) in members {
                try await received.wait(for: 1, of: "blob")
                let blobs = received.messages.filter { $0.event == "blob" }
                try expect(blobs.count == 1 && blobs[0].isBinary, "a member got \(blobs.count) blob(s), binary: \(blobs.map(\.isBinary))")
                try expect(Array(blobs[0].body.readableBytesView) == bytes, "the bytes changed on the way")
            }
        }
    }

    func namespaceBroadcast() async throws {
        var events = Events()
        events.on("relay") { ns, message in
            ns.broadcast(Message(namespace: ns.namespace, event: "relayed", body: message.body))
        }
        try await withCluster(["default": events]) { cluster in
            var members: [(Client, NSConn, Received)] = []
            for index in 0..<nodes { members.append(try await member(cluster, at: index)) }
            for from in 0..<nodes { try await warmUp(cluster, from: from, receivers: members.map(\.2)) }
            cluster.servers[0].broadcast(Message(namespace: "default", event: "news", body: "from the server API"))
            for (_, _, received) in members { try await received.wait(for: 1, of: "news") }
            // From inside a handler on node 1.
            try members[1].1.emit("relay", "from a handler")
            for (_, _, received) in members { try await received.wait(for: 1, of: "relayed") }
            for (_, _, received) in members {
                try expect(received.bodies("news") == ["from the server API"], "each member got the news once: \(received.bodies("news"))")
                try expect(received.bodies("relayed") == ["from a handler"], "each member got the relay once")
            }
        }
    }

    func roomBroadcast() async throws {
        try await withCluster { cluster in
            let inside0 = try await member(cluster, at: 0, rooms: ["r"])
            let inside1 = try await member(cluster, at: 1, rooms: ["r"])
            let outside = try await member(cluster, at: 2, rooms: ["other"])
            try await warmUp(cluster, from: 2, room: "r", receivers: [inside0.2, inside1.2])
            try await warmUp(cluster, from: 0, room: "other", receivers: [outside.2])
            cluster.servers[2].broadcast(Message(namespace: "default", room: "r", event: "room-news", body: "members only"))
            try await inside0.2.wait(for: 1, of: "room-news")
            try await inside1.2.wait(for: 1, of: "room-news")
            try await drain(cluster, from: 2, room: "other", receivers: [outside.2])
            try expect(outside.2.bodies("room-news").isEmpty, "a non-member on another node got the room's message")
            try expect(inside0.2.messages.first { $0.event == "room-news" }?.room == "r", "the room travels with the message")
        }
    }

    func directMessage() async throws {
        try await withCluster { cluster in
            let target = try await member(cluster, at: 2)
            let bystander = try await member(cluster, at: 1)
            try await warmUp(cluster, from: 0, to: target.0.id, receivers: [target.2])
            var direct = Message(namespace: "default", event: "dm", body: "psst")
            direct.to = target.0.id
            cluster.servers[0].broadcast(direct)
            try await target.2.wait(for: 1, of: "dm")
            try await warmUp(cluster, from: 0, receivers: [bystander.2])
            try await drain(cluster, from: 0, receivers: [bystander.2])
            try expect(bystander.2.bodies("dm").isEmpty, "a message to an ID reached another connection")
        }
    }

    func allButSender() async throws {
        var events = Events()
        events.on("others") { ns, message in
            ns.broadcastOthers(Message(namespace: ns.namespace, room: message.room, event: "echo", body: message.body))
        }
        try await withCluster(["default": events]) { cluster in
            var members: [(Client, NSConn, Received)] = []
            for index in 0..<nodes { members.append(try await member(cluster, at: index, rooms: ["r"])) }
            for from in 0..<nodes { try await warmUp(cluster, from: from, receivers: members.map(\.2)) }
            try members[1].1.emit("others", "not to me")
            try await members[0].2.wait(for: 1, of: "echo")
            try await members[2].2.wait(for: 1, of: "echo")
            // From the server API, excluding by ID, a connection on another node.
            cluster.servers[0].broadcast(Message(namespace: "default", room: "r", event: "echo", body: "not to 2"), except: Exclude(members[2].0.id))
            try await members[0].2.wait(for: 2, of: "echo")
            try await members[1].2.wait(for: 1, of: "echo")
            for index in 0..<nodes { try await drain(cluster, from: index, receivers: [members[1].2, members[2].2]) }
            try expect(members[1].2.bodies("echo") == ["not to 2"], "the sender got its own broadcastOthers: \(members[1].2.bodies("echo"))")
            try expect(members[2].2.bodies("echo") == ["not to me"], "the excluded ID got the message: \(members[2].2.bodies("echo"))")
        }
    }

    func noDuplicates() async throws {
        try await withCluster { cluster in
            var members: [(Client, NSConn, Received)] = []
            for index in 0..<nodes { members.append(try await member(cluster, at: index, rooms: ["r"])) }
            try await warmUp(cluster, from: 0, receivers: members.map(\.2))
            try await warmUp(cluster, from: 0, room: "r", receivers: members.map(\.2))
            for index in 0..<200 {
                cluster.servers[0].broadcast(Message(namespace: "default", event: "n", body: "\(index)"))
                cluster.servers[0].broadcast(Message(namespace: "default", room: "r", event: "rn", body: "\(index)"))
            }
            for (_, _, received) in members {
                try await received.wait(for: 200, of: "n")
                try await received.wait(for: 200, of: "rn")
            }
            try await drain(cluster, from: 0, receivers: members.map(\.2))
            for (_, _, received) in members {
                try expect(received.bodies("n").count == 200 && Set(received.bodies("n")).count == 200, "namespace duplicates or losses: \(received.bodies("n").count)")
                try expect(received.bodies("rn").count == 200 && Set(received.bodies("rn")).count == 200, "room duplicates or losses: \(received.bodies("rn").count)")
            }
        }
    }

    func publisherOrder() async throws {
        try await withCluster { cluster in
            var members: [(Client, NSConn, Received)] = []
            for index in 0..<nodes { members.append(try await member(cluster, at: index)) }
            for from in 0..<nodes { try await warmUp(cluster, from: from, receivers: members.map(\.2)) }
            await withTaskGroup(of: Void.self) { group in
                for from in 0..<nodes {
                    let server = cluster.servers[from]
                    group.addTask {
                        for index in 0..<300 { server.broadcast(Message(namespace: "default", event: "seq", body: "\(from):\(index)")) }
                    }
                }
            }
            for (_, _, received) in members { try await received.wait(for: 300 * nodes, of: "seq") }
            for (_, _, received) in members {
                for from in 0..<nodes {
                    let mine = received.bodies("seq").filter { $0.hasPrefix("\(from):") }
                    try expect(mine == (0..<300).map { "\(from):\($0)" }, "publisher \(from)'s order was not kept")
                }
            }
        }
    }

    func askAnswered() async throws {
        try await withCluster { cluster in
            let target = try await member(cluster, at: 2, answers: ["question": { m in Reply("yes to \(m.bodyString)") }])
            try await warmUp(cluster, from: 0, to: target.0.id, receivers: [target.2])
            let answer = try await cluster.servers[0].ask(Message(namespace: "default", event: "question", body: "?"), to: target.0.id, timeout: .seconds(10))
            try expect(answer.bodyString == "yes to ?", "the ask across nodes got \(answer.bodyString)")
            // A refusal travels back as an error.
            let refusingLog = Received()
            var refusing = refusingLog.events()
            refusing.on("question") { _, _ in throw ConformanceFailure("not now") }
            let client = try await cluster.client(at: 1, namespaces: ["default": refusing])
            _ = try await client.connect("default")
            try await warmUp(cluster, from: 0, to: client.id, receivers: [refusingLog])
            do {
                _ = try await cluster.servers[0].ask(Message(namespace: "default", event: "question"), to: client.id, timeout: .seconds(10))
                throw ConformanceFailure("\(name): a refused ask returned")
            } catch let error as RemoteError {
                try expect(error.text == "not now", "the refusal's text changed on the way: \(error.text)")
            }
        }
    }

    func askAnsweredTwice() async throws {
        try await withCluster { cluster in
            var members: [(Client, NSConn, Received)] = []
            for index in 0..<nodes {
                members.append(try await member(cluster, at: index, answers: ["who": { _ in Reply("node \(index)") }]))
            }
            try await warmUp(cluster, from: 0, receivers: members.map(\.2))
            for _ in 0..<5 {
                let answer = try await cluster.servers[0].ask(Message(namespace: "default", event: "who"), timeout: .seconds(10))
                try expect(answer.bodyString.hasPrefix("node "), "a broadcast ask got \(answer.bodyString)")
            }
            for (_, _, received) in members { try await received.wait(for: 5, of: "who") }
            // The extra replies were dropped without harm: another ask still works.
            let again = try await cluster.servers[1].ask(Message(namespace: "default", event: "who"), to: members[2].0.id, timeout: .seconds(10))
            try expect(again.bodyString == "node 2", "a later ask got \(again.bodyString)")
        }
    }

    func askUnanswered() async throws {
        try await withCluster { cluster in
            let silent = try await member(cluster, at: 2)
            try await warmUp(cluster, from: 0, to: silent.0.id, receivers: [silent.2])
            let start = ContinuousClock.now
            do {
                _ = try await cluster.servers[0].ask(Message(namespace: "default", event: "silence"), to: silent.0.id, timeout: .milliseconds(400))
                throw ConformanceFailure("\(name): an unanswered ask returned")
            } catch let error as NeffosError where error == .timeout {}
            try expect(ContinuousClock.now - start < .seconds(5), "the unanswered ask did not end at its deadline")
            try await silent.2.wait(for: 1, of: "silence")
        }
    }

    func askLateReply() async throws {
        let gate = Locked<[CheckedContinuation<Void, Never>]?>([])
        let received = Received()
        var events = received.events(answering: ["quick": { _ in "quick" }])
        events.answer("slow") { _, message in
            received.append(message)
            // Hold the answer until the test opens the gate, after the ask's deadline.
            await withCheckedContinuation { continuation in
                let open = gate.withLock { waiters -> Bool in
                    guard waiters != nil else { return true }
                    waiters!.append(continuation)
                    return false
                }
                if open { continuation.resume() }
            }
            return "too late"
        }
        try await withCluster { cluster in
            let slow = try await cluster.client(at: 2, namespaces: ["default": events])
            _ = try await slow.connect("default")
            try await warmUp(cluster, from: 0, to: slow.id, receivers: [received])
            do {
                _ = try await cluster.servers[0].ask(Message(namespace: "default", event: "slow"), to: slow.id, timeout: .milliseconds(300))
                throw ConformanceFailure("\(name): the ask should time out")
            } catch let error as NeffosError where error == .timeout {}
            let waiters = gate.withLock { waiters in
                defer { waiters = nil }
                return waiters ?? []
            }
            for waiter in waiters { waiter.resume() }
            // The late reply travels back and is dropped; the connection and the node go on.
            let quick = try await cluster.servers[0].ask(Message(namespace: "default", event: "quick"), to: slow.id, timeout: .seconds(10))
            try expect(quick.bodyString == "quick", "after a late reply, an ask got \(quick.bodyString)")
        }
    }

    func joinLeaveRacing() async throws {
        try await withCluster { cluster in
            let steady = try await member(cluster, at: 0, rooms: ["r"])
            var racers: [(Client, NSConn, Received)] = []
            for index in 1..<nodes { racers.append(try await member(cluster, at: index)) }
            try await warmUp(cluster, from: 0, room: "r", receivers: [steady.2])
            let publisher = cluster.servers[0]
            let publishing = Task {
                var index = 0
                while !Task.isCancelled && index < 2000 {
                    publisher.broadcast(Message(namespace: "default", room: "r", event: "race", body: "\(index)"))
                    index += 1
                    if index % 50 == 0 { await Task.yield() }
                }
                return index
            }
            for round in 0..<10 {
                for (_, ns, _) in racers {
                    if round % 2 == 0 { try await ns.joinRoom("r") } else { try await ns.leaveRoom("r") }
                }
            }
            for (_, ns, _) in racers { try await ns.joinRoom("r") }
            let sent = await publishing.value
            try await steady.2.wait(for: sent, of: "race")
            try await warmUp(cluster, from: 0, room: "r", receivers: racers.map(\.2))
            try await drain(cluster, from: 0, room: "r", receivers: racers.map(\.2) + [steady.2])
            for (_, _, received) in racers + [steady] {
                let bodies = received.bodies("race")
                try expect(Set(bodies).count == bodies.count, "a racer got duplicates")
                let numbers = bodies.compactMap(Int.init)
                try expect(numbers == numbers.sorted(), "a racer got the publisher's messages out of order")
            }
            try expect(steady.2.bodies("race").count == sent, "the steady member lost messages")
        }
    }

    func nodeLeaving() async throws {
        try await withCluster { cluster in
            let stay = try await member(cluster, at: 1)
            let leaving = try await member(cluster, at: 2, answers: ["q": { _ in "a" }])
            try await warmUp(cluster, from: 0, receivers: [stay.2, leaving.2])
            let leavingID = leaving.0.id
            await cluster.stopNode(2)
            cluster.servers[0].broadcast(Message(namespace: "default", event: "after", body: "still here"))
            try await stay.2.wait(for: 1, of: "after")
            do {
                _ = try await cluster.servers[0].ask(Message(namespace: "default", event: "q"), to: leavingID, timeout: .milliseconds(300))
                throw ConformanceFailure("\(name): an ask to a departed node's client returned")
            } catch let error as NeffosError where error == .timeout {}
            let newcomer = try await member(cluster, at: 1)
            try await warmUp(cluster, from: 0, receivers: [newcomer.2])
        }
    }

    func busOutage() async throws {
        guard let faults else { return }
        try await withCluster { cluster in
            let far = try await member(cluster, at: 0)
            let cut = try await member(cluster, at: 1)
            let local = try await member(cluster, at: 1)
            try await warmUp(cluster, from: 0, receivers: [cut.2])
            try await warmUp(cluster, from: 1, receivers: [far.2])
            try await faults.disconnect(1, cluster)
            // Local delivery goes on during the outage.
            cluster.servers[1].broadcast(Message(namespace: "default", event: "during", body: "local"))
            try await local.2.wait(for: 1, of: "during")
            try await cut.2.wait(for: 1, of: "during")
            try await faults.reconnect(1, cluster)
            // Resubscribed: the far node reaches node 1 again, and node 1 the far node.
            try await warmUp(cluster, from: 0, receivers: [cut.2, local.2])
            try await warmUp(cluster, from: 1, receivers: [far.2])
            cluster.servers[0].broadcast(Message(namespace: "default", event: "after", body: "back"))
            try await cut.2.wait(for: 1, of: "after")
        }
    }

    func specialNames() async throws {
        let names = ["a.b", "*", ">", "with space", "semi;colon", "", "日本語", "x.*.>"]
        var namespaces = Namespaces()
        for name in names { namespaces[name] = Events() }
        let counter = Atomic<Int>(0)
        try await withCluster(namespaces, configure: { index, configuration in
            configuration.idGenerator = { _ in "id.* >;\(index)-\(counter.add(1, ordering: .relaxed).newValue)" }
        }) { cluster in
            for name in names {
                let near = try await member(cluster, at: 0, namespace: name, rooms: [name, "r.*"])
                let far = try await member(cluster, at: 2, namespace: name, rooms: [name])
                try await warmUp(cluster, from: 1, namespace: name, receivers: [near.2, far.2])
                try await warmUp(cluster, from: 1, namespace: name, room: name, receivers: [near.2, far.2])
                try await warmUp(cluster, from: 1, namespace: name, to: far.0.id, receivers: [far.2])
                cluster.servers[1].broadcast(Message(namespace: name, room: name, event: "hi", body: name))
                try await near.2.wait(for: 1, of: "hi")
                try await far.2.wait(for: 1, of: "hi")
                try expect(far.2.messages.first { $0.event == "hi" }?.namespace == name, "the namespace \"\(name)\" changed on the way")
            }
        }
    }
}

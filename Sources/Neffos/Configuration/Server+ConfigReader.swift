import Configuration

extension Server.Configuration {
    /// A configuration read from `config` under `scope` (by default the keys start with
    /// `neffos.`), every key optional, every value checked: a value that is present but wrong
    /// throws, naming the key.
    ///
    /// ```swift
    /// let config = try await Server.Configuration.reader(overrides: ["neffos.listener.port": "9000"], file: "neffos.yaml")
    /// var configuration = try Server.Configuration(config: config, exchanges: ExchangeRegistry([.memory, .nats]))
    /// configuration.logger = logger  // what code sets is not configuration
    /// ```
    ///
    /// ## Keys
    /// Durations are seconds (`10`, `0.5`) or carry a unit (`500ms`, `10s`, `2m`, `1h`); byte
    /// counts may carry one (`512KiB`, `4MiB`); `none` or `off` switches off the settings
    /// that accept `nil`. Environment variables name the keys in capitals with `_`
    /// (`neffos.limits.pendingAsks` is `NEFFOS_LIMITS_PENDING_ASKS`).
    ///
    /// | key | setting | default |
    /// |---|---|---|
    /// | `neffos.exchange.url` | ``exchange``, made by `exchanges` (an unknown scheme lists the registered ones) | none: this node only |
    /// | `neffos.node.name` | ``nodeName`` | random |
    /// | `neffos.cluster.name` | ``clusterName`` | `default` |
    /// | `neffos.metrics.name` | ``metricsName`` | none |
    /// | `neffos.timeouts.ask` | ``askTimeout`` | 10 s |
    /// | `neffos.timeouts.handshake` | ``handshakeTimeout`` (`none` waits forever) | 10 s |
    /// | `neffos.timeouts.shutdown` | ``shutdownTimeout`` | 10 s |
    /// | `neffos.limits.queuedEvents` | ``maxQueuedEvents`` | 1024 |
    /// | `neffos.limits.queuedBytes` | ``maxQueuedBytes`` | 512 KiB |
    /// | `neffos.limits.rooms` | ``maxRoomsPerConnection`` | 1024 |
    /// | `neffos.limits.nameLength` | ``maxNameLength`` | 256 |
    /// | `neffos.limits.pendingAsks` | ``maxPendingAsks`` | 1024 |
    /// | `neffos.limits.pendingServerAsks` | ``maxPendingServerAsks`` | 65536 |
    /// | `neffos.broadcast.strictOrdering` | ``strictBroadcastOrdering`` | false |
    /// | `neffos.presence.heartbeatInterval` | ``Server/PresenceConfiguration/heartbeatInterval`` | 1 s |
    /// | `neffos.presence.nodeTimeout` | ``Server/PresenceConfiguration/nodeTimeout`` (more than the interval) | 3 s |
    /// | `neffos.presence.queryTimeout` | ``Server/PresenceConfiguration/queryTimeout`` | 2 s |
    /// | `neffos.presence.maxQueryResults` | ``Server/PresenceConfiguration/maxQueryResults`` | 10000 |
    /// | `neffos.presence.maxPendingQueries` | ``Server/PresenceConfiguration/maxPendingQueries`` | 256 |
    /// | `neffos.presence.namespaces` | ``Server/PresenceConfiguration/namespaces``, separated by commas | none |
    /// | `neffos.presence.clientEvent` | ``Server/PresenceConfiguration/clientEvent`` | none |
    /// | `neffos.history.rooms` | ``Server/HistoryConfiguration/rules``: `namespace/rooms` separated by commas (`chat/*, dashboard/metrics.*`), each with the three keys below | none |
    /// | `neffos.history.maxCount` | ``HistoryLimits/maxCount`` of those rules | 100 |
    /// | `neffos.history.maxAge` | ``HistoryLimits/maxAge`` of those rules | 5 min |
    /// | `neffos.history.replayOnJoin` | ``HistoryRule/replayOnJoin`` of those rules | 0 |
    /// | `neffos.history.maxRecoveryMessages` | ``Server/HistoryConfiguration/maxRecoveryMessages`` | 1000 |
    /// | `neffos.history.maxLingeringRooms` | ``Server/HistoryConfiguration/maxLingeringRooms`` | 10000 |
    /// | `neffos.history.store.url` | ``Server/HistoryConfiguration/store`` (`memory://`) or ``Server/HistoryConfiguration/shared`` (`nats://`, with NeffosNATS's plugin), made by `histories` | `memory://` |
    /// | `neffos.limits.messageBytes` | ``Server/TransportConfiguration/maxMessageSize`` | 512 KiB |
    /// | `neffos.limits.frameBytes` | ``Server/TransportConfiguration/maxFrameSize`` | 512 KiB |
    /// | `neffos.limits.outboxBytes` | ``Server/TransportConfiguration/maxOutboxBytes`` | 512 KiB |
    /// | `neffos.limits.connections` | ``Server/TransportConfiguration/maxConnections`` (`none`: the open-file limit only) | 10000 |
    /// | `neffos.limits.requestHeaderBytes` | ``Server/TransportConfiguration/maxRequestHeaderBytes`` | 16 KiB |
    /// | `neffos.timeouts.request` | ``Server/TransportConfiguration/requestTimeout`` | 10 s |
    /// | `neffos.timeouts.idle` | ``Server/TransportConfiguration/idleTimeout`` | 30 s |
    /// | `neffos.timeouts.read` | ``Server/TransportConfiguration/readTimeout`` | none |
    /// | `neffos.timeouts.write` | ``Server/TransportConfiguration/writeTimeout`` | 30 s |
    /// | `neffos.timeouts.close` | ``Server/TransportConfiguration/closeTimeout`` | 2 s |
    /// | `neffos.heartbeat.interval` | ``Server/TransportConfiguration/pingInterval`` (`off`: no heartbeat) | 30 s |
    /// | `neffos.origins` | ``Server/TransportConfiguration/allowedOrigins``: `same-origin`, `any`, or origins separated by commas | `same-origin` |
    ///
    /// The standalone listener reads its own keys (`neffos.listener.*`, see `WebSocketListener`
    /// in NeffosNIO) from the same reader.
    ///
    /// - Parameters:
    ///   - config: where the values come from.
    ///   - scope: the first part of every key. Default: `neffos`; `""` reads the keys bare.
    ///   - exchanges: the exchanges `neffos.exchange.url` may name. Default: `memory://` only.
    ///   - histories: the history stores `neffos.history.store.url` may name. Default:
    ///     `memory://` only; NeffosNATS adds `nats://` (JetStream, shared by the cluster:
    ///     `HistoryStoreRegistry([.memory, .jetStream])`).
    /// - Throws: ``NeffosError/invalidConfiguration``, its detail naming the key and what is
    ///   wrong (`neffos.limits.rooms: must be at least 1, got -5`).
    public init(
        config: ConfigReader, scope: String = "neffos", exchanges: ExchangeRegistry = .standard,
        histories: HistoryStoreRegistry = .standard
    ) throws(NeffosError) {
        self.init()
        let values = ConfigValues(config, scope: scope)
        exchange = try values.made("exchange.url", by: exchanges) ?? exchange
        nodeName = try values.string("node.name") ?? nodeName
        clusterName = try values.string("cluster.name") ?? clusterName
        metricsName = try values.string("metrics.name") ?? metricsName
        askTimeout = try values.duration("timeouts.ask") ?? askTimeout
        handshakeTimeout = try values.optionalDuration("timeouts.handshake") ?? handshakeTimeout
        shutdownTimeout = try values.duration("timeouts.shutdown") ?? shutdownTimeout
        maxQueuedEvents = try values.int("limits.queuedEvents", minimum: 1) ?? maxQueuedEvents
        maxQueuedBytes = try values.int("limits.queuedBytes", minimum: 1, bytes: true) ?? maxQueuedBytes
        maxRoomsPerConnection = try values.int("limits.rooms", minimum: 1) ?? maxRoomsPerConnection
        maxNameLength = try values.int("limits.nameLength", minimum: 1) ?? maxNameLength
        maxPendingAsks = try values.int("limits.pendingAsks", minimum: 1) ?? maxPendingAsks
        maxPendingServerAsks = try values.int("limits.pendingServerAsks", minimum: 1) ?? maxPendingServerAsks
        strictBroadcastOrdering = try values.bool("broadcast.strictOrdering") ?? strictBroadcastOrdering
        try presence.read(values)
        try history.read(values, stores: histories)
        try transport.read(values)
    }
}

extension Server.HistoryConfiguration {
    fileprivate mutating func read(_ values: ConfigValues, stores: HistoryStoreRegistry) throws(NeffosError) {
        var limits = HistoryLimits()
        limits.maxCount = try values.int("history.maxCount", minimum: 1) ?? limits.maxCount
        limits.maxAge = try values.duration("history.maxAge") ?? limits.maxAge
        guard limits.maxAge > .zero else { throw values.invalid("history.maxAge", "must be more than 0") }
        let replay = try values.int("history.replayOnJoin", minimum: 0) ?? 0
        if let list = try values.string("history.rooms") {
            rules = []
            for item in list.split(separator: ",").map({ String($0).trimmed }).filter({ !$0.isEmpty }) {
                let parts = item.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw values.invalid("history.rooms", "each item is namespace/rooms (rooms a name, a prefix ending in *, or *), got \"\(item)\"")
                }
                rules.append(HistoryRule(namespace: parts[0], rooms: parts[1], limits: limits, replayOnJoin: replay))
            }
        }
        maxRecoveryMessages = try values.int("history.maxRecoveryMessages", minimum: 1) ?? maxRecoveryMessages
        maxLingeringRooms = try values.int("history.maxLingeringRooms", minimum: 0) ?? maxLingeringRooms
        if let backend = try values.made("history.store.url", by: stores) { use(backend) }
    }
}

extension Server.PresenceConfiguration {
    fileprivate mutating func read(_ values: ConfigValues) throws(NeffosError) {
        heartbeatInterval = try values.duration("presence.heartbeatInterval") ?? heartbeatInterval
        nodeTimeout = try values.duration("presence.nodeTimeout") ?? nodeTimeout
        queryTimeout = try values.duration("presence.queryTimeout") ?? queryTimeout
        maxQueryResults = try values.int("presence.maxQueryResults", minimum: 1) ?? maxQueryResults
        maxPendingQueries = try values.int("presence.maxPendingQueries", minimum: 1) ?? maxPendingQueries
        if let list = try values.string("presence.namespaces") {
            namespaces = Set(list.split(separator: ",").map { String($0).trimmed }.filter { !$0.isEmpty })
        }
        if let name = try values.string("presence.clientEvent") { clientEvent = EventName(rawValue: name) }
        guard heartbeatInterval > .zero else { throw values.invalid("presence.heartbeatInterval", "must be more than 0") }
        guard nodeTimeout > heartbeatInterval else {
            throw values.invalid("presence.nodeTimeout", "must be more than presence.heartbeatInterval (\(heartbeatInterval)), got \(nodeTimeout)")
        }
    }
}

extension Server.TransportConfiguration {
    fileprivate mutating func read(_ values: ConfigValues) throws(NeffosError) {
        maxMessageSize = try values.int("limits.messageBytes", minimum: 1, bytes: true) ?? maxMessageSize
        maxFrameSize = try values.int("limits.frameBytes", minimum: 125, bytes: true) ?? maxFrameSize
        maxOutboxBytes = try values.int("limits.outboxBytes", minimum: 1024, bytes: true) ?? maxOutboxBytes
        maxConnections = try values.optionalInt("limits.connections") ?? maxConnections
        maxRequestHeaderBytes = try values.int("limits.requestHeaderBytes", minimum: 1024, bytes: true) ?? maxRequestHeaderBytes
        requestTimeout = try values.optionalDuration("timeouts.request") ?? requestTimeout
        idleTimeout = try values.optionalDuration("timeouts.idle") ?? idleTimeout
        readTimeout = try values.optionalDuration("timeouts.read") ?? readTimeout
        writeTimeout = try values.optionalDuration("timeouts.write") ?? writeTimeout
        closeTimeout = try values.duration("timeouts.close") ?? closeTimeout
        pingInterval = try values.optionalDuration("heartbeat.interval") ?? pingInterval
        if let origins = try values.string("origins") {
            switch origins.lowercased() {
            case "same-origin", "same": allowedOrigins = .sameOrigin
            case "any", "*": allowedOrigins = .any
            default:
                let list = origins.split(separator: ",").map { String($0).trimmed }.filter { !$0.isEmpty }
                guard list.allSatisfy({ $0.hasPrefix("http://") || $0.hasPrefix("https://") }) else {
                    throw values.invalid("origins", "expected same-origin, any, or origins such as https://example.com separated by commas, got \"\(origins)\"")
                }
                allowedOrigins = .only(list)
            }
        }
    }
}

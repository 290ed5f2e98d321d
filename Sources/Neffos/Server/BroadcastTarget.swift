/// Who a broadcast (or a server ask) reaches: the connections of a namespace, narrowed to a
/// room's members and to one connection ID when given, less an excluded connection.
///
/// Built once by ``Server/broadcast(_:except:)``, it travels unchanged through local delivery,
/// the connection index, the cluster link and the envelope other nodes receive.
struct BroadcastTarget: Sendable, Hashable {
    /// The namespace.
    var namespace: String
    /// The room, or empty for the whole namespace.
    var room: String = ""
    /// The connection ID to reach, or empty for every member.
    var to: String = ""
    /// The connection ID left out, if any.
    var except: String?

    /// The target of `message` (its namespace, room and `to`), less `except`.
    init(of message: Message, except: String?) {
        self.init(namespace: message.namespace, room: message.room, to: message.to, except: except)
    }

    init(namespace: String, room: String = "", to: String = "", except: String? = nil) {
        self.namespace = namespace
        self.room = room
        self.to = to
        self.except = except
    }
}

/// A reference that does not keep its object alive (kept behind a `Locked`, which makes it
/// safe to share).
struct WeakReference<Object> {
    private weak var object: AnyObject?

    init(_ object: Object?) {
        self.object = object.map { $0 as AnyObject }
    }

    /// The object, while it is alive.
    var value: Object? { object as? Object }
}

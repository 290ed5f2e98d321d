/// A dictionary keyed by strings that keeps one entry inline and the rest in a `Dictionary`:
/// a connection's namespaces, where most connections have exactly one and an empty-or-one
/// `Dictionary` would cost each an allocation (~140 bytes) for as long as it lives.
///
/// Iteration order is unspecified, as a `Dictionary`'s.
struct SmallDictionary<Value>: Sequence, ExpressibleByDictionaryLiteral {
    private var firstKey: String?
    private var firstValue: Value?
    private var rest: [String: Value] = [:]

    init() {}

    init(dictionaryLiteral elements: (String, Value)...) {
        for (key, value) in elements { self[key] = value }
    }

    var count: Int { (firstKey == nil ? 0 : 1) + rest.count }

    var isEmpty: Bool { firstKey == nil && rest.isEmpty }

    /// The value for `key`; setting `nil` removes it. Modified in place (a value's own storage,
    /// a set of rooms, stays unique while it is changed).
    subscript(key: String) -> Value? {
        get {
            if firstKey == key { return firstValue }
            return rest.isEmpty ? nil : rest[key]
        }
        _modify {
            if firstKey == key {
                var value = firstValue.take()
                defer {
                    if value == nil { firstKey = nil } else { firstValue = value }
                }
                yield &value
            } else if firstKey == nil && rest[key] == nil {
                var value: Value? = nil
                defer {
                    if value != nil {
                        firstKey = key
                        firstValue = value
                    }
                }
                yield &value
            } else {
                yield &rest[key]
            }
        }
    }

    /// Removes the value for `key`; returns it, or `nil` when there was none.
    @discardableResult
    mutating func removeValue(forKey key: String) -> Value? {
        if firstKey == key {
            firstKey = nil
            return firstValue.take()
        }
        return rest.removeValue(forKey: key)
    }

    // Closures, not key paths: a key path used as a function here was made at run time on
    // every call (1.2 % of a connect storm's CPU, for the close check).
    var keys: LazyMapSequence<Self, String> { lazy.map { $0.key } }

    var values: LazyMapSequence<Self, Value> { lazy.map { $0.value } }

    struct Iterator: IteratorProtocol {
        fileprivate var first: (key: String, value: Value)?
        fileprivate var rest: Dictionary<String, Value>.Iterator

        mutating func next() -> (key: String, value: Value)? {
            if let first {
                self.first = nil
                return first
            }
            return rest.next()
        }
    }

    func makeIterator() -> Iterator {
        var first: (key: String, value: Value)?
        if let firstKey, let firstValue { first = (firstKey, firstValue) }
        return Iterator(first: first, rest: rest.makeIterator())
    }
}

extension SmallDictionary: Sendable where Value: Sendable {}

/// A set that keeps one element inline and the rest in a `Set`: the rooms a connection joined
/// in a namespace, where most join one and a one-element `Set` would cost each connection an
/// allocation (~100 bytes) per namespace.
struct SmallSet<Element: Hashable>: Sequence, ExpressibleByArrayLiteral {
    private var first: Element?
    private var rest: Set<Element> = []

    init() {}

    init(arrayLiteral elements: Element...) {
        for element in elements { insert(element) }
    }

    var count: Int { (first == nil ? 0 : 1) + rest.count }

    var isEmpty: Bool { first == nil && rest.isEmpty }

    func contains(_ element: Element) -> Bool {
        first == element || (!rest.isEmpty && rest.contains(element))
    }

    /// Adds `element`; `inserted` is `false` when it was there already.
    @discardableResult
    mutating func insert(_ element: Element) -> (inserted: Bool, memberAfterInsert: Element) {
        if first == element { return (false, element) }
        if first == nil && !rest.contains(element) {
            first = element
            return (true, element)
        }
        return rest.insert(element)
    }

    /// Removes `element`; returns it, or `nil` when it was not there.
    @discardableResult
    mutating func remove(_ element: Element) -> Element? {
        if first == element { return first.take() }
        return rest.remove(element)
    }

    /// The elements as a `Set`.
    var asSet: Set<Element> {
        guard let first else { return rest }
        var all = rest
        all.insert(first)
        return all
    }

    func makeIterator() -> IndexingIterator<[Element]> {
        ((first.map { [$0] } ?? []) + rest).makeIterator()
    }
}

extension SmallSet: Sendable where Element: Sendable {}

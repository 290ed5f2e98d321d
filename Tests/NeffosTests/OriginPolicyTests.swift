import Neffos
import Testing

@Suite("Origin policy")
struct OriginPolicyTests {
    @Test("same origin: the page's host and port are the request's; native clients (no Origin) pass")
    func sameOrigin() {
        let policy = OriginPolicy.sameOrigin
        #expect(policy.allows(origin: nil, host: "chat.example"))
        #expect(policy.allows(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080"))
        #expect(policy.allows(origin: "https://Chat.Example", host: "chat.example"))
        #expect(policy.allows(origin: "https://chat.example", host: "chat.example:443"))
        #expect(policy.allows(origin: "http://[::1]:8080", host: "[::1]:8080"))
        #expect(!policy.allows(origin: "http://127.0.0.1:8081", host: "127.0.0.1:8080"), "another port")
        #expect(!policy.allows(origin: "https://evil.example", host: "chat.example"))
        #expect(!policy.allows(origin: "null", host: "chat.example"), "a sandboxed or file page")
        #expect(!policy.allows(origin: "https://chat.example.evil.example", host: "chat.example"))
        #expect(!policy.allows(origin: "https://chat.example", host: nil))
    }

    @Test("an allow-list adds origins; any allows every one")
    func lists() {
        let policy = OriginPolicy.only(["https://app.example/", "http://localhost:3000"])
        #expect(policy.allows(origin: "https://app.example", host: "api.example"))
        #expect(policy.allows(origin: "http://localhost:3000", host: "127.0.0.1:8080"))
        #expect(!policy.allows(origin: "http://localhost:3001", host: "127.0.0.1:8080"))
        #expect(policy.allows(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080"), "same origin still")
        #expect(OriginPolicy.any.allows(origin: "https://evil.example", host: "chat.example"))
    }
}

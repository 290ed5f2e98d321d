import Neffos
import Testing

@Suite("NeffosError")
struct NeffosErrorTests {
    private func failing(_ error: NeffosError) throws {
        throw error
    }

    @Test("catch NeffosError.timeout matches the kind, whatever the detail")
    func catchPattern() {
        var caught = ""
        do {
            try failing(NeffosError.timeout.with(detail: "ask \"price\" got no reply within 1 s"))
        } catch NeffosError.badRoom {
            caught = "bad room"
        } catch NeffosError.timeout {
            caught = "timeout"
        } catch {
            caught = "other"
        }
        #expect(caught == "timeout")
    }

    @Test("a switch over an error matches NeffosError kinds, and nothing else")
    func switchPattern() {
        func kind(_ error: any Error) -> String {
            switch error {
            case NeffosError.writeClosed: "closed"
            case NeffosError.reconnecting: "reconnecting"
            default: "other"
            }
        }
        #expect(kind(NeffosError.writeClosed.with(detail: "gone")) == "closed")
        #expect(kind(NeffosError.reconnecting) == "reconnecting")
        #expect(kind(CancellationError()) == "other")
    }
}

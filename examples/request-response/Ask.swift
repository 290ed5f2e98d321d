import Foundation
import Logging
import Neffos
import NeffosNIO

// Ask and reply, both ways, with deadlines and errors:
//   1. a client ask answered by a server handler;
//   2. a client ask whose handler throws: the error arrives as the application's own value;
//   3. a client ask nobody answers (the handler returns nil): it ends at its deadline;
//   4. a server-initiated ask (`Server.ask(_:to:timeout:)`) answered by the client;
//   5. a server-initiated ask the client refuses by throwing.
//
//   swift run neffos-example-ask

/// The errors this application sends over the wire. Both sides register them in their
/// `KnownErrors`, so an error frame's text comes back as this value, not as a `RemoteError`.
enum BankError: Error, CustomStringConvertible {
    case insufficientFunds
    case accountLocked

    /// The text that travels (`NeffosError.wireText(of:)` writes the description).
    var description: String {
        switch self {
        case .insufficientFunds: "insufficient funds"
        case .accountLocked: "account locked"
        }
    }
}

@main
struct AskExample {
    static let knownErrors = KnownErrors([BankError.insufficientFunds, BankError.accountLocked])

    /// The server's handlers. The value `answer` handlers return answers the ask; `nil`
    /// answers nothing; a thrown error answers with an error frame carrying its text.
    static var serverNamespaces: Namespaces {
        let balance = 100
        var events = Events()
        events.answer("withdraw") { _, message in  // synchronous: runs on the event loop
            guard let amount = Int(message.bodyString), amount > 0 else { throw NeffosError.invalidPayload }
            guard amount <= balance else { throw BankError.insufficientFunds }
            return "ok, \(balance - amount) left"
        }
        events.answer("audit") { _, _ in  // asynchronous (it awaits): runs in the connection's task
            try await Task.sleep(for: .milliseconds(50))
            return nil  // answers nothing: the asker's deadline ends the ask
        }
        return ["default": events]
    }

    /// The client's handlers: they answer the server's asks the same way.
    static var clientNamespaces: Namespaces {
        var events = Events()
        events.answer("confirm") { _, message in "yes, go ahead with \(message.bodyString)" }
        events.answer("pin") { _, _ in throw BankError.accountLocked }
        return ["default": events]
    }

    static func main() async {
        do {
            try await run()
        } catch {
            fail("unexpected error: \(error)")
        }
    }

    static func run() async throws {
        var configuration = Server.Configuration()
        configuration.logger.logLevel = .warning
        configuration.knownErrors = knownErrors
        let server = try Server(namespaces: serverNamespaces, configuration: configuration)
        let listener = WebSocketListener(server: server, host: "127.0.0.1", port: 0, path: "/ask")
        try await listener.start()
        let url = "ws://127.0.0.1:\(listener.port ?? 0)/ask"
        print("server: listening on \(url)")

        var clientConfiguration = Client.Configuration()
        clientConfiguration.logger.logLevel = .warning
        clientConfiguration.knownErrors = knownErrors
        let client = try await Client.dial(url, namespaces: clientNamespaces, configuration: clientConfiguration)
        let ns = try await client.connect("default")

        // 1. An ask that succeeds.
        let ok = try await ns.ask("withdraw", "30", timeout: .seconds(2))
        print("client: ask withdraw 30 -> \"\(ok.bodyString)\"")
        guard ok.bodyString == "ok, 70 left" else { fail("unexpected reply \"\(ok.bodyString)\"") }

        // 2. The handler throws: the reply is an error frame, thrown here as the registered value.
        do {
            let reply = try await ns.ask("withdraw", "500", timeout: .seconds(2))
            fail("withdraw 500 should have failed, got \"\(reply.bodyString)\"")
        } catch BankError.insufficientFunds {
            print("client: ask withdraw 500 -> threw BankError.insufficientFunds (\"\(BankError.insufficientFunds)\")")
        }

        // 3. Nobody answers: the ask ends at its deadline.
        do {
            let reply = try await ns.ask("audit", timeout: .milliseconds(300))
            fail("audit should have timed out, got \"\(reply.bodyString)\"")
        } catch let error as NeffosError where error == .timeout {
            print("client: ask audit (deadline 300 ms) -> threw NeffosError.timeout")
        }

        // 4. The server asks one connection, by its ID; the client's handler answers.
        let question = Message(namespace: "default", event: "confirm", body: "withdraw 30")
        let confirmation = try await server.ask(question, to: client.id, timeout: .seconds(2))
        print("server: ask confirm -> \"\(confirmation.bodyString)\"")
        guard confirmation.bodyString == "yes, go ahead with withdraw 30" else { fail("unexpected confirmation") }

        // 5. The client's handler throws: the server gets the registered value too.
        do {
            let reply = try await server.ask(Message(namespace: "default", event: "pin", body: "1234"), to: client.id, timeout: .seconds(2))
            fail("pin should have failed, got \"\(reply.bodyString)\"")
        } catch BankError.accountLocked {
            print("server: ask pin -> threw BankError.accountLocked (\"\(BankError.accountLocked)\")")
        }

        await client.close()
        await listener.stop(timeout: .seconds(2))
        await server.shutdown(timeout: .seconds(2))
        print("done: 5 asks behaved as expected")
    }
}

/// Prints `text` to standard error and exits with `code`.
func fail(_ text: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("error: \(text)\n".utf8))
    exit(code)
}

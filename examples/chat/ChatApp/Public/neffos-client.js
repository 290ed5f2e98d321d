// A small neffos client for browsers, written for swift-neffos's examples.
// It speaks the neffos wire protocol (the same frames as neffos.js): the M/A/H handshake,
// seven-field messages with `;` escaping in names, `$` ask tokens, empty replies, error
// frames, server-initiated namespace connects and room joins, and reconnection that
// restores namespaces and rooms. With swift-neffos's history extension (on by default:
// `recovery: true` sends the X-Neffos-Recovery header), it remembers the position of the
// last message it received in each room the server keeps history for, and rejoining after a
// reconnection recovers what it missed, each message once, in order; `onRecovery` says how
// that went per room. A server without the extension sees plain neffos frames.
//
//   const client = await NeffosClient.dial("ws://127.0.0.1:8080/echo", {
//     default: { chat: (ns, msg) => console.log(msg.body) },
//   }, { headers: { "X-Username": "alice" }, onState: (s) => console.log(s) });
//   const ns = await client.connect("default");
//   await ns.joinRoom("lobby");
//   ns.room("lobby").emit("chat", "hello");
//   const reply = await ns.ask("members", "lobby");
//   client.position("default", "lobby");   // "3fa9c2-1:42", or null
"use strict";

(function (global) {
  const ESCAPE = "@%!semicolon@%!";
  const EVENTS = {
    namespaceConnect: "_OnNamespaceConnect", namespaceConnected: "_OnNamespaceConnected",
    namespaceDisconnect: "_OnNamespaceDisconnect", roomJoin: "_OnRoomJoin",
    roomJoined: "_OnRoomJoined", roomLeave: "_OnRoomLeave", roomLeft: "_OnRoomLeft",
    anyEvent: "_OnAnyEvent", nativeMessage: "_OnNativeMessage",
  };

  const escape = (s) => String(s).split(";").join(ESCAPE);
  const unescape = (s) => s.split(ESCAPE).join(";");

  /** Encodes a message into the seven-field frame. */
  function serialize(m) {
    if (m.isEmptyReply) return m.wait + ";;;;;;";
    const isError = m.error != null;
    return [m.wait || "", escape(m.namespace || ""), escape(m.room || ""), escape(m.event || ""),
      isError ? "1" : "0", "0", isError ? String(m.error) : (m.body == null ? "" : String(m.body))].join(";");
  }

  /** Decodes a frame; returns null when it is not a seven-field frame. */
  function deserialize(text) {
    const fields = [];
    let start = 0;
    for (let i = 0; i < 6; i++) {
      const end = text.indexOf(";", start);
      if (end < 0) return null;
      fields.push(text.slice(start, end));
      start = end + 1;
    }
    const rest = text.slice(start);
    const isError = fields[4] === "1";
    return {
      wait: fields[0], namespace: unescape(fields[1]), room: unescape(fields[2]),
      event: unescape(fields[3]), isNoOp: fields[5] === "1",
      error: isError ? rest : null, body: isError ? "" : rest,
    };
  }

  const RECOVERY_HEADER = "X-Neffos-Recovery";
  const roomKey = (namespace, room) => namespace + "\u0000" + room;
  /** "~<status> <count> <epoch>:<offset>": a join reply of the history extension. */
  function parseJoinReply(body) {
    if (typeof body !== "string" || body[0] !== "~") return null;
    const fields = body.slice(1).split(" ");
    if (fields.length !== 3 || !/^(1|0|-)$/.test(fields[0]) || !/^\d+$/.test(fields[1])) return null;
    return { status: fields[0], count: Number(fields[1]), latest: fields[2] };
  }
  /** Whether position a (epoch:offset) is at or after b in the same epoch. */
  function notBefore(a, b) {
    const [ea, oa] = [a.slice(0, a.lastIndexOf(":")), Number(a.slice(a.lastIndexOf(":") + 1))];
    const [eb, ob] = [b.slice(0, b.lastIndexOf(":")), Number(b.slice(b.lastIndexOf(":") + 1))];
    return ea === eb && oa >= ob;
  }

  let tokenCounter = 0;
  const nextToken = () => "$" + Date.now() + "" + (++tokenCounter);

  class NeffosError extends Error {}

  class Room {
    constructor(ns, name) { this.ns = ns; this.name = name; }
    emit(event, body) { return this.ns.client._write({ namespace: this.ns.name, room: this.name, event, body }); }
    leave(timeoutMs) { return this.ns.leaveRoom(this.name, timeoutMs); }
  }

  class NSConn {
    constructor(client, name) { this.client = client; this.name = name; this.rooms = new Map(); }
    emit(event, body) { return this.client._write({ namespace: this.name, event, body }); }
    ask(event, body, timeoutMs) { return this.client._ask({ namespace: this.name, event, body }, timeoutMs); }
    room(name) { return this.rooms.get(name) || null; }
    async joinRoom(name, timeoutMs) {
      return (await this._join(name, timeoutMs, false)).room;
    }
    /** Joins; when `recover`, asks to recover after the room's last position. */
    async _join(name, timeoutMs, recover) {
      if (this.rooms.has(name)) return { room: this.rooms.get(name), recovery: null };
      const message = { namespace: this.name, room: name, event: EVENTS.roomJoin };
      await this.client._fire(this, EVENTS.roomJoin, message);
      const position = recover ? this.client.positions.get(roomKey(this.name, name)) : null;
      const reply = await this.client._ask(position ? { ...message, body: "~" + position } : message, timeoutMs);
      const room = new Room(this, name);
      this.rooms.set(name, room);
      const outcome = parseJoinReply(reply.body);
      let recovery = null;
      if (outcome) {
        const key = roomKey(this.name, name);
        const current = this.client.positions.get(key);
        if (outcome.count === 0 && !(current && notBefore(current, outcome.latest))) this.client.positions.set(key, outcome.latest);
        if (outcome.status !== "-") recovery = { namespace: this.name, room: name, recovered: outcome.status === "1", messages: outcome.count };
      }
      await this.client._fire(this, EVENTS.roomJoined, { ...message, event: EVENTS.roomJoined });
      return { room, recovery };
    }
    async leaveRoom(name, timeoutMs) {
      if (!this.rooms.has(name)) throw new NeffosError("bad room");
      const message = { namespace: this.name, room: name, event: EVENTS.roomLeave };
      await this.client._fire(this, EVENTS.roomLeave, message);
      await this.client._ask(message, timeoutMs);
      this.rooms.delete(name);
      this.client.positions.delete(roomKey(this.name, name));
      await this.client._fire(this, EVENTS.roomLeft, { ...message, event: EVENTS.roomLeft });
    }
    async disconnect(timeoutMs) {
      await this.client._ask({ namespace: this.name, event: EVENTS.namespaceDisconnect }, timeoutMs);
      this.client.namespaces.delete(this.name);
      await this.client._fire(this, EVENTS.namespaceDisconnect, { namespace: this.name, event: EVENTS.namespaceDisconnect });
    }
  }

  class NeffosClient {
    /** Dials `url` and completes the handshake; `handlers` maps namespace → event → function. */
    static async dial(url, handlers, options = {}) {
      const client = new NeffosClient(url, handlers, options);
      await client._open(0);
      return client;
    }

    constructor(url, handlers, options) {
      this.url = url;
      this.handlers = handlers || {};
      this.options = Object.assign({ askTimeoutMs: 10000, reconnect: true, minBackoffMs: 250, maxBackoffMs: 8000, recovery: true }, options);
      this.namespaces = new Map();
      /** The last position received per room (namespace + NUL + room → "epoch:offset"). */
      this.positions = new Map();
      this.pending = new Map();
      this.id = null;
      this.closed = false;
    }

    _state(state, detail) { if (this.options.onState) this.options.onState(state, detail); }

    _urlWithHeaders(tries) {
      const headers = Object.assign({}, this.options.headers || {});
      if (tries > 0) headers["X-Websocket-Reconnect"] = String(tries);
      if (this.options.recovery) headers[RECOVERY_HEADER] = "1";
      const url = new URL(this.url);
      for (const [name, value] of Object.entries(headers)) url.searchParams.set("X-Websocket-Header-" + name, value);
      return url.toString();
    }

    _open(tries) {
      this._state("connecting", { tries });
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(this._urlWithHeaders(tries));
        ws.binaryType = "arraybuffer";
        let accepted = false;
        ws.onopen = () => ws.send("M");
        ws.onmessage = (event) => {
          const text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data);
          if (!accepted) {
            if (text[0] === "A") {
              accepted = true;
              this.ws = ws;
              this.id = text.slice(1);
              this._state(tries > 0 ? "reconnected" : "connected", { id: this.id });
              resolve(this);
            } else if (text[0] === "H") {
              reject(new NeffosError(text.slice(1)));
              ws.close();
            }
            return;
          }
          this._receive(text);
        };
        ws.onerror = () => { if (!accepted) reject(new NeffosError("could not connect to " + this.url)); };
        ws.onclose = (event) => {
          if (!accepted) return;
          this._lost(event);
        };
      });
    }

    _lost(event) {
      for (const [, waiter] of this.pending) waiter.reject(new NeffosError("[-1] write closed"));
      this.pending.clear();
      this.ws = null;
      this._state("disconnected", { code: event.code, reason: event.reason });
      if (this.closed || !this.options.reconnect) return;
      this._reconnect(1);
    }

    async _reconnect(tries) {
      const base = Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** (tries - 1));
      await new Promise((r) => setTimeout(r, base / 2 + Math.random() * base / 2));
      if (this.closed) return;
      try {
        await this._open(tries);
      } catch (e) {
        return this._reconnect(tries + 1);
      }
      // Restore what we had: namespaces, then their rooms.
      const previous = [...this.namespaces.values()];
      this.namespaces.clear();
      for (const old of previous) {
        try {
          const ns = await this.connect(old.name);
          for (const room of old.rooms.keys()) {
            const { recovery } = await ns._join(room, undefined, true);
            if (recovery && this.options.onRecovery) this.options.onRecovery(recovery);
          }
        } catch (e) { this._state("restore-failed", { namespace: old.name, error: String(e) }); }
      }
      this._state("restored", { id: this.id });
    }

    /** Connects to `namespace` (the server may refuse). */
    async connect(namespace, timeoutMs) {
      if (this.namespaces.has(namespace)) return this.namespaces.get(namespace);
      const ns = new NSConn(this, namespace);
      const message = { namespace, event: EVENTS.namespaceConnect };
      await this._fire(ns, EVENTS.namespaceConnect, message);
      await this._ask(message, timeoutMs);
      this.namespaces.set(namespace, ns);
      await this._fire(ns, EVENTS.namespaceConnected, { ...message, event: EVENTS.namespaceConnected });
      return ns;
    }

    /** The position ("epoch:offset") of the last message received in `room`, or null. */
    position(namespace, room) { return this.positions.get(roomKey(namespace, room)) || null; }

    /** Closes the connection for good (no reconnection). */
    close() { this.closed = true; if (this.ws) this.ws.close(1000); }

    _write(message) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new NeffosError("[-1] write closed");
      this.ws.send(serialize(message));
    }

    _ask(message, timeoutMs) {
      const wait = nextToken();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { this.pending.delete(wait); reject(new NeffosError("timed out")); },
          timeoutMs || this.options.askTimeoutMs);
        this.pending.set(wait, {
          resolve: (m) => { clearTimeout(timer); resolve(m); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        });
        try { this._write({ ...message, wait }); } catch (e) { this.pending.delete(wait); clearTimeout(timer); reject(e); }
      });
    }

    _handler(namespace, event) {
      const events = this.handlers[namespace];
      if (!events) return null;
      return events[event] || events[EVENTS.anyEvent] || null;
    }

    async _fire(ns, event, message) {
      const handler = this._handler(ns.name, event);
      if (handler) return await handler(ns, { ...message, event });
      return undefined;
    }

    _reply(request, body, error) {
      const reply = { wait: request.wait, namespace: request.namespace, room: request.room, event: request.event };
      if (error != null) reply.error = error; else reply.body = body;
      try { this._write(reply); } catch (e) { /* closed meanwhile */ }
    }

    async _receive(text) {
      const message = deserialize(text);
      if (!message) {
        const native = this.namespaces.get("");
        if (native) await this._fire(native, EVENTS.nativeMessage, { namespace: "", event: EVENTS.nativeMessage, body: text });
        return;
      }
      if (message.wait[0] === "~") {
        // A positioned broadcast (the history extension): remember where the room is.
        this.positions.set(roomKey(message.namespace, message.room), message.wait.slice(1));
        message.wait = "";
      }
      const wait = message.wait;
      if (wait && (wait[0] === "$" || wait[0] === "#")) {
        const waiter = this.pending.get(wait);
        if (waiter) {
          this.pending.delete(wait);
          if (message.error != null) waiter.reject(new NeffosError(message.error)); else waiter.resolve(message);
        }
        return;  // A late reply is dropped.
      }
      const empty = () => { if (wait) this.ws.send(wait + ";;;;;;"); };
      switch (message.event) {
        case EVENTS.namespaceConnect: {
          if (!this.namespaces.has(message.namespace) && this.handlers[message.namespace]) {
            const ns = new NSConn(this, message.namespace);
            this.namespaces.set(message.namespace, ns);
            empty();
            await this._fire(ns, EVENTS.namespaceConnected, message);
          } else if (!this.handlers[message.namespace]) {
            this._reply(message, null, "bad namespace");
          } else empty();
          return;
        }
        case EVENTS.namespaceDisconnect: {
          const ns = this.namespaces.get(message.namespace);
          this.namespaces.delete(message.namespace);
          empty();
          if (ns) await this._fire(ns, EVENTS.namespaceDisconnect, message);
          return;
        }
        case EVENTS.roomJoin: {
          const ns = this.namespaces.get(message.namespace);
          if (!ns) return this._reply(message, null, "bad namespace");
          if (!ns.rooms.has(message.room)) ns.rooms.set(message.room, new Room(ns, message.room));
          empty();
          await this._fire(ns, EVENTS.roomJoined, message);
          return;
        }
        case EVENTS.roomLeave: {
          const ns = this.namespaces.get(message.namespace);
          if (ns) ns.rooms.delete(message.room);
          empty();
          if (ns) await this._fire(ns, EVENTS.roomLeft, message);
          return;
        }
      }
      const ns = this.namespaces.get(message.namespace);
      if (!ns) return;
      try {
        const result = await this._fire(ns, message.event, message);
        if (wait && result !== undefined && result !== null) this._reply(message, String(result));
      } catch (e) {
        this._reply(message, null, e && e.message ? e.message : String(e));
      }
    }
  }

  global.NeffosClient = NeffosClient;
  global.NeffosError = NeffosError;
  global.NeffosEvents = EVENTS;
  global.neffosWire = { serialize, deserialize };
})(typeof window !== "undefined" ? window : globalThis);

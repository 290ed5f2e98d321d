// A small WebSocket client for Node (RFC 6455, text frames, ping/pong, close), with the
// browser's interface as far as neffos-client.js uses it, so that the client's tests run on
// any Node (Debian 12's Node 18 has no WebSocket).
"use strict";
const net = require("node:net");
const crypto = require("node:crypto");

class MiniWebSocket {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;

  constructor(url) {
    const target = new URL(url);
    this.readyState = MiniWebSocket.CONNECTING;
    this.binaryType = "arraybuffer";
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this._buffer = Buffer.alloc(0);
    this._upgraded = false;
    this._fragments = [];
    const key = crypto.randomBytes(16).toString("base64");
    this._expectedAccept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    this._socket = net.connect(Number(target.port || 80), target.hostname, () => {
      this._socket.write(
        `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    this._socket.on("data", (chunk) => this._data(chunk));
    this._socket.on("error", () => { if (this.onerror) this.onerror(new Error("socket error")); });
    this._socket.on("close", () => this._closed(1006, ""));
  }

  send(text) {
    if (this.readyState !== MiniWebSocket.OPEN) throw new Error("not open");
    this._frame(0x1, Buffer.from(String(text), "utf8"));
  }

  close(code = 1000) {
    if (this.readyState >= MiniWebSocket.CLOSING) return;
    this.readyState = MiniWebSocket.CLOSING;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    this._frame(0x8, payload);
    setTimeout(() => this._socket.destroy(), 1000).unref();
  }

  _frame(opcode, payload) {
    const mask = crypto.randomBytes(4);
    let header;
    if (payload.length < 126) {
      header = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
    } else if (payload.length < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode; header[1] = 0x80 | 126; header.writeUInt16BE(payload.length, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode; header[1] = 0x80 | 127; header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    const masked = Buffer.alloc(payload.length);
    for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ mask[i % 4];
    this._socket.write(Buffer.concat([header, mask, masked]));
  }

  _data(chunk) {
    this._buffer = Buffer.concat([this._buffer, chunk]);
    if (!this._upgraded) {
      const end = this._buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this._buffer.subarray(0, end).toString("latin1");
      this._buffer = this._buffer.subarray(end + 4);
      if (!/^HTTP\/1\.1 101/.test(head) || !head.includes(this._expectedAccept)) {
        if (this.onerror) this.onerror(new Error("upgrade refused: " + head.split("\r\n")[0]));
        this._socket.destroy();
        return;
      }
      this._upgraded = true;
      this.readyState = MiniWebSocket.OPEN;
      if (this.onopen) this.onopen();
    }
    while (this._buffer.length >= 2) {
      const fin = (this._buffer[0] & 0x80) !== 0;
      const opcode = this._buffer[0] & 0x0f;
      let length = this._buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) { if (this._buffer.length < 4) return; length = this._buffer.readUInt16BE(2); offset = 4; }
      else if (length === 127) { if (this._buffer.length < 10) return; length = Number(this._buffer.readBigUInt64BE(2)); offset = 10; }
      if (this._buffer.length < offset + length) return;
      const payload = this._buffer.subarray(offset, offset + length);
      this._buffer = this._buffer.subarray(offset + length);
      if (opcode === 0x9) { this._frame(0xA, payload); continue; }
      if (opcode === 0xA) continue;
      if (opcode === 0x8) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        if (this.readyState === MiniWebSocket.OPEN) { this.readyState = MiniWebSocket.CLOSING; this._frame(0x8, payload.subarray(0, 2)); }
        this._closeCode = code;
        this._closeReason = payload.subarray(2).toString("utf8");
        this._socket.end();
        continue;
      }
      this._fragments.push(Buffer.from(payload));
      if (!fin) continue;
      const whole = Buffer.concat(this._fragments);
      this._fragments = [];
      if (this.onmessage) this.onmessage({ data: whole.toString("utf8") });
    }
  }

  _closed(code, reason) {
    if (this.readyState === MiniWebSocket.CLOSED) return;
    const wasUpgraded = this._upgraded;
    this.readyState = MiniWebSocket.CLOSED;
    if (!wasUpgraded && this.onerror) this.onerror(new Error("closed before the upgrade"));
    if (this.onclose) this.onclose({ code: this._closeCode || code, reason: this._closeReason || reason });
  }
}

module.exports = { MiniWebSocket };

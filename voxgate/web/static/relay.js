// One relay-protocol session over a WebSocket (docs/protocols/relay.md): numbered JSON events
// both ways, PCM16 audio as binary frames. Knows the wire format, nothing about the page.

/** ws:// or wss:// to match the page, relative to the page's own path (works behind a proxy). */
export function relayUrl(location = window.location) {
  const url = new URL("v1/relay", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url.href;
}

/** Uplink frames are dropped (and counted) while this much is still unsent: on a stalled link,
 * old audio is worth less than the memory it takes. */
const MAX_BUFFERED_BYTES = 256 * 1024;

export class RelaySession {
  /**
   * @param {string} url
   * @param {object} handlers onOpen(), onEvent(name, payload), onAudio(header, ArrayBuffer),
   *   onClose({code, reason, ready})
   */
  constructor(url, handlers) {
    this.handlers = handlers;
    this.seq = 0; // our last seq; the server checks that each is the previous plus one
    this.serverSeq = 0;
    this.ready = false;
    this.fatal = false; // the server sent a fatal error: it explains the close that follows
    this.serverEnded = false; // the server sent session.end (it is shutting down)
    this.droppedFrames = 0;
    this.audioHeader = null; // a tts.audio header waits for the binary frame that follows it
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => handlers.onOpen?.();
    this.ws.onmessage = (message) => this.#receive(message.data);
    this.ws.onclose = (event) =>
      handlers.onClose?.({ code: event.code, reason: event.reason, ready: this.ready });
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(event, payload = undefined) {
    if (!this.open) return false;
    this.seq += 1;
    const message = payload === undefined ? { event, seq: this.seq } : { event, seq: this.seq, payload };
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** @param {Int16Array} pcm */
  sendAudio(pcm) {
    if (!this.open || !this.ready) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.droppedFrames += 1;
      return false;
    }
    this.ws.send(pcm.buffer);
    return true;
  }

  /** Ends the session politely; the server answers session.end and closes. */
  end() {
    if (!this.send("session.end")) this.ws.close();
  }

  #receive(data) {
    if (typeof data !== "string") {
      const header = this.audioHeader;
      this.audioHeader = null;
      if (header) this.handlers.onAudio?.(header, data);
      return;
    }
    const message = JSON.parse(data);
    if (message.seq !== this.serverSeq + 1) {
      console.warn(`relay: server seq ${message.seq} after ${this.serverSeq}: a message was lost`);
    }
    this.serverSeq = message.seq;
    if (message.event === "session.ready") this.ready = true;
    if (message.event === "tts.audio") {
      this.audioHeader = message.payload;
      return;
    }
    this.handlers.onEvent?.(message.event, message.payload ?? {});
  }
}

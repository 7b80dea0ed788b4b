// The microphone: getUserMedia → lowpass → the PCM16 16 kHz worklet (mic-worklet.js).

export const UPLINK_RATE_HZ = 16000;

/** A message for people, for the ways opening the microphone fails. */
export function micErrorMessage(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow it in the browser's site settings and reconnect, or type below.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. You can still type below.";
    case "NotReadableError":
      return "The microphone is in use by another application. You can still type below.";
    case "InsecureContextError":
      return "The microphone needs HTTPS (or localhost). You can still type below.";
    default:
      return `The microphone could not be opened (${error && error.message}). You can still type below.`;
  }
}

export class Microphone {
  /**
   * @param {AudioContext} context
   * @param {(pcm: Int16Array) => void} onFrame called with each 20 ms frame at 16 kHz
   * @param {{echoCancellation: boolean}} options
   */
  static async open(context, onFrame, { echoCancellation = false } = {}) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      // Browsers hide mediaDevices on plain http:// other than localhost.
      const error = new Error("insecure context");
      error.name = "InsecureContextError";
      throw error;
    }
    // The processing browsers apply to calls (echo cancellation, noise suppression, automatic
    // gain) smears speech and fools the server's VAD; off unless the user asks for it because
    // the reply plays from speakers (then the reply's echo would interrupt itself).
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation,
        noiseSuppression: false,
        autoGainControl: false,
      },
    });
    await context.audioWorklet.addModule(new URL("./mic-worklet.js", import.meta.url));
    return new Microphone(context, stream, onFrame);
  }

  constructor(context, stream, onFrame) {
    this.stream = stream;
    this.source = context.createMediaStreamSource(stream);
    // Below the 8 kHz Nyquist limit of the uplink, so the worklet's rate drop does not alias.
    this.lowpass = new BiquadFilterNode(context, { type: "lowpass", frequency: 7000, Q: 0.7 });
    this.node = new AudioWorkletNode(context, "pcm-uplink", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
    });
    this.level = 0; // peak of the last frame, 0..1, for the meter
    this.framesCaptured = 0;
    this.node.port.onmessage = ({ data }) => {
      const pcm = new Int16Array(data);
      let peak = 0;
      for (const sample of pcm) peak = Math.max(peak, Math.abs(sample));
      this.level = peak / 32768;
      this.framesCaptured += 1;
      onFrame(pcm);
    };
    this.source.connect(this.lowpass).connect(this.node);
    // The worklet writes nothing to its output; connecting it to the destination is what keeps
    // the graph pulling it (a node nobody pulls may not be processed).
    this.node.connect(context.destination);
  }

  close() {
    for (const track of this.stream.getTracks()) track.stop();
    this.source.disconnect();
    this.node.disconnect();
    this.node.port.onmessage = null;
  }
}

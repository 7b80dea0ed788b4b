// Runs on the audio thread. Turns the microphone's float samples, at whatever rate the
// AudioContext runs (44.1 kHz in headless Chromium, 48 kHz on most hardware), into 20 ms frames
// of PCM16 at 16 kHz: what the relay uplink expects. Anti-aliasing happens before this node (a
// lowpass BiquadFilterNode in mic.js), so plain linear interpolation is enough here.

const TARGET_RATE_HZ = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz, within the protocol's recommended 20–40 ms

class PcmUplinkProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the AudioWorkletGlobalScope's: the context's actual rate.
    this.step = sampleRate / TARGET_RATE_HZ; // input samples per output sample
    // Where the next output sample falls, in input samples from the start of the current block.
    // -1 ≤ position < 0 means between the previous block's last sample and this block's first.
    this.position = 0;
    this.previous = 0; // the previous block's last sample
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input || input.length === 0) return true; // the track is not (yet) connected
    let position = this.position;
    while (position < input.length - 1) {
      const index = Math.floor(position);
      const fraction = position - index;
      const a = index < 0 ? this.previous : input[index];
      const b = input[index + 1];
      this.#push(a + (b - a) * fraction);
      position += this.step;
    }
    this.position = position - input.length;
    this.previous = input[input.length - 1];
    return true; // keep running for as long as the node exists
  }

  #push(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === FRAME_SAMPLES) {
      // Transfer, not copy: the frame is the main thread's from now on.
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(FRAME_SAMPLES);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm-uplink", PcmUplinkProcessor);

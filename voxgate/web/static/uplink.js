// When the page sent each piece of the uplink audio, so an instant on the session's audio clock
// (speech.stopped's at_ms: milliseconds of uplink audio since the session started) can be turned
// into a time on this page's clock. That is what makes the "network" bar an honest measurement.

const RATE_HZ = 16000;
const KEEP_FRAMES = 3000; // one minute of 20 ms frames

export class UplinkClock {
  constructor() {
    this.samplesSent = 0;
    this.marks = []; // [{startSample, endSample, at}] one per frame sent, oldest first
  }

  /** A frame of ``samples`` samples has just been sent. */
  sent(samples, at = performance.now()) {
    this.samplesSent += samples;
    this.marks.push({ startSample: this.samplesSent - samples, endSample: this.samplesSent, at });
    if (this.marks.length > KEEP_FRAMES) this.marks.splice(0, this.marks.length - KEEP_FRAMES);
  }

  /** When the frame holding the audio up to ``atMs`` was sent, or null if it is not known. */
  sentAt(atMs) {
    const sample = Math.round((atMs * RATE_HZ) / 1000);
    if (this.marks.length === 0 || sample < this.marks[0].startSample) return null;
    for (const mark of this.marks) if (mark.endSample >= sample) return mark.at;
    return null;
  }
}

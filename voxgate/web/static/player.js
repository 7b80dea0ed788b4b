// Plays reply audio as it arrives. Each chunk becomes an AudioBufferSourceNode started exactly
// where the previous one ends on the context's clock, so chunks and sentences join without gaps.
// Keeps, per turn, what was scheduled when, which is what "how much has been heard" needs.

/** A reply's first chunk starts this far after "now": room for the main thread's jitter. */
const LEAD_S = 0.05;

export class Player {
  /** @param {AudioContext} context */
  constructor(context, { onActivity = () => {}, onPlayedOut = () => {} } = {}) {
    this.context = context;
    this.onActivity = onActivity; // (playing: boolean) when playback starts or stops
    this.onPlayedOut = onPlayedOut; // (turnId, playedMs) once a finished reply has fully played
    // Everything goes through one analyser: the level meter, and what tests read.
    this.analyser = new AnalyserNode(context, { fftSize: 1024 });
    this.analyser.connect(context.destination);
    this.samples = new Float32Array(this.analyser.fftSize);
    this.nextStart = 0;
    /** turnId → {chunks: [{source, start, duration, stoppedAt, ended}], done, reported} */
    this.turns = new Map();
    this.stats = { samplesScheduled: 0, sourcesStarted: 0, sourcesStopped: 0, sourcesEnded: 0, peak: 0 };
  }

  /** Queues one chunk of PCM16 mono (an ArrayBuffer) of reply ``turnId``. */
  enqueue(turnId, pcmBytes, sampleRateHz) {
    const pcm = new Int16Array(pcmBytes, 0, Math.floor(pcmBytes.byteLength / 2));
    if (pcm.length === 0) return;
    const buffer = this.context.createBuffer(1, pcm.length, sampleRateHz);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = new AudioBufferSourceNode(this.context, { buffer });
    source.connect(this.analyser);
    // Back to back with what is queued; after an underrun (or for a new reply) from now.
    const start = Math.max(this.nextStart, this.context.currentTime + LEAD_S);
    const wasPlaying = this.playing;
    source.start(start);
    this.nextStart = start + buffer.duration;
    const chunk = { source, start, duration: buffer.duration, stoppedAt: null, ended: false };
    this.#turn(turnId).chunks.push(chunk);
    this.stats.samplesScheduled += pcm.length;
    this.stats.sourcesStarted += 1;
    source.onended = () => {
      chunk.ended = true;
      this.stats.sourcesEnded += 1;
      this.#settle(turnId);
    };
    if (!wasPlaying) this.onActivity(true);
  }

  /** The server sent the last audio of ``turnId`` (turn.done): once it has played, say so. */
  markDone(turnId) {
    this.#turn(turnId).done = true;
    this.#settle(turnId);
  }

  /** Drops the audio of ``turnId`` at once: what is playing stops, what is queued never starts. */
  stopTurn(turnId) {
    const turn = this.turns.get(turnId);
    if (!turn) return;
    turn.reported = true; // an interrupted reply needs no final position: the server cut it
    const now = this.context.currentTime;
    for (const chunk of turn.chunks) {
      if (chunk.ended || chunk.stoppedAt !== null) continue;
      chunk.stoppedAt = now;
      chunk.source.stop();
      this.stats.sourcesStopped += 1;
    }
    this.nextStart = Math.min(this.nextStart, now);
    this.onActivity(this.playing);
  }

  /** Milliseconds of ``turnId``'s audio played so far. */
  playedMs(turnId) {
    const turn = this.turns.get(turnId);
    if (!turn) return 0;
    const now = this.context.currentTime;
    let seconds = 0;
    for (const chunk of turn.chunks) {
      const until = chunk.stoppedAt ?? now;
      seconds += Math.min(Math.max(until - chunk.start, 0), chunk.duration);
    }
    return Math.round(seconds * 1000);
  }

  /** Turns with audio still to play: the ones whose position is worth reporting. */
  playingTurns() {
    return [...this.turns.entries()]
      .filter(([, turn]) => turn.chunks.some((chunk) => !chunk.ended && chunk.stoppedAt === null))
      .map(([turnId]) => turnId);
  }

  get playing() {
    return this.playingTurns().length > 0;
  }

  /** Peak of what the speakers get right now, 0..1. */
  level() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let peak = 0;
    for (const sample of this.samples) peak = Math.max(peak, Math.abs(sample));
    this.stats.peak = Math.max(this.stats.peak, peak);
    return peak;
  }

  #turn(turnId) {
    if (!this.turns.has(turnId)) {
      // Forget old replies that have fully played: a long conversation should not keep them all.
      for (const [id, turn] of this.turns) {
        if (this.turns.size < 8) break;
        if (turn.reported && turn.chunks.every((chunk) => chunk.ended)) this.turns.delete(id);
      }
      this.turns.set(turnId, { chunks: [], done: false, reported: false });
    }
    return this.turns.get(turnId);
  }

  #settle(turnId) {
    const turn = this.turns.get(turnId);
    const finished = turn.chunks.every((chunk) => chunk.ended || chunk.stoppedAt !== null);
    if (turn.done && finished && !turn.reported && turn.chunks.length > 0) {
      turn.reported = true;
      this.onPlayedOut(turnId, this.playedMs(turnId));
    }
    if (!this.playing) this.onActivity(false);
  }
}

// A finished turn's timings as a timeline: time runs left to right from the end of the user's
// turn (0) to the first reply audio, on one scale for every row, and each stage's bar sits where
// it ran. So the bars add up to the total bar, gaps show as space, and a speculative reply's
// transcription shows as overlapping the end-of-turn wait. The server reports durations only;
// the chain STT → LLM → TTS is laid end to end, from the end of the wait (or, when speculative,
// back from the first audio).

const CHAIN = [
  ["stt_ms", "speech to text"],
  ["llm_first_token_ms", "LLM first token"],
  ["first_sentence_ms", "LLM first sentence"],
  ["tts_first_audio_ms", "TTS first audio"],
];

const num = (value) => (typeof value === "number" ? value : null);

/** [key, label, start_ms, duration_ms, isTotal] of each row, in time order. */
export function timeline(t) {
  const spoken = num(t.speech_end_to_first_audio_ms);
  const total = spoken ?? num(t.turn_end_to_first_audio_ms);
  const wait = spoken !== null ? num(t.end_of_turn_wait_ms) : null;
  const stt = num(t.stt_ms) ?? 0;
  const sentence = num(t.first_sentence_ms) ?? num(t.llm_first_token_ms) ?? 0;
  const tts = num(t.tts_first_audio_ms) ?? 0;
  let start = wait ?? 0;
  if (t.speculative && total !== null) start = Math.max(0, total - (stt + sentence + tts));
  const rows = [];
  if (wait !== null) rows.push(["end_of_turn_wait_ms", "end-of-turn wait", 0, wait, false]);
  const llmStart = start + stt;
  for (const [key, label] of CHAIN) {
    const ms = num(t[key]);
    if (ms === null) continue;
    const at = key === "stt_ms" ? start : key === "tts_first_audio_ms" ? llmStart + sentence : llmStart;
    rows.push([key, label, at, ms, false]);
  }
  if (total !== null) {
    const network = num(t.network_ms);
    if (network !== null) rows.push(["network_ms", "network + buffering", total, network, false]);
    const key = spoken !== null ? "speech_end_to_first_audio_ms" : "turn_end_to_first_audio_ms";
    const label = spoken !== null ? "you stopped → reply audio" : "sent → reply audio";
    rows.push([key, label, 0, total + (network ?? 0), true]);
  }
  return rows;
}

/**
 * @param {HTMLElement} container
 * @param {object} timings turn.done's timings, plus network_ms when the page measured it
 */
export function renderTimings(container, timings) {
  const rows = timeline(timings);
  if (rows.length === 0) return;
  const scale = Math.max(1, ...rows.map(([, , at, ms]) => at + ms));
  container.replaceChildren();
  for (const [key, label, at, ms, isTotal] of rows) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.stage = key;
    row.dataset.ms = String(ms);
    row.dataset.startMs = String(Math.round(at * 10) / 10);
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "bar-track";
    const bar = document.createElement("span");
    bar.className = isTotal ? "bar total" : "bar";
    bar.style.marginLeft = `${(at / scale) * 100}%`;
    bar.style.width = `${Math.max(0.5, (ms / scale) * 100)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${Math.round(ms)} ms`;
    row.append(name, track, value);
    container.append(row);
  }
  const note = document.createElement("p");
  note.className = "bar-note";
  note.textContent = timings.speculative
    ? "a timeline from the end of your turn; the reply started speculatively, during the end-of-turn wait"
    : "a timeline from the end of your turn to the first reply audio";
  container.append(note);
  container.hidden = false;
}

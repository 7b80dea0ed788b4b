// A finished turn's timings as a small horizontal bar chart: one bar per stage, all on the
// scale of the longest. Stages overlap (a speculative reply transcribes during the end-of-turn
// wait), so they are drawn side by side rather than stacked end to end.

const STAGES = [
  ["end_of_turn_wait_ms", "end-of-turn wait"],
  ["stt_ms", "speech to text"],
  ["llm_first_token_ms", "LLM first token"],
  ["first_sentence_ms", "LLM first sentence"],
  ["tts_first_audio_ms", "TTS first audio"],
  ["network_ms", "network + buffering"],
  ["speech_end_to_first_audio_ms", "you stopped → reply audio"],
];

/**
 * @param {HTMLElement} container
 * @param {object} timings turn.done's timings, plus network_ms when the page measured it
 */
export function renderTimings(container, timings) {
  const rows = STAGES.filter(([key]) => typeof timings[key] === "number");
  if (rows.length === 0) return;
  const longest = Math.max(1, ...rows.map(([key]) => timings[key]));
  container.replaceChildren();
  for (const [key, label] of rows) {
    const ms = timings[key];
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.stage = key;
    row.dataset.ms = String(ms);
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "bar-track";
    const bar = document.createElement("span");
    bar.className = `bar ${key === "speech_end_to_first_audio_ms" ? "total" : ""}`;
    bar.style.width = `${Math.max(0.5, (ms / longest) * 100)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${Math.round(ms)} ms`;
    row.append(name, track, value);
    container.append(row);
  }
  if (timings.speculative) {
    const note = document.createElement("p");
    note.className = "bar-note";
    note.textContent = "started speculatively, during the end-of-turn wait";
    container.append(note);
  }
  container.hidden = false;
}

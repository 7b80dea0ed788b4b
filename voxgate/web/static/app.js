// The "talk to voxgate" page: wires the microphone, the relay session, the player and the UI.
// Protocol: docs/protocols/relay.md. Everything the page does is driven by relay events; the
// status shown is derived from a few flags (see refreshStatus) rather than set ad hoc.

import { forgetToken, saveToken, takeToken } from "./auth.js";
import { chooseCharacter, chosenCharacter, fetchCharacters } from "./characters.js";
import { Microphone, micErrorMessage, UPLINK_RATE_HZ } from "./mic.js";
import { Player } from "./player.js";
import { RelaySession, relayUrl } from "./relay.js";
import { showInterrupted } from "./reply-text.js";
import { renderTimings } from "./timings.js";
import { UplinkClock } from "./uplink.js";

const OUTPUT_RATE_HZ = 24000;
const POSITION_REPORT_MS = 250; // playback.position while a reply plays: exact heard_text
const METER_MS = 50;
const LOADING_RETRY_MS = 2000; // while the server loads its models

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  statusText: $("status-text"),
  start: $("start"),
  stop: $("stop"),
  reconnect: $("reconnect"),
  picker: $("character-picker"),
  character: $("character"),
  characterDescription: $("character-description"),
  echoCancellation: $("echo-cancellation"),
  handsFree: $("hands-free"),
  micLevel: $("mic-level"),
  outLevel: $("out-level"),
  error: $("error"),
  errorText: $("error-text"),
  tokenForm: $("token-form"),
  token: $("token"),
  turns: $("turns"),
  textForm: $("text-form"),
  text: $("text"),
  send: $("send"),
  template: $("turn-template"),
  startHint: $("start-hint"),
};

const page = {
  token: takeToken(),
  context: null, // one AudioContext for capture and playback, made on the first click
  player: null,
  mic: null,
  micOpening: false,
  relay: null,
  connecting: false,
  disconnected: false,
  userSpeaking: false,
  // Hands-free (wake_word listening): null when off, else "waiting" for the word, "heard" it
  // (until speech starts), or "listening" (a conversation, until the server says wake.waiting).
  wake: null,
  wakeWord: "",
  loadingModels: false, // the server said it is still loading its models: retrying
  awaitingReply: false, // between the end of the user's turn and the end of the reply
  currentTurn: null,
  cards: new Map(), // turn_id → the turn's <li>
  speakingCard: null, // the words of the user's turn in progress (partial transcripts)
  // Turns the user has ended whose turn_id the server has not named yet (no reply.started):
  // oldest first, as the server answers them.
  waiting: [],
  stoppedTurns: new Set(), // replies the user stopped: their late audio is dropped
  uplink: new UplinkClock(),
  speechEndSentAt: null, // when the page sent the last voiced audio of the turn in progress
  turnSpeechEnd: new Map(), // turn_id → that time, for the turn's network measurement
  firstAudioAt: new Map(), // turn_id → when the turn's first audio arrived
  events: [], // names of the events received, newest last (for debugging and tests)
  audioReceivedMs: 0, // reply audio received, by the tts.audio headers' duration_ms
};

// Tests and curious people read the page's state here (it holds no secret: not the token).
window.voxgate = {
  get status() {
    return ui.status.dataset.state;
  },
  get player() {
    return page.player && { stats: { ...page.player.stats }, playing: page.player.playing };
  },
  get mic() {
    return page.mic && { framesCaptured: page.mic.framesCaptured };
  },
  get events() {
    return [...page.events];
  },
  get wake() {
    return page.wake;
  },
  get audioReceivedMs() {
    return page.audioReceivedMs;
  },
  playedMs: (turnId) => (page.player ? page.player.playedMs(turnId) : 0),
  outputLevel: () => (page.player ? page.player.level() : 0),
};

// ---------------------------------------------------------------------------------------------
// Status and errors

function refreshStatus() {
  let state = "idle";
  let text = "not connected";
  if (page.loadingModels) [state, text] = ["loading", "loading models…"];
  else if (page.connecting) [state, text] = ["connecting", "connecting…"];
  else if (page.disconnected) [state, text] = ["disconnected", "disconnected"];
  else if (page.relay && page.relay.ready) {
    const word = `“${page.wakeWord}”`;
    if (page.player && page.player.playing) [state, text] = ["speaking", "speaking"];
    else if (page.wake === "waiting") [state, text] = ["waiting", `waiting for ${word} — nothing is kept until then`];
    else if (page.wake === "heard" && !page.userSpeaking) [state, text] = ["heard", `heard ${word} — listening`];
    else if (page.awaitingReply) [state, text] = ["thinking", "thinking…"];
    else if (page.userSpeaking) [state, text] = ["listening", "listening — hearing you"];
    else if (page.mic) [state, text] = ["listening", "listening"];
    else [state, text] = ["listening", "ready — type below"];
  }
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  const live = Boolean(page.relay && page.relay.ready);
  ui.text.disabled = !live;
  ui.send.disabled = !live;
  // Disabled controls say why, and what to do.
  ui.text.placeholder = live ? "Type instead of talking…" : "Press “Start talking” first, then type here";
  ui.send.title = live ? "Send the text as your turn" : "Press “Start talking” first";
  ui.stop.disabled = !(live && (page.awaitingReply || (page.player && page.player.playing)));
  ui.start.hidden = live || page.connecting || page.disconnected;
  ui.startHint.hidden = live || page.connecting || page.disconnected;
  ui.reconnect.hidden = !page.disconnected || page.loadingModels;
}

function showError(message, code = "error") {
  ui.errorText.textContent = message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.dataset.code = "";
}

// ---------------------------------------------------------------------------------------------
// Connecting

async function start() {
  if (!page.token) {
    ui.tokenForm.hidden = false;
    ui.token.focus();
    return;
  }
  // Made inside the click: browsers only let a context started by a user gesture play sound.
  if (!page.context) {
    page.context = new AudioContext();
    page.player = new Player(page.context, {
      onActivity: refreshStatus,
      onPlayedOut: (turnId, playedMs) => reportPosition(turnId, playedMs),
    });
  }
  await page.context.resume();
  connect();
}

function connect() {
  if (!page.loadingModels) clearError(); // that note stays until the server is ready
  ui.tokenForm.hidden = true;
  page.connecting = true;
  page.disconnected = false;
  refreshStatus();
  const relay = new RelaySession(relayUrl(), {
    onOpen: () => relay.send("session.start", sessionStart()),
    onEvent: (name, payload) => onEvent(relay, name, payload),
    onAudio: (header, bytes) => onAudio(header, bytes),
    onClose: (close) => onClose(relay, close),
  });
  page.relay = relay;
}

function sessionStart() {
  const payload = {
    token: page.token,
    input: { audio_format: "pcm16", sample_rate_hz: UPLINK_RATE_HZ, channels: 1 },
    output: { audio_format: "pcm16", sample_rate_hz: OUTPUT_RATE_HZ, channels: 1 },
  };
  const character = chosenCharacter();
  if (character && !ui.picker.hidden) payload.character = { id: character };
  // The server picks the word (the character's, else its default) and says which in session.ready.
  if (ui.handsFree.checked) payload.listening = { mode: "wake_word" };
  return payload;
}

/** Ends the current session on purpose (a new character, a new token): no error is shown. */
function hangUp() {
  const relay = page.relay;
  if (!relay) return;
  relay.end();
  page.relay = null;
}

function onClose(relay, { code, reason, ready }) {
  if (relay !== page.relay) return; // an old session we ended on purpose
  page.relay = null;
  page.connecting = false;
  page.disconnected = true;
  page.userSpeaking = false;
  page.awaitingReply = false;
  // Audio still queued belongs to a conversation that is over.
  if (page.player) for (const turnId of page.player.playingTurns()) page.player.stopTurn(turnId);
  if (page.loadingModels) {
    // Not ready yet: come back in a moment, as often as it takes.
    setTimeout(() => {
      if (page.loadingModels && !page.relay) connect();
    }, LOADING_RETRY_MS);
  } else if (relay.fatal) {
    // The server said why before closing (bad token, shutting down...): that message stays.
  } else if (relay.serverEnded) {
    showError("The server ended the session: it is shutting down. Reconnect in a moment.", "server_shutdown");
  } else if (!ready && code === 1006) {
    showError("Cannot reach voxgate: is the server running?", "unreachable");
  } else {
    const why = reason ? `: ${reason}` : "";
    showError(`Lost the connection to voxgate (code ${code}${why}).`, "connection_lost");
  }
  refreshStatus();
}

// ---------------------------------------------------------------------------------------------
// The microphone

async function openMic() {
  if (page.micOpening) return;
  page.micOpening = true;
  try {
    page.mic = await Microphone.open(page.context, sendFrame, {
      echoCancellation: ui.echoCancellation.checked,
    });
  } catch (error) {
    // Talking is off, typing still works; the next session.ready tries again.
    showError(micErrorMessage(error), "microphone");
  } finally {
    page.micOpening = false;
  }
  refreshStatus();
}

function sendFrame(pcm) {
  const relay = page.relay;
  if (relay && relay.sendAudio(pcm)) page.uplink.sent(pcm.length);
}

// ---------------------------------------------------------------------------------------------
// Conversation cards

function newCard() {
  const card = ui.template.content.firstElementChild.cloneNode(true);
  ui.turns.append(card);
  card.scrollIntoView({ block: "end" });
  return card;
}

/** The card of the user's words in progress (made on their first word). */
function speakingCard() {
  if (!page.speakingCard) page.speakingCard = newCard();
  return page.speakingCard;
}

/** The user's turn is over: its card stays, pending, until the server answers it. */
function endUserTurn(card, { transcribing }) {
  card.dataset.pending = "true";
  if (transcribing) card.dataset.transcribing = "true";
  page.waiting.push(card);
}

/** The card of `turnId`: known, or the oldest turn still waiting for its id (null: none). */
function cardOf(turnId) {
  let card = page.cards.get(turnId);
  if (!card && page.waiting.length > 0) {
    card = page.waiting.shift();
    card.dataset.turnId = String(turnId);
    page.cards.set(turnId, card);
  }
  return card || null;
}

function setUserText(card, text, { partial = false } = {}) {
  const element = card.querySelector(".user .text");
  element.textContent = text;
  element.classList.toggle("partial", partial);
  if (!partial) delete card.dataset.transcribing;
}

function markInterrupted(card, heardText) {
  card.dataset.interrupted = "true";
  const note = card.querySelector(".note");
  const reply = card.querySelector(".reply .text");
  const text = reply.textContent;
  if (!text) {
    // Cut off before any reply: the user spoke (or typed) again, or pressed Stop.
    card.dataset.cutOff = "true";
    delete card.dataset.transcribing;
    note.textContent = "cut off before the reply";
  } else {
    showInterrupted(reply, text, heardText);
    note.textContent = heardText ? "interrupted — you heard the plain part; the struck part was not played" : "interrupted before you heard any of it";
  }
  note.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Relay events

function onEvent(relay, name, payload) {
  if (relay !== page.relay) return;
  page.events.push(name);
  if (page.events.length > 500) page.events.splice(0, 100);
  switch (name) {
    case "session.ready":
      page.connecting = false;
      if (page.loadingModels) {
        page.loadingModels = false;
        if (ui.picker.hidden) loadCharacters(); // the server could not list them while loading
      }
      page.uplink = new UplinkClock(); // at_ms counts from this session's first audio
      page.wake = payload.listening?.mode === "wake_word" ? "waiting" : null;
      page.wakeWord = spokenWord(payload.listening?.wake_word);
      clearError();
      if (!page.mic && page.context) openMic();
      break;
    case "speech.started":
      page.userSpeaking = true;
      if (page.wake === "heard") page.wake = "listening";
      break;
    case "wake.detected":
      page.wake = "heard";
      page.wakeWord = spokenWord(payload.wake_word);
      break;
    case "wake.waiting":
      page.wake = "waiting";
      break;
    case "speech.stopped": {
      page.userSpeaking = false;
      page.awaitingReply = true;
      page.speechEndSentAt = page.uplink.sentAt(payload.at_ms);
      const card = speakingCard();
      page.speakingCard = null;
      // Shown at once; its transcript fills in when it arrives.
      endUserTurn(card, { transcribing: true });
      break;
    }
    case "asr.partial":
      setUserText(speakingCard(), payload.text, { partial: true });
      break;
    case "asr.final": {
      // The transcript of the oldest ended turn still without one (asr.final follows its
      // speech.stopped); a turn cut off before its transcript left the queue with its turn_id.
      const card = page.waiting.find((c) => c.dataset.transcribing === "true") || speakingCard();
      setUserText(card, payload.text);
      break;
    }
    case "reply.started": {
      // A greeting has no words of the user's: a card of its own.
      const card = page.cards.get(payload.turn_id) || (page.waiting.length > 0 ? cardOf(payload.turn_id) : newCard());
      card.dataset.turnId = String(payload.turn_id);
      page.cards.set(payload.turn_id, card);
      page.currentTurn = payload.turn_id;
      page.awaitingReply = true;
      if (page.speechEndSentAt !== null) page.turnSpeechEnd.set(payload.turn_id, page.speechEndSentAt);
      page.speechEndSentAt = null;
      if (ui.error.dataset.code !== "microphone") clearError(); // that one still holds
      break;
    }
    case "llm.token": {
      const card = page.cards.get(payload.turn_id);
      if (card) card.querySelector(".reply .text").textContent += payload.text;
      break;
    }
    case "reply.interrupted": {
      // May come after turn.done (the audio was all sent, not all played): stop it all the same.
      page.player.stopTurn(payload.turn_id);
      const card = cardOf(payload.turn_id);
      if (card) markInterrupted(card, payload.heard_text);
      if (page.currentTurn === payload.turn_id) page.awaitingReply = page.waiting.length > 0;
      break;
    }
    case "turn.done":
      onTurnDone(payload);
      break;
    case "error":
      onError(relay, payload);
      break;
    case "session.end":
      relay.serverEnded = payload.reason === "server_shutdown";
      break;
    default:
      break; // events of a newer minor version: ignored, as the protocol asks
  }
  refreshStatus();
}

/** "hey_jarvis" → "Hey Jarvis", as the status line says it. */
function spokenWord(name = "") {
  return name.split("_").map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" ");
}

function onAudio(header, bytes) {
  const turnId = header.turn_id;
  page.audioReceivedMs += header.duration_ms;
  if (page.stoppedTurns.has(turnId)) return;
  if (!page.firstAudioAt.has(turnId)) page.firstAudioAt.set(turnId, performance.now());
  page.player.enqueue(turnId, bytes, header.sample_rate_hz);
}

function onTurnDone(payload) {
  const turnId = payload.turn_id;
  page.player.markDone(turnId);
  const card = cardOf(turnId);
  if (page.currentTurn === turnId) page.currentTurn = null;
  page.awaitingReply = page.currentTurn !== null || page.waiting.length > 0;
  if (!card) return;
  card.dataset.done = "true";
  card.dataset.pending = "false";
  if (payload.user_text && !card.querySelector(".user .text").textContent) {
    setUserText(card, payload.user_text);
  }
  if (payload.interrupted) markInterrupted(card, payload.reply_text);
  renderTimings(card.querySelector(".timings"), { ...payload.timings, network_ms: networkMs(turnId, payload.timings) });
  page.turnSpeechEnd.delete(turnId);
  page.firstAudioAt.delete(turnId);
}

/**
 * The part of the user's wait the server did not see: (first reply audio arriving here − the
 * page sending the last voiced audio) − the server's own speech_end_to_first_audio_ms. Uplink
 * and downlink transit plus socket buffering. Only for spoken turns, where both ends are known.
 */
function networkMs(turnId, timings) {
  const spokenAt = page.turnSpeechEnd.get(turnId);
  const arrivedAt = page.firstAudioAt.get(turnId);
  const server = timings.speech_end_to_first_audio_ms;
  if (spokenAt == null || arrivedAt == null || typeof server !== "number") return undefined;
  const network = arrivedAt - spokenAt - server;
  return network >= 0 ? Math.round(network) : undefined;
}

function onError(relay, { code, message, fatal }) {
  if (fatal) relay.fatal = true;
  if (code === "loading_models") {
    page.loadingModels = true;
    showError("The server is loading its models (the first start copies them: up to a minute or two). The page connects by itself as soon as they are ready.", code);
    return;
  }
  if (code === "unauthorized") {
    forgetToken();
    page.token = null;
    showError(`The token was refused (${message}). Enter the admin token that “voxgate serve” printed.`, code);
    ui.tokenForm.hidden = false;
    return;
  }
  if (code === "no_speech") {
    // Nothing was said after all: that turn's card goes.
    const card = page.waiting.find((c) => c.dataset.transcribing === "true");
    if (card) {
      page.waiting.splice(page.waiting.indexOf(card), 1);
      card.remove();
    }
    page.awaitingReply = page.waiting.length > 0;
    showError("Sorry, I did not catch that.", code);
    return;
  }
  if (code === "rate_limited" && !fatal) page.awaitingReply = false;
  showError(fatal ? message : `${message} (${code})`, code);
}

// ---------------------------------------------------------------------------------------------
// What the user does

function reportPosition(turnId, playedMs) {
  page.relay?.send("playback.position", { turn_id: turnId, played_ms: playedMs });
}

function stopReply() {
  if (!page.relay) return;
  // Report exactly what was heard first, so the server's heard_text is what the user heard.
  for (const turnId of page.player.playingTurns()) {
    reportPosition(turnId, page.player.playedMs(turnId));
    page.stoppedTurns.add(turnId);
    page.player.stopTurn(turnId); // at once, not after the server's round trip
  }
  if (page.currentTurn !== null) page.stoppedTurns.add(page.currentTurn);
  page.relay.send("reply.interrupt");
  refreshStatus();
}

function sendText(event) {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !page.relay) return;
  // A typed turn interrupts a reply in progress: the server says so with reply.interrupted.
  if (page.relay.send("text.input", { text })) {
    const card = newCard();
    setUserText(card, text);
    endUserTurn(card, { transcribing: false });
    page.speechEndSentAt = null; // no spoken end: no network measurement for this turn
    page.awaitingReply = true;
    ui.text.value = "";
    refreshStatus();
  }
}

async function loadCharacters() {
  const characters = page.token ? await fetchCharacters(page.token) : null;
  ui.picker.hidden = !characters;
  if (!characters) return;
  const chosen = chosenCharacter();
  ui.character.replaceChildren(
    // No id sent: the server picks (the device's character, else its default).
    new Option("default", "", false, !chosen),
    ...characters.map((character) => {
      const option = new Option(character.name, character.id, false, character.id === chosen);
      option.title = character.description || "";
      return option;
    }),
  );
  if (!chosen || !characters.some((character) => character.id === chosen)) chooseCharacter(ui.character.value);
  describeCharacter(characters);
  ui.character.onchange = () => {
    chooseCharacter(ui.character.value);
    describeCharacter(characters);
    // The character is fixed at session.start: a new one needs a new session.
    if (page.relay) {
      hangUp();
      connect();
    }
  };
}

function describeCharacter(characters) {
  const character = characters.find((c) => c.id === ui.character.value);
  ui.characterDescription.textContent = character?.description || "";
  ui.characterDescription.hidden = !character?.description;
}

ui.start.addEventListener("click", start);
ui.reconnect.addEventListener("click", () => (page.token ? start() : (ui.tokenForm.hidden = false)));
ui.stop.addEventListener("click", stopReply);
ui.textForm.addEventListener("submit", sendText);
ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) return;
  saveToken(token);
  page.token = token;
  ui.token.value = "";
  page.disconnected = false;
  loadCharacters();
  start();
});
ui.handsFree.addEventListener("change", () => {
  // The listening mode is fixed at session.start: switching needs a new session.
  if (page.relay) {
    hangUp();
    connect();
  }
});
ui.echoCancellation.addEventListener("change", () => {
  if (!page.mic) return;
  page.mic.close(); // reopened with the new constraint
  page.mic = null;
  openMic();
});

// Reports keep the server's idea of "heard" exact while a reply plays.
setInterval(() => {
  if (!page.player || !page.relay) return;
  for (const turnId of page.player.playingTurns()) reportPosition(turnId, page.player.playedMs(turnId));
}, POSITION_REPORT_MS);

setInterval(() => {
  if (page.mic) ui.micLevel.value = page.mic.level;
  if (page.player) ui.outLevel.value = page.player.level();
}, METER_MS);

if (!page.token) {
  ui.tokenForm.hidden = false;
  showError("No token yet: open the link “voxgate serve” printed (…/#token=…), or paste the admin token.", "no_token");
}
loadCharacters();
refreshStatus();

// The admin page: everything comes from the admin JSON API (voxgate/server/admin_api) with the
// admin token, and is fetched again every few seconds, so turns just made show up. Sections are
// redrawn only when their data changed (admin-dom.js `show`).

import { AdminApi, ApiError } from "./admin-api.js";
import { el, show, utcDay } from "./admin-dom.js";
import * as sections from "./admin-sections.js";
import { forgetToken, saveToken, takeToken } from "./auth.js";

const REFRESH_MS = 3000;
const PAGE_SIZE = 50; // conversations per page

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  statusText: $("status-text"),
  autoRefresh: $("auto-refresh"),
  refresh: $("refresh"),
  error: $("error"),
  errorText: $("error-text"),
  tokenForm: $("token-form"),
  token: $("token"),
  overview: $("overview"),
  devices: $("devices"),
  newToken: $("new-token"),
  addDevice: $("add-device"),
  deviceName: $("device-name"),
  deviceMac: $("device-mac"),
  deviceUser: $("device-user"),
  addUser: $("add-user"),
  userName: $("user-name"),
  characters: $("characters"),
  characterForm: $("character-form"),
  characterFormTitle: $("character-form-title"),
  characterSlug: $("character-slug"),
  characterName: $("character-name"),
  characterDescription: $("character-description"),
  characterVoice: $("character-voice"),
  characterFirstMessage: $("character-first-message"),
  characterPrompt: $("character-prompt"),
  characterSave: $("character-save"),
  characterCancel: $("character-cancel"),
  conversationDevice: $("conversation-device"),
  conversations: $("conversations"),
  conversation: $("conversation"),
  since: $("since"),
  usageUser: $("usage-user"),
  usageChart: $("usage-chart"),
  usage: $("usage"),
  latency: $("latency"),
  errors: $("errors"),
};

const page = {
  token: takeToken(),
  busy: false,
  again: false, // a refresh was asked for while one ran: run another after it
  selected: null, // the id of the conversation shown
  conversations: [],
  // Paging the conversations: `before` of each page shown so far (null: the newest), and the
  // API's next_before for the page after the current one.
  pages: [null],
  nextBefore: null,
  refreshes: 0, // successful ones
};

// Tests and curious people read the page's state here (no secret: not the token).
window.voxgateAdmin = {
  get refreshes() {
    return page.refreshes;
  },
  get status() {
    return ui.status.dataset.state;
  },
};

// ---------------------------------------------------------------------------------------------
// Status and errors

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  document.body.dataset.state = state;
}

function showError(message, code) {
  ui.errorText.textContent = message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.dataset.code = "";
}

function askForToken(message, code) {
  forgetToken();
  page.token = null;
  ui.tokenForm.hidden = false;
  showError(message, code);
  setStatus("unauthorized", "token needed");
  ui.token.focus();
}

function failed(error) {
  if (!(error instanceof ApiError)) {
    showError(`The page failed: ${error}`, "internal");
    setStatus("error", "error");
    throw error; // a bug of the page: let it reach the console
  }
  switch (error.code) {
    case "unauthorized":
      askForToken("The admin token was refused. Enter the admin token that “voxgate serve” printed, or open the link it printed (…/admin#token=…).", "unauthorized");
      break;
    case "unreachable":
      showError(`${error.message} What is shown is from ${page.refreshes ? "the last successful refresh" : "nowhere yet"}; the page keeps trying.`, "unreachable");
      setStatus("offline", "server gone");
      break;
    case "loading_models":
      showError("The server is loading its models (the first start copies them: up to a minute or two); the page fills in by itself as soon as they are ready.", "loading_models");
      setStatus("loading", "loading models…");
      break;
    case "unavailable":
      showError("The server is up but its database is unavailable; the page keeps trying.", "unavailable");
      setStatus("degraded", "database unavailable");
      break;
    default:
      showError(error.message, error.code);
      setStatus("error", "error");
  }
}

// ---------------------------------------------------------------------------------------------
// Fetching and drawing

function fillSelect(select, options) {
  const key = JSON.stringify(options);
  if (select.dataset.key === key) return;
  const current = select.value;
  select.replaceChildren(...options.map(([value, text]) => el("option", { value }, text)));
  select.value = options.some(([value]) => value === current) ? current : options[0][0];
  select.dataset.key = key;
}

async function fetchAll(api) {
  const since = ui.since.value || null;
  const [overview, devices, users, characters, conversations, usage, latency, errors] = await Promise.all([
    api.get("overview"),
    api.get("devices"),
    api.get("users"),
    api.get("characters"),
    api.get("conversations", { device: ui.conversationDevice.value, limit: PAGE_SIZE, before: page.pages[page.pages.length - 1] }),
    api.get("usage", { since, user: ui.usageUser.value }),
    api.get("latency", { since }),
    api.get("errors", { limit: 50 }),
  ]);
  let detail = null;
  if (page.selected) {
    try {
      detail = await api.get(`conversations/${encodeURIComponent(page.selected)}`);
    } catch (error) {
      if (!(error instanceof ApiError && error.code === "not_found")) throw error;
    }
  }
  return { overview, devices, users, characters, conversations, usage, latency, errors, detail };
}

function draw(data) {
  const users = data.users.users;
  const devices = data.devices.devices;
  const userOptions = users.map((u) => [u.name, u.name]);
  fillSelect(ui.deviceUser, [["", "owner: nobody"], ...userOptions]);
  fillSelect(ui.usageUser, [["", "all users"], ...userOptions]);
  fillSelect(ui.conversationDevice, [["", "all devices"], ...devices.map((d) => [d.name, d.name])]);

  show(ui.overview, JSON.stringify(data.overview), () => sections.overview(data.overview));
  // The minute is in the key: "last seen 2 min ago" stays roughly true.
  const devicesKey = JSON.stringify([devices, users, data.characters, Math.floor(Date.now() / 60000)]);
  show(ui.devices, devicesKey, () => sections.devices(devices, users, data.characters.characters, deviceActions));

  page.conversations = data.conversations.conversations;
  page.nextBefore = data.conversations.next_before;
  const paging = {
    page: page.pages.length,
    older: page.nextBefore === null ? null : () => turnPage(+1),
    newer: page.pages.length > 1 ? () => turnPage(-1) : null,
  };
  show(ui.conversations, JSON.stringify([page.conversations, page.selected, page.pages, page.nextBefore]), () =>
    sections.conversations(page.conversations, page.selected, selectConversation, paging),
  );
  show(ui.characters, JSON.stringify(data.characters), () => sections.characters(data.characters.characters, characterActions));
  if (page.selected) {
    const summary = page.conversations.find((c) => c.id === page.selected) || null;
    const messages = data.detail ? data.detail.messages : [];
    show(ui.conversation, JSON.stringify([page.selected, summary, messages]), () => sections.conversation(summary, messages));
  }

  show(ui.usageChart, JSON.stringify(data.usage.rows), () => sections.usageChart(data.usage.rows));
  show(ui.usage, JSON.stringify(data.usage), () => sections.usageTable(data.usage.rows, data.usage.total));
  show(ui.latency, JSON.stringify(data.latency), () => sections.latency(data.latency.days));
  show(ui.errors, JSON.stringify(data.errors), () => sections.errors(data.errors.errors, selectConversation));
}

async function refresh() {
  if (!page.token) return;
  if (page.busy) {
    page.again = true;
    return;
  }
  page.busy = true;
  if (page.refreshes === 0) setStatus("loading", "loading…");
  try {
    const data = await fetchAll(new AdminApi(page.token));
    draw(data);
    page.refreshes += 1;
    clearError();
    ui.tokenForm.hidden = true;
    setStatus("ok", `updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    failed(error);
  } finally {
    page.busy = false;
    if (page.again) {
      page.again = false;
      refresh();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Actions

/** Run an admin API change, then refresh; its failure is shown like any other. */
async function act(method, path, body) {
  if (!page.token) return null;
  try {
    const answer = await new AdminApi(page.token).send(method, path, body);
    refresh();
    return answer;
  } catch (error) {
    failed(error);
    return null;
  }
}

const deviceActions = {
  change: (name, changes) => act("PATCH", `devices/${encodeURIComponent(name)}`, changes),
  revoke: (name) => act("POST", `devices/${encodeURIComponent(name)}/revoke`, {}),
};

function turnPage(step) {
  if (step > 0 && page.nextBefore !== null) page.pages.push(page.nextBefore);
  if (step < 0 && page.pages.length > 1) page.pages.pop();
  refresh();
}

function firstPage() {
  page.pages = [null];
  page.nextBefore = null;
  refresh();
}

// -- characters: one form adds a new one or edits the one picked (its id then fixed)

const characterFields = () => [
  [ui.characterName, "name"],
  [ui.characterDescription, "description"],
  [ui.characterVoice, "voice"],
  [ui.characterFirstMessage, "first_message"],
  [ui.characterPrompt, "system_prompt"],
];

function editCharacter(character) {
  ui.characterSlug.value = character ? character.slug : "";
  ui.characterSlug.readOnly = Boolean(character);
  for (const [input, key] of characterFields()) input.value = character ? character[key] ?? "" : "";
  ui.characterFormTitle.textContent = character ? `Edit ${character.name} (${character.slug})` : "Add a character";
  ui.characterSave.textContent = character ? "Save" : "Add";
  ui.characterCancel.hidden = !character;
  ui.characterForm.dataset.editing = character ? character.slug : "";
  if (character) {
    ui.characterForm.scrollIntoView({ block: "nearest" });
    ui.characterName.focus();
  }
}

const characterActions = {
  edit: editCharacter,
  remove: async (slug) => {
    if (await act("DELETE", `characters/${encodeURIComponent(slug)}`)) {
      if (ui.characterForm.dataset.editing === slug) editCharacter(null);
    }
  },
};

ui.characterForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const slug = ui.characterSlug.value.trim();
  const body = { slug };
  // Empty optional fields are "none" (null): the engine's default voice, no first message.
  for (const [input, key] of characterFields()) body[key] = input.value.trim() || (key === "description" ? "" : null);
  if (await act("PUT", `characters/${encodeURIComponent(slug)}`, body)) editCharacter(null);
});
ui.characterCancel.addEventListener("click", () => editCharacter(null));

function selectConversation(id) {
  page.selected = id;
  ui.conversation.dataset.key = "";
  ui.conversation.replaceChildren(el("p", { class: "empty" }, "Loading…"));
  refresh();
  ui.conversation.scrollIntoView({ block: "nearest" });
}

ui.addDevice.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = ui.deviceName.value.trim();
  if (!name) return;
  const body = { name, mac: ui.deviceMac.value.trim() || null, user: ui.deviceUser.value || null };
  const added = await act("POST", "devices", body);
  if (!added) return;
  ui.deviceName.value = "";
  ui.deviceMac.value = "";
  ui.newToken.replaceChildren(...sections.newToken(added.device.name, added.token, () => {
    ui.newToken.replaceChildren();
    ui.newToken.hidden = true;
  }));
  ui.newToken.hidden = false;
});

ui.addUser.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = ui.userName.value.trim();
  if (name && (await act("POST", "users", { name }))) ui.userName.value = "";
});

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) return;
  saveToken(token);
  page.token = token;
  ui.token.value = "";
  ui.tokenForm.hidden = true;
  clearError();
  refresh();
});

// A new link with #token=… opened in this tab does not reload the page.
window.addEventListener("hashchange", () => {
  if (!new URLSearchParams(window.location.hash.slice(1)).has("token")) return;
  page.token = takeToken();
  ui.tokenForm.hidden = true;
  clearError();
  refresh();
});

ui.refresh.addEventListener("click", () => (page.token ? refresh() : ui.token.focus()));
for (const control of [ui.since, ui.usageUser]) control.addEventListener("change", refresh);
ui.conversationDevice.addEventListener("change", firstPage);

setInterval(() => {
  if (ui.autoRefresh.checked && !document.hidden) refresh();
}, REFRESH_MS);

ui.since.value = utcDay(-29);
if (page.token) refresh();
else askForToken("No token yet: open the link “voxgate serve” printed (…/admin#token=…), or paste the admin token.", "no_token");

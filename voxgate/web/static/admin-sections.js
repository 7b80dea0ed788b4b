// The admin page's sections, each drawn from one admin API answer. They only build elements;
// admin.js fetches, keeps the state and handles the actions passed in as callbacks.

import { lines, PALETTE, stackedBars, legend } from "./admin-charts.js";
import { ago, count, daysBetween, el, empty, ms, table, usd, when } from "./admin-dom.js";
import { showInterrupted } from "./reply-text.js";
import { renderTimings } from "./timings.js";

// -- overview ---------------------------------------------------------------------------------

function tile(key, label, value, detail = null, state = null) {
  return el(
    "div",
    { class: "tile", dataset: { tile: key, ...(state ? { state } : {}) } },
    el("span", { class: "tile-value" }, value),
    el("span", { class: "tile-label" }, label),
    detail && el("span", { class: "tile-detail" }, detail),
  );
}

export function overview(o) {
  const writer = o.writer || {};
  const health = writer.healthy ? "healthy" : "failing";
  const writerDetail = writer.healthy
    ? `${count(writer.pending)} writes pending`
    : `${count(writer.pending)} pending — ${writer.last_error || "unknown error"}`;
  return [
    tile("devices", "devices", count(o.devices), `${count(o.devices_active)} active`),
    tile("devices_online", "online now", count(o.devices_online)),
    tile("users", "users", count(o.users)),
    tile("sessions_live", "live sessions", count(o.sessions_live)),
    tile("turns_today", "turns today (UTC)", count(o.turns_today)),
    tile("cost_today_usd", "cost today", usd(o.cost_today_usd)),
    tile("writer", "database writer", health, writerDetail, writer.healthy ? "ok" : "bad"),
  ];
}

// -- devices ----------------------------------------------------------------------------------

function deviceStatus(device) {
  if (device.revoked) {
    return el("span", { class: "badge", dataset: { status: "revoked" } }, `revoked ${when(device.revoked_at)}`);
  }
  const seen = device.last_seen_at ? `last seen ${ago(device.last_seen_at)}` : "never seen";
  if (device.online) return el("span", { class: "badge", dataset: { status: "online" } }, "online");
  return el("span", { class: "badge", dataset: { status: "offline" }, title: when(device.last_seen_at) }, `offline · ${seen}`);
}

function picker(label, current, options, onPick, disabled) {
  const known = options.some(([value]) => value === current);
  const all = known || current === null ? options : [...options, [current, `${current} (unknown)`]];
  return el(
    "select",
    { "aria-label": label, disabled, onchange: (event) => onPick(event.target.value || null) },
    all.map(([value, text]) => el("option", { value: value ?? "", selected: value === current }, text)),
  );
}

/** @param actions {{change: (name, changes) => void, revoke: (name) => void}} */
export function devices(list, users, characters, actions) {
  if (list.length === 0) return empty("No devices yet: add one below, or run `voxgate devices add NAME`.");
  const owners = [[null, "— nobody —"], ...users.map((u) => [u.name, u.name])];
  const roles = [[null, "server default"], ...characters.map((c) => [c.slug, c.name])];
  const rows = list.map((d) => [
    el("span", {}, el("strong", {}, d.name), d.mac ? el("span", { class: "sub" }, d.mac) : null),
    deviceStatus(d),
    picker(`owner of ${d.name}`, d.user, owners, (user) => actions.change(d.name, { user }), d.revoked),
    picker(`character of ${d.name}`, d.settings.character ?? null, roles, (character) => actions.change(d.name, { character }), d.revoked),
    when(d.created_at),
    el(
      "button",
      {
        type: "button",
        class: "danger",
        disabled: d.revoked,
        onclick: () => {
          if (window.confirm(`Revoke ${d.name}? Its token stops working at once.`)) actions.revoke(d.name);
        },
      },
      "Revoke",
    ),
  ]);
  return table(
    [["device"], ["status"], ["owner"], ["character"], ["added"], ["", "actions"]],
    rows,
    { rowProps: (i) => ({ dataset: { device: list[i].name, online: String(list[i].online), revoked: String(list[i].revoked) } }) },
  );
}

export function newToken(name, token, onDismiss) {
  return [
    el("p", {}, "Token for ", el("strong", {}, name), " — shown only this once; copy it into the device now:"),
    el("code", { class: "token-value" }, token),
    el(
      "span",
      { class: "token-actions" },
      el("button", { type: "button", onclick: () => navigator.clipboard?.writeText(token) }, "Copy"),
      el("button", { type: "button", onclick: onDismiss }, "Done"),
    ),
  ];
}

// -- conversations ----------------------------------------------------------------------------

/** @param paging {{page: number, older: (() => void) | null, newer: (() => void) | null}} */
export function conversations(list, selectedId, onSelect, paging) {
  if (list.length === 0 && paging.page === 1) return empty("No conversations yet.");
  const rows = list.map((c) => [
    el("button", { type: "button", class: "link", onclick: () => onSelect(c.id) }, when(c.started_at)),
    c.device,
    c.user ?? "—",
    c.character ?? "default",
    count(c.turns),
    c.ended_at ? ago(c.ended_at) : el("span", { class: "badge", dataset: { status: "online" } }, "open"),
  ]);
  const shown = table([["started"], ["device"], ["user"], ["character"], ["turns", "num"], ["ended"]], rows, {
    rowProps: (i) => ({ class: list[i].id === selectedId ? "selected" : null, dataset: { conversation: list[i].id } }),
  });
  const pager = el(
    "div",
    { class: "pager", dataset: { page: String(paging.page) } },
    el("button", { type: "button", class: "newer", disabled: !paging.newer, onclick: paging.newer }, "← newer"),
    el("span", { class: "sub" }, `page ${paging.page}`),
    el("button", { type: "button", class: "older", disabled: !paging.older, onclick: paging.older }, "older →"),
  );
  const rest = list.length ? shown : empty("No older conversations.");
  return paging.newer || paging.older ? [rest, pager] : [rest];
}

function firstAudio(timings) {
  const spoken = timings.speech_end_to_first_audio_ms;
  if (typeof spoken === "number") return `reply audio ${ms(spoken)} after the user stopped speaking`;
  const typed = timings.turn_end_to_first_audio_ms;
  if (typeof typed === "number") return `reply audio ${ms(typed)} after the turn ended`;
  return null;
}

function turnCard(index, turnId, user, reply) {
  const card = el("li", { class: "turn", dataset: { turnId: String(turnId), index: String(index) } });
  if (user) card.append(el("p", { class: "user" }, el("span", { class: "who" }, "user"), el("span", { class: "text" }, user.text)));
  if (reply) {
    card.dataset.interrupted = String(reply.interrupted);
    const text = el("span", { class: "text" }, reply.text);
    if (reply.interrupted) showInterrupted(text, reply.text, reply.heard_text);
    card.append(el("p", { class: "reply" }, el("span", { class: "who" }, "reply"), text));
    if (reply.interrupted) {
      const heard = reply.heard_text ? "the user heard the plain part; the struck part was cut off" : "the user heard none of it";
      card.append(el("p", { class: "note" }, `interrupted: ${heard}`));
    }
    const timings = reply.timings || {};
    const meta = [when(reply.created_at), firstAudio(timings), reply.audio_s ? `${reply.audio_s.toFixed(1)} s of reply audio` : null];
    card.append(el("p", { class: "meta" }, meta.filter(Boolean).join(" · ")));
    const bars = el("div", { class: "timings", hidden: true });
    renderTimings(bars, timings);
    card.append(bars);
  }
  return card;
}

/**
 * The turns of a conversation, in the order they were said. Messages come oldest first; a
 * conversation resumed by a later session starts its turn_ids again at 1, so a turn_id names a
 * turn only within one session (session_id): a user message opens a turn, and a reply joins the
 * turn before it when that turn is of the same session and turn_id and has no reply yet (a
 * greeting's reply stands alone). Rows stored before session_id was kept have none: there, a
 * turn_id that does not grow starts the next session.
 */
export function turnsOf(messages) {
  const turns = [];
  let session = 1;
  for (const m of messages) {
    const last = turns[turns.length - 1];
    const again = !last
      ? false
      : m.session_id && last.sessionId
        ? m.session_id !== last.sessionId
        : m.turn_id < last.turnId || (m.turn_id === last.turnId && (m.role === "user" || Boolean(last.reply)));
    if (again) session += 1;
    if (m.role !== "user" && last && !last.reply && last.turnId === m.turn_id && last.session === session) {
      last.reply = m;
    } else {
      turns.push({ turnId: m.turn_id, sessionId: m.session_id, session, user: m.role === "user" ? m : null, reply: m.role === "user" ? null : m });
    }
  }
  return turns;
}

export function conversation(summary, messages) {
  const title = summary ? `${summary.device} · ${when(summary.started_at)}` : "Conversation";
  if (messages.length === 0) return [el("h3", {}, title), empty("No messages in this conversation yet.")];
  const turns = turnsOf(messages);
  const items = [];
  turns.forEach((t, i) => {
    if (i > 0 && t.session !== turns[i - 1].session) {
      items.push(el("li", { class: "session-break", dataset: { session: String(t.session) } }, `session ${t.session} · resumed ${when((t.user || t.reply).created_at)}`));
    }
    items.push(turnCard(i + 1, t.turnId, t.user, t.reply));
  });
  const sessions = turns.length ? turns[turns.length - 1].session : 0;
  const answered = turns.filter((t) => t.reply).length;
  const what = `${count(answered)} turns in this conversation${sessions > 1 ? `, over ${sessions} sessions` : ""}`;
  return [
    el("h3", {}, title),
    el("p", { class: "sub count-label", dataset: { count: "conversation" } }, what),
    el("ol", { class: "turns transcript", "aria-label": "transcript" }, items),
  ];
}

// -- usage ------------------------------------------------------------------------------------

export function usageChart(rows) {
  if (rows.length === 0) return empty("No usage in this period.");
  const days = rows.map((r) => r.day).sort();
  const allDays = daysBetween(days[0], days[days.length - 1]);
  const users = [...new Set(rows.map((r) => r.user))].sort();
  const series = users.map((user) => ({
    name: user,
    values: allDays.map((day) => rows.filter((r) => r.day === day && r.user === user).reduce((s, r) => s + r.cost_usd, 0)),
  }));
  const tick = (v) => `$${Number(v.toPrecision(3))}`;
  return stackedBars({ days: allDays, series, format: tick, label: "cost per day per user, US dollars" });
}

export function usageTable(rows, total) {
  if (rows.length === 0) return [];
  const columns = [["day"], ["user"], ["turns", "num"], ["audio min", "num"], ["tokens in", "num"], ["tokens out", "num"], ["characters", "num"], ["cost", "num"]];
  const cost = (value) => el("span", { dataset: { usd: String(value) } }, usd(value));
  const line = (r) => [r.day, r.user, count(r.turns), r.audio_minutes.toFixed(2), count(r.tokens_in), count(r.tokens_out), count(r.characters), cost(r.cost_usd)];
  return table(columns, rows.map(line), {
    rowProps: (i) => ({ dataset: { day: rows[i].day, user: rows[i].user } }),
    footer: line({ ...total, day: "total", user: "" }),
  });
}

// -- latency ----------------------------------------------------------------------------------

const STAGE_LABELS = {
  speech_end_to_first_audio_ms: "user stopped → reply audio",
  turn_end_to_first_audio_ms: "turn end → reply audio",
  end_of_turn_wait_ms: "end-of-turn wait",
  stt_ms: "speech to text",
  llm_first_token_ms: "LLM first token",
  first_sentence_ms: "LLM first sentence",
  tts_first_audio_ms: "TTS first audio",
};

export function latency(days) {
  if (days.length === 0) return empty("No turns in this period.");
  const ordered = [...days].sort((a, b) => (a.day < b.day ? -1 : 1));
  const allDays = daysBetween(ordered[0].day, ordered[ordered.length - 1].day);
  const byDay = new Map(ordered.map((d) => [d.day, d.stages]));
  const seen = new Set(ordered.flatMap((d) => Object.keys(d.stages)));
  const stages = [...Object.keys(STAGE_LABELS).filter((s) => seen.has(s)), ...[...seen].filter((s) => !(s in STAGE_LABELS)).sort()];
  const figures = stages.map((stage, k) => {
    const color = PALETTE[k % PALETTE.length];
    const pick = (which) => allDays.map((day) => byDay.get(day)?.[stage]?.[which] ?? null);
    const p50 = pick("p50");
    const p95 = pick("p95");
    const last = ordered[ordered.length - 1].stages[stage];
    const label = STAGE_LABELS[stage] || stage;
    return el(
      "figure",
      { class: "chart-figure small", dataset: { stage } },
      el("figcaption", {}, el("strong", {}, label), last ? el("span", { class: "sub" }, `latest: p50 ${ms(last.p50)}, p95 ${ms(last.p95)}`) : null),
      lines({
        days: allDays,
        series: [
          { name: "p50", values: p50, color, dashed: false },
          { name: "p95", values: p95, color, dashed: true },
        ],
        format: (v) => `${v >= 10 ? Math.round(v) : Number(v.toFixed(2))} ms`,
        label: `${label}: p50 and p95 per day, milliseconds`,
      }),
    );
  });
  const turns = ordered.reduce((s, d) => s + d.turns, 0);
  return [
    el("div", { class: "latency-key" }, legend([{ name: "p50", color: "#6b7385" }, { name: "p95", color: "#6b7385", dashed: true }]), el("span", { class: "sub count-label", dataset: { count: "latency" } }, `${count(turns)} turns with timings in this period`)),
    el("div", { class: "figures" }, figures),
  ];
}

// -- errors -----------------------------------------------------------------------------------

export function errors(list, onOpenConversation) {
  if (list.length === 0) return empty("No errors.");
  const rows = list.map((e) => [
    when(e.created_at),
    e.device ?? "—",
    el("span", { class: "badge", dataset: { status: "error" } }, e.code),
    e.message,
    e.conversation_id ? el("button", { type: "button", class: "link", onclick: () => onOpenConversation(e.conversation_id) }, "open") : "—",
  ]);
  return table([["when"], ["device"], ["code"], ["message", "wrap"], ["conversation"]], rows, {
    rowProps: (i) => ({ dataset: { code: list[i].code } }),
  });
}

// -- characters -------------------------------------------------------------------------------

/** @param actions {{edit: (character) => void, remove: (slug) => void}} */
export function characters(list, actions) {
  if (list.length === 0) return empty("No characters: add one below.");
  const rows = list.map((c) => [
    el("span", {}, el("strong", {}, c.name), el("span", { class: "sub" }, c.slug), c.built_in ? el("span", { class: "badge" }, "built in") : null),
    el("span", { class: "clip" }, c.description || "—"),
    c.voice || "default",
    el("span", { class: "clip" }, c.first_message || "—"),
    el(
      "span",
      { class: "row-actions" },
      el("button", { type: "button", class: "edit", onclick: () => actions.edit(c) }, "Edit"),
      c.built_in
        ? null
        : el(
            "button",
            {
              type: "button",
              class: "danger",
              onclick: () => {
                if (window.confirm(`Delete the character ${c.name} (${c.slug})? Devices using it talk as the default.`)) actions.remove(c.slug);
              },
            },
            "Delete",
          ),
    ),
  ]);
  return table([["character"], ["description", "wrap"], ["voice"], ["first message", "wrap"], ["", "actions"]], rows, {
    rowProps: (i) => ({ dataset: { character: list[i].slug, builtIn: String(list[i].built_in) } }),
  });
}

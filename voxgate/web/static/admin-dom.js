// Building the admin page's elements. Everything the API says (names, transcripts, error
// messages) is user content: it only ever becomes text nodes or attribute values, never markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, props, children) {
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
      node.addEventListener(key.slice(2), value);
    } else if (key === "value" || key === "checked" || key === "selected") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child)); // a string becomes a text node
  }
  return node;
}

/** An HTML element: `el("td", { class: "num" }, "text", otherNode)`. */
export function el(tag, props = {}, ...children) {
  return fill(document.createElement(tag), props, children);
}

/** An SVG element, the same way. */
export function svg(tag, props = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), props, children);
}

/** A table: `columns` are [label, className?]; `rows` are arrays of cells (text or nodes). */
export function table(columns, rows, { rowProps = () => ({}), footer = null } = {}) {
  const head = el("tr", {}, columns.map(([label, cls]) => el("th", { class: cls, scope: "col" }, label)));
  // data-label: on a phone the rows become cards, each cell labelled by its column (admin.css).
  const cell = (content, j) => el("td", { class: columns[j][1], dataset: { label: columns[j][0] } }, content);
  const body = rows.map((row, i) => el("tr", rowProps(i), row.map(cell)));
  const foot = footer && el("tfoot", {}, el("tr", {}, footer.map(cell)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, body), foot);
}

export function empty(text) {
  return el("p", { class: "empty" }, text);
}

/** Replace `container`'s content, unless it would be the same as what it shows (`key`), so a
 * refresh does not flicker or steal the focus of a control inside it. */
export function show(container, key, build) {
  if (container.dataset.key === key) return false;
  const focused = document.activeElement;
  if (focused && focused !== document.body && container.contains(focused) && focused.matches("select, input")) {
    return false; // someone is using a control in there: redraw at a later refresh
  }
  container.replaceChildren(...[build()].flat().filter((node) => node !== null && node !== undefined));
  container.dataset.key = key;
  container.dataset.loading = "false";
  return true;
}

// -- formatting -------------------------------------------------------------------------------

export function usd(value) {
  if (!value) return "$0";
  const digits = Math.abs(value) >= 1 ? 2 : Math.abs(value) >= 0.01 ? 4 : 6;
  return `$${value.toFixed(digits)}`;
}

export function ms(value) {
  return typeof value === "number" ? `${Math.round(value)} ms` : "—";
}

export function count(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : "—";
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** Epoch seconds as local `YYYY-MM-DD HH:MM:SS`. */
export function when(epochS) {
  if (typeof epochS !== "number") return "—";
  const d = new Date(epochS * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** How long ago, roughly: "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(epochS, nowS = Date.now() / 1000) {
  if (typeof epochS !== "number") return "never";
  const s = Math.max(0, nowS - epochS);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A UTC day `YYYY-MM-DD`, `offsetDays` from today. */
export function utcDay(offsetDays = 0) {
  return new Date(Date.now() + offsetDays * 86400_000).toISOString().slice(0, 10);
}

/** Every UTC day from `first` to `last` (both `YYYY-MM-DD`), at most `cap` of them (the last). */
export function daysBetween(first, last, cap = 120) {
  const days = [];
  const end = Date.parse(`${last}T00:00:00Z`);
  for (let t = Date.parse(`${first}T00:00:00Z`); t <= end; t += 86400_000) {
    days.push(new Date(t).toISOString().slice(0, 10));
  }
  return days.slice(-cap);
}

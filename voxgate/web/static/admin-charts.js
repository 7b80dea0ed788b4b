// Two small SVG charts drawn by hand (no library): stacked bars per day (cost per user) and lines
// per day (latency percentiles). Every mark carries data-day / data-series / data-value, and a
// <title> tooltip; labels are text nodes.

import { el, svg } from "./admin-dom.js";

export const PALETTE = ["#3355dd", "#e07b00", "#1f9d55", "#c62828", "#7a3fd1", "#00838f", "#ad1457", "#6d4c41"];

/** A round number ≥ `value` for the top of an axis (1, 2, 2.5, 5 × 10^k). */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power + 1e-12) return step * power;
  }
  return 10 * power;
}

function frame(width, height, margin, top, format, label) {
  const plotH = height - margin.top - margin.bottom;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart-svg",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
  const y = (v) => margin.top + plotH - (v / top) * plotH;
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    root.append(
      svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "tick", x: margin.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)),
    );
  }
  return { root, y };
}

function dayLabels(root, days, xOf, baseline) {
  const every = Math.max(1, Math.ceil(days.length / 10));
  days.forEach((day, i) => {
    if (i % every !== 0 && i !== days.length - 1) return;
    root.append(svg("text", { class: "tick", x: xOf(i), y: baseline + 16, "text-anchor": "middle" }, day.slice(5)));
  });
}

export function legend(entries) {
  return el(
    "ul",
    { class: "legend" },
    entries.map(({ name, color, dashed }) =>
      el("li", { dataset: { series: name } }, el("span", { class: `swatch${dashed ? " dashed" : ""}`, style: `--swatch: ${color}` }), name),
    ),
  );
}

/**
 * Bars per day, one segment per series stacked.
 * @param {{days: string[], series: {name: string, values: number[]}[], format: (v: number) => string, label: string}} spec
 */
export function stackedBars({ days, series, format, label }) {
  const width = 760;
  const height = 240;
  const margin = { top: 12, right: 12, bottom: 28, left: 72 };
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const top = niceCeiling(Math.max(0, ...totals));
  const { root, y } = frame(width, height, margin, top, format, label);
  const band = (width - margin.left - margin.right) / Math.max(1, days.length);
  const barWidth = Math.max(2, Math.min(48, band * 0.7));
  const xOf = (i) => margin.left + band * (i + 0.5);
  days.forEach((day, i) => {
    let stacked = 0;
    series.forEach((s, k) => {
      const value = s.values[i] || 0;
      if (value <= 0) return;
      const y0 = y(stacked);
      stacked += value;
      const y1 = y(stacked);
      root.append(
        svg(
          "rect",
          {
            class: "bar-mark",
            x: xOf(i) - barWidth / 2,
            y: y1,
            width: barWidth,
            height: Math.max(1, y0 - y1),
            fill: PALETTE[k % PALETTE.length],
            dataset: { day, series: s.name, value: String(value) },
          },
          svg("title", {}, `${s.name}, ${day}: ${format(value)}`),
        ),
      );
    });
  });
  dayLabels(root, days, xOf, height - margin.bottom);
  const entries = series.map((s, k) => ({ name: s.name, color: PALETTE[k % PALETTE.length] }));
  return el("figure", { class: "chart-figure" }, root, legend(entries));
}

/**
 * Lines per day; null values leave a gap. Each series: {name, values, color, dashed}.
 * @param {{days: string[], series: object[], format: (v: number) => string, label: string}} spec
 */
export function lines({ days, series, format, label }) {
  const width = 340;
  const height = 170;
  const margin = { top: 10, right: 12, bottom: 26, left: 54 };
  const values = series.flatMap((s) => s.values.filter((v) => typeof v === "number"));
  const top = niceCeiling(Math.max(0, ...values));
  const { root, y } = frame(width, height, margin, top, format, label);
  const step = (width - margin.left - margin.right) / Math.max(1, days.length);
  const xOf = (i) => margin.left + step * (i + 0.5);
  for (const s of series) {
    let path = "";
    let pen = false;
    s.values.forEach((v, i) => {
      if (typeof v !== "number") {
        pen = false;
        return;
      }
      path += `${pen ? "L" : "M"}${xOf(i).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    });
    if (path) {
      root.append(svg("path", { class: `line-mark${s.dashed ? " dashed" : ""}`, d: path.trim(), stroke: s.color, dataset: { series: s.name } }));
    }
    s.values.forEach((v, i) => {
      if (typeof v !== "number") return;
      root.append(
        svg(
          "circle",
          { class: "point-mark", cx: xOf(i), cy: y(v), r: 3, fill: s.color, dataset: { day: days[i], series: s.name, value: String(v) } },
          svg("title", {}, `${s.name}, ${days[i]}: ${format(v)}`),
        ),
      );
    });
  }
  dayLabels(root, days, xOf, height - margin.bottom);
  return root;
}

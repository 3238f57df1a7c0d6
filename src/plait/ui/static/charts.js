// Small SVG charts drawn here (no chart library to ship): lines over time buckets.
import { h, formatNumber } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2754c5", "#e07b00", "#0e9384", "#c11574", "#6938ef", "#4e5ba6", "#b54708"];

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}

/**
 * A line chart: series [{name, counts}] over buckets starting at `from`, `bucketMs` each.
 * The figure carries a caption and a hidden table of the totals for screen readers.
 */
export function lineChart({ title, series, from, bucketMs }) {
  const width = 640, height = 180, left = 44, bottom = 22, top = 8;
  const buckets = series[0]?.counts.length || 0;
  const peak = Math.max(1, ...series.flatMap((x) => x.counts));
  const x = (i) => left + (i / Math.max(1, buckets - 1)) * (width - left - 8);
  const y = (v) => top + (1 - v / peak) * (height - top - bottom);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `${title}: ${series.map((x) => `${x.name} ${formatNumber(sum(x.counts))}`).join(", ") || "nothing yet"}` });
  svg.append(s("line", { class: "axis", x1: left, y1: y(0), x2: width - 8, y2: y(0) }));
  svg.append(s("text", { x: left - 6, y: y(peak) + 4, "text-anchor": "end" }, formatNumber(peak)));
  svg.append(s("text", { x: left - 6, y: y(0) + 4, "text-anchor": "end" }, "0"));
  for (const [i, at] of [[0, from], [buckets - 1, from + bucketMs * buckets]]) {
    const label = new Date(at).toISOString().slice(11, 16);
    svg.append(s("text", { x: x(i), y: height - 4, "text-anchor": i ? "end" : "start" }, label));
  }
  series.forEach((line, n) => {
    const points = line.counts.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points, fill: "none", stroke: COLOURS[n % COLOURS.length],
      "stroke-width": 2, "data-series": line.name }));
  });
  const legend = h("div", { class: "legend" }, series.map((line, n) => {
    const key = h("span", {}, `${line.name} (${formatNumber(sum(line.counts))})`);
    key.style.setProperty("--swatch", COLOURS[n % COLOURS.length]);  // CSP: no style attributes
    return key;
  }));
  return h("figure", { class: "panel" }, h("figcaption", {}, h("strong", {}, title)), svg,
    series.length ? legend : h("p", { class: "muted" }, "Nothing in this window yet."));
}

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

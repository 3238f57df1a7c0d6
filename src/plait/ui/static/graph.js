// The identity graph drawn as SVG: identifiers as nodes on a circle, the messages that
// linked two of them as edges. Focus or click a node or an edge to read what it is.
import { formatTime } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = { user_id: "#2754c5", anonymous_id: "#5b6475", email: "#0e9384", phone: "#c11574" };

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}

const key = (i) => `${i.type}:${i.value}`;

/** An SVG of `identifiers` [{type, value, message_id}] and `edges` [{from, to, message_id, timestamp}];
 *  `onpick(text)` is told what a focused node or edge is. */
export function identityGraph({ identifiers, edges }, onpick) {
  const size = 420, centre = size / 2, radius = identifiers.length > 1 ? size / 2 - 80 : 0;
  const at = new Map(identifiers.map((ident, n) => {
    const angle = (2 * Math.PI * n) / identifiers.length - Math.PI / 2;
    return [key(ident), [centre + radius * Math.cos(angle), centre + radius * Math.sin(angle)]];
  }));
  const svg = s("svg", { viewBox: `0 0 ${size} ${size}`, class: "graph", role: "group",
    "aria-label": `Identity graph: ${identifiers.length} identifiers, ${edges.length} links` });
  for (const edge of edges) {
    const [a, b] = [at.get(key(edge.from)), at.get(key(edge.to))];
    if (!a || !b) continue;
    const text = `${key(edge.from)} ↔ ${key(edge.to)}, linked by message ${edge.message_id} at ${formatTime(edge.timestamp)}`;
    const line = s("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "edge", tabindex: "0",
      role: "img", "aria-label": text, "data-message": edge.message_id }, s("title", {}, text));
    for (const kind of ["focus", "click"]) line.addEventListener(kind, () => onpick(text));
    svg.append(line);
  }
  for (const ident of identifiers) {
    const [x, y] = at.get(key(ident));
    const text = `${key(ident)}, first seen in message ${ident.message_id} at ${formatTime(ident.first_seen)}`;
    const node = s("g", { class: "node", tabindex: "0", role: "img", "aria-label": text,
      "data-identifier": key(ident) }, s("title", {}, text),
      s("circle", { cx: x, cy: y, r: 14, fill: COLOURS[ident.type] || "#6938ef" }),
      s("text", { x, y: y + 30, "text-anchor": "middle" }, ident.type),
      s("text", { x, y: y + 44, "text-anchor": "middle", class: "value" },
        ident.value.length > 28 ? `${ident.value.slice(0, 27)}…` : ident.value));
    for (const kind of ["focus", "click"]) node.addEventListener(kind, () => onpick(text));
    svg.append(node);
  }
  return svg;
}

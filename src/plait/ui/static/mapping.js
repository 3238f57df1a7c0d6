// A destination's mapping: its own transformations (README "Transformations"), edited rule
// by rule; read() gives them back as documents for the preview and for saving. The API
// checks them and names the field that is wrong (mapping[0].rules[1]...).
import { field, fill, h } from "./core.js";

const list = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);

// Each rule kind: its inputs (name, label, placeholder), from a rule's arguments and back.
const KINDS = {
  rename_event: {
    about: "Rename an event",
    inputs: [["from", "From event", "Order Done"], ["to", "To event", "Order Completed"]],
  },
  rename_property: {
    about: "Move a property",
    inputs: [["from", "From path", "properties.price_usd"], ["to", "To path", "properties.price"]],
  },
  drop_property: {
    about: "Drop properties",
    inputs: [["paths", "Paths (commas)", "properties.debug, context.ip"]],
    load: (arg) => ({ paths: [arg].flat().join(", ") }),
    save: ({ paths }) => (list(paths).length === 1 ? list(paths)[0] : list(paths)),
  },
  derive_property: {
    about: "Compute a property",
    inputs: [["name", "Path to set", "properties.revenue_cents"], ["expr", "Expression", "round(properties.revenue * 100)"]],
  },
  map_values: {
    about: "Map values",
    inputs: [["property", "Path", "properties.plan"], ["map", "Map (JSON object)", '{"pro": "Pro", "free": "Free"}'],
      ["default", "Default (JSON; empty: keep others)", '"Other"']],
    load: (arg) => ({ property: arg.property, map: JSON.stringify(arg.map ?? {}),
      default: arg.default === undefined ? "" : JSON.stringify(arg.default) }),
    save: (values) => {
      const out = { property: values.property, map: json(values.map, "map") };
      if (values.default.trim()) out.default = json(values.default, "default");
      return out;
    },
  },
  drop_event: {
    about: "Drop the event when",
    inputs: [["expr", "Expression", "event == 'Test Event'"]],
    load: (arg) => ({ expr: arg }),
    save: ({ expr }) => expr,
  },
};

function json(text, name) {
  try { return JSON.parse(text); } catch (error) { throw new Error(`${name}: not JSON (${error.message})`); }
}

function ruleEditor(rule, onRemove) {
  const [initial] = Object.keys(rule);
  const kind = h("select", {}, Object.entries(KINDS).map(([k, spec]) =>
    h("option", { value: k, selected: k === initial ? true : undefined }, `${spec.about} (${k})`)));
  const inputs = h("div", { class: "inline" });
  let controls = {};
  function draw(values) {
    const spec = KINDS[kind.value];
    controls = Object.fromEntries(spec.inputs.map(([name, , placeholder]) =>
      [name, h("input", { name, class: "mono", placeholder, value: values[name] ?? "" })]));
    fill(inputs, spec.inputs.map(([name, label]) => field(label, controls[name])));
  }
  const load = (k, arg) => (KINDS[k].load ? KINDS[k].load(arg) : { ...arg });
  draw(load(initial, rule[initial]));
  kind.addEventListener("change", () => draw({}));
  const remove = h("button", { type: "button", class: "secondary", onclick: onRemove }, "Remove");
  const element = h("div", { class: "rule" }, kind, inputs, remove);
  const renumber = (n) => {
    kind.setAttribute("aria-label", `Rule ${n}`);
    remove.setAttribute("aria-label", `Remove rule ${n}`);
  };
  const read = () => {
    const spec = KINDS[kind.value];
    const values = Object.fromEntries(Object.entries(controls).map(([name, input]) => [name, input.value]));
    return { [kind.value]: spec.save ? spec.save(values) : values };
  };
  return { element, read, renumber };
}

/** A list of editors (each made by make(doc, onRemove)), numbered in order. */
function editorList(make, empty) {
  const box = h("div");
  let items = [];
  function draw() {
    items.forEach((item, i) => item.renumber(i + 1));
    fill(box, items.length ? items.map((item) => item.element) : empty);
  }
  function add(doc) {
    const item = make(doc, () => {
      items = items.filter((x) => x !== item);
      draw();
    });
    items.push(item);
    draw();
  }
  draw();
  return { box, add, size: () => items.length, read: () => items.map((item) => item.read()) };
}

function transformationEditor(doc, onRemove) {
  const name = h("input", { name: "name", required: true, value: doc.name || "" });
  const where = h("input", { name: "where", class: "mono", value: doc.where || "", placeholder: "always" });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: doc.enabled === false ? undefined : true });
  const rules = editorList(ruleEditor, null);
  for (const rule of doc.rules || [{ rename_event: { from: "", to: "" } }]) rules.add(rule);
  const legend = h("legend");
  const addButton = h("button", { type: "button", class: "secondary", onclick: () => rules.add({ rename_event: { from: "", to: "" } }) });
  const removeButton = h("button", { type: "button", class: "secondary", onclick: onRemove });
  const element = h("fieldset", { class: "transformation" }, legend,
    h("div", { class: "inline" }, field("Name", name), field("Runs when (expression)", where), h("label", {}, "Enabled", enabled)),
    rules.box, h("p", {}, addButton, " ", removeButton));
  const renumber = (n) => {
    legend.textContent = `Transformation ${n}`;
    addButton.textContent = `Add a rule to transformation ${n}`;
    removeButton.textContent = `Remove transformation ${n}`;
  };
  const read = () => {
    const out = { name: name.value.trim(), rules: rules.read() };
    if (where.value.trim()) out.where = where.value.trim();
    if (!enabled.checked) out.enabled = false;
    return out;
  };
  return { element, read, renumber };
}

/** The editor of a destination's own transformations; ``shared`` (read-only) are those it
 *  shares with other destinations, which run too. */
export function mappingEditor(own, shared, { editable }) {
  const items = editorList(transformationEditor,
    h("p", { class: "muted" }, "No transformation of its own: it receives events as processed (in its connector's shape)."));
  own.forEach(items.add);
  const element = h("section", { "aria-label": "Mapping" },
    h("p", { class: "muted" }, "Transformations run on this destination's own copy of each event, after its filter: the other destinations receive the event unchanged."),
    editable ? items.box : h("pre", { class: "mono" }, JSON.stringify(own, null, 2)),
    editable ? h("p", {}, h("button", { type: "button", class: "secondary", onclick: () => items.add({ name: `mapping ${items.size() + 1}` }) }, "Add a transformation")) : null,
    shared.length ? h("p", { class: "muted" }, `Shared with other destinations (edit them in the workspace's transformations): ${shared.map((t) => t.name).join(", ")}.`) : null);
  return { element, read: items.read };
}

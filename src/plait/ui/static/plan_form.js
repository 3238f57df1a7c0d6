// A tracking plan as a form: its name, sources, modes, and each event's (and identify's)
// top-level properties with their type and whether they are required. It edits the plan's
// document in place and calls onChange; what it does not show (nested schemas, ranges,
// enums, per-call modes) is kept as it is, for the JSON beside it.
import { field, fill, h } from "./core.js";

const MODES = [
  ["unplanned_event", "Unplanned events", ["allow", "block"]],
  ["unplanned_property", "Unplanned properties", ["allow", "omit", "block"]],
  ["schema_violation", "Schema violations", ["allow", "omit", "block"]],
];
const TYPES = ["string", "number", "integer", "boolean", "object", "array"];

/** ``name`` listed in (or taken out of) a schema's ``required``; an empty list is left out. */
function setRequired(schema, name, on) {
  const others = (schema.required || []).filter((x) => x !== name);
  if (on) schema.required = [...others, name];
  else if (others.length) schema.required = others;
  else delete schema.required;
}

/** The form for ``plan`` (a plan's document without id and version). ``sources``: the
 *  workspace's sources ({id, name}); ``writable``: false shows it read-only. */
export function planForm(plan, { sources, writable, onChange }) {
  const disabled = writable ? undefined : true;
  const root = h("div", { class: "plan-form" });
  /** After adding or removing: drawn again, the focus back on the control named ``label``. */
  const reshaped = (label) => {
    onChange();
    draw();
    if (label) root.querySelector(`[aria-label="${CSS.escape(label)}"]`)?.focus();
  };
  // Enter in an "add" box adds (rather than submitting the plan's form).
  const onEnter = (then) => (e) => { if (e.key === "Enter") { e.preventDefault(); then(); } };

  function text(label, value, set) {
    return field(label, h("input", { value: value ?? "", disabled,
      oninput: (e) => { set(e.target.value.trim()); onChange(); } }));
  }

  function sourcesBox() {
    const chosen = new Set(plan.sources || []);
    return h("fieldset", {}, h("legend", {}, "Sources (the plan judges their messages)"),
      sources.length ? sources.map((s) => h("label", { class: "check" },
        h("input", { type: "checkbox", disabled, checked: chosen.has(s.name) || chosen.has(s.id) ? true : undefined,
          onchange: (e) => {
            const others = (plan.sources || []).filter((x) => x !== s.name && x !== s.id);
            plan.sources = e.target.checked ? [...others, s.name] : others;
            onChange();
          } }), s.name)) : h("p", { class: "muted" }, "No sources yet."));
  }

  function modesBox() {
    const modes = plan.modes || {};
    return h("fieldset", { class: "inline" }, h("legend", {}, "When a message breaks the plan"),
      MODES.map(([key, label, options]) => field(label, h("select", { disabled,
        onchange: (e) => { (plan.modes ||= {})[key] = e.target.value; onChange(); } },
      options.map((o) => h("option", { value: o, selected: (modes[key] || "allow") === o ? true : undefined }, o))))));
  }

  /** The rows of one JSON Schema's top-level properties: ``read()`` gives the schema (or
   *  nothing), ``create()`` makes it in the plan when a property is first added; ``absent``:
   *  what having no schema means. */
  function propertiesTable(caption, read, create, absent, example = "order_id") {
    const schema = read() || {};
    const props = schema.properties || {};
    const required = new Set(schema.required || []);
    const ensure = () => {
      const made = create();
      made.properties ||= {};
      return made;
    };
    const typeSelect = (name, spec) => {
      const known = spec.type === undefined || TYPES.includes(spec.type);
      return h("select", { "aria-label": `Type of ${name} (${caption})`, disabled,
        onchange: (e) => {
          if (e.target.value === "") delete ensure().properties[name].type;
          else if (e.target.value !== "other") ensure().properties[name].type = e.target.value;
          onChange();
        } },
      h("option", { value: "", selected: spec.type === undefined ? true : undefined }, "any"),
      TYPES.map((t) => h("option", { value: t, selected: spec.type === t ? true : undefined }, t)),
      known ? null : h("option", { value: "other", selected: true }, JSON.stringify(spec.type)));
    };
    const rows = Object.entries(props).map(([name, spec]) => h("tr", {},
      h("td", { class: "mono" }, name),
      h("td", {}, typeSelect(name, spec)),
      h("td", {}, h("input", { type: "checkbox", "aria-label": `${name} is required (${caption})`, disabled,
        checked: required.has(name) ? true : undefined,
        onchange: (e) => { setRequired(ensure(), name, e.target.checked); onChange(); } })),
      h("td", {}, writable ? h("button", { type: "button", class: "secondary", "aria-label": `Remove ${name} (${caption})`,
        onclick: () => {
          const s = ensure();
          delete s.properties[name];
          setRequired(s, name, false);
          reshaped(`New property (${caption})`);
        } }, "Remove") : null)));
    const adding = h("input", { "aria-label": `New property (${caption})`, placeholder: example,
      onkeydown: onEnter(() => add()) });
    const add = () => {
      const name = adding.value.trim();
      if (!name || name in (read()?.properties || {})) return;
      ensure().properties[name] = { type: "string" };
      reshaped(`New property (${caption})`);
    };
    return [
      h("table", { "aria-label": `Properties of ${caption}` },
        h("thead", {}, h("tr", {}, ["Property", "Type", "Required", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: "4", class: "muted" },
          read() ? "None planned: every one sent is unplanned." : absent)))),
      writable ? h("p", { class: "inline" }, adding,
        h("button", { type: "button", class: "secondary", onclick: add }, `Add property to ${caption}`)) : null,
    ];
  }

  function eventsBox() {
    const events = plan.events || {};
    const adding = h("input", { "aria-label": "New event", placeholder: "Order Completed",
      onkeydown: onEnter(() => add()) });
    const add = () => {
      const name = adding.value.trim();
      if (!name || name in events) return;
      plan.events = { ...events, [name]: { properties: { type: "object", properties: {} } } };
      reshaped(`New property (${name})`);
    };
    return h("fieldset", {}, h("legend", {}, "Events (track calls)"),
      plan.events === undefined ? h("p", { class: "muted" }, "No events section: track calls are not checked.") : null,
      Object.entries(events).map(([name, spec]) => h("section", { class: "planned-event", "aria-label": `Event ${name}` },
        h("h3", {}, name, " ", writable ? h("button", { type: "button", class: "secondary", "aria-label": `Remove event ${name}`,
          onclick: () => { delete plan.events[name]; reshaped("New event"); } }, "Remove") : null),
        text(`Description of ${name}`, spec.description, (v) => { if (v) spec.description = v; else delete spec.description; }),
        propertiesTable(name, () => spec.properties, () => (spec.properties ||= { type: "object" }),
          "No properties schema: every property sent is unplanned."))),
      writable ? h("p", { class: "inline" }, adding, h("button", { type: "button", onclick: add }, "Add event")) : null);
  }

  function identifyBox() {
    return h("fieldset", {}, h("legend", {}, "Identify traits"),
      propertiesTable("identify", () => plan.identify?.traits, () => ((plan.identify ||= {}).traits ||= { type: "object" }),
        "No traits schema: identify calls are not checked.", "email"));
  }

  function draw() {
    fill(root, text("Name", plan.name, (v) => { plan.name = v; }), sourcesBox(), modesBox(), eventsBox(), identifyBox());
  }
  draw();
  return root;
}

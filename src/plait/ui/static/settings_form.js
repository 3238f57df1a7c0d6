// A destination's settings as a form: one control per setting the connector declares
// (GET /api/v1/destination-types: kind, required, example, choices), kept in step with the
// settings' JSON beside it (what the API takes; a setting the form does not know stays
// there for the API to name). A masked secret left as it is keeps the stored one.
import { fill, h, uniqueId } from "./core.js";

/** ``json``: the settings' textarea. show(type) draws the type's settings; load() puts the
 *  JSON's values into them (false: the JSON is not an object). */
export function settingsForm(json) {
  const element = h("fieldset", { class: "settings-form" });
  let writers = {};  // setting name -> write(value): puts a value into its control

  const parsed = () => {
    try {
      const value = JSON.parse(json.value || "{}");
      return value && typeof value === "object" && !Array.isArray(value) ? value : null;
    } catch { return null; }
  };
  function store(name, value) {
    const settings = parsed() || {};
    if (value === undefined) delete settings[name]; else settings[name] = value;
    json.value = JSON.stringify(settings, null, 2);
  }

  function control(setting) {
    const { name, kind, example, choices, secret } = setting;
    const id = uniqueId("setting");
    const changed = () => store(name, read());
    let box, read, write;
    if (kind === "boolean" || kind === "choice") {
      const options = kind === "boolean" ? ["true", "false"] : choices;
      box = h("select", { onchange: changed }, h("option", { value: "" }, "(default)"),
        options.map((o) => h("option", { value: o }, o)));
      read = () => (box.value === "" ? undefined : kind === "boolean" ? box.value === "true" : box.value);
      write = (v) => { box.value = v === undefined ? "" : String(v); };
    } else if (kind === "json") {
      box = h("textarea", { rows: "3", class: "mono", spellcheck: "false", placeholder: `e.g. ${JSON.stringify(example)}`,
        oninput: () => {
          try { box.setCustomValidity(""); changed(); } catch (error) { box.setCustomValidity(`${name}: not JSON (${error.message})`); }
        } });
      read = () => (box.value.trim() ? JSON.parse(box.value) : undefined);
      write = (v) => { box.value = v === undefined ? "" : JSON.stringify(v); box.setCustomValidity(""); };
    } else {
      const number = kind === "number";
      box = h("input", { type: number ? "number" : secret ? "password" : "text", step: number ? "any" : undefined,
        autocomplete: secret ? "off" : undefined, placeholder: `e.g. ${example}`, oninput: changed });
      read = () => (box.value === "" ? undefined : number ? Number(box.value) : box.value);
      write = (v) => { box.value = v === undefined || v === null ? "" : String(v); };
    }
    box.id = id;
    box.setAttribute("aria-describedby", `${id}-help`);
    if (setting.required) box.required = true;
    writers[name] = write;
    const help = [setting.about, secret ? "a secret: stored masked" : ""].filter(Boolean).join("; ");
    return h("div", { class: "setting" },
      h("label", { for: id }, h("span", { class: "mono" }, name), setting.required ? " (required)" : ""),
      box, h("small", { class: "muted", id: `${id}-help` }, help));
  }

  /** Draws the settings of ``type`` (a destination-types entry); settings of another type
   *  are dropped from the JSON (the API would refuse them). */
  function show(type, { keepOthers = true } = {}) {
    writers = {};
    const settings = parsed();
    if (settings && !keepOthers) {
      const known = new Set(type.settings.map((s) => s.name));
      for (const name of Object.keys(settings)) if (!known.has(name)) delete settings[name];
      json.value = JSON.stringify(settings, null, 2);
    }
    fill(element, h("legend", {}, `Settings of ${type.type}`),
      type.settings.map(control));
    load();
  }

  /** The JSON's values into the controls, in place (nothing moves on the page). */
  function load() {
    const settings = parsed();
    if (!settings) return false;
    for (const [name, write] of Object.entries(writers)) write(settings[name]);
    return true;
  }

  return { element, show, load };
}

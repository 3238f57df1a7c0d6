// Destinations: connect and configure one (its filter and mapping previewed before and
// after on a real recent event), and its health: delivered, retrying, failed, and the
// dead letters, replayed or discarded.
import { api, errorText, field, fill, formatNumber, formatTime, h, notice, session } from "./core.js";
import { mappingEditor } from "./mapping.js";
import { settingsForm } from "./settings_form.js";

const MESSAGE_TYPES = ["track", "identify", "page", "screen", "group", "alias"];
const list = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);

export async function destinationsPage(main) {
  const { destinations } = await api("/destinations");
  fill(main, h("h1", {}, "Destinations"),
    session.can("destinations:write") ? h("p", {}, h("a", { href: "#/destinations/new", class: "button" }, "Connect a destination")) : null,
    h("table", { "aria-label": "Destinations" },
      h("thead", {}, h("tr", {}, ["Destination", "Type", "State", "Delivered", "Retrying", "Failed", "Behind", "Last answer"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, destinations.length ? destinations.map((d) => h("tr", {},
        h("td", {}, h("a", { href: `#/destinations/${encodeURIComponent(d.key)}` }, d.key)), h("td", {}, d.type),
        h("td", {}, d.enabled === false ? "disabled" : "enabled"),
        h("td", {}, formatNumber(d.status.delivered)), h("td", {}, formatNumber(d.status.queue.retrying)),
        h("td", {}, formatNumber(d.status.queue.failed)), h("td", {}, formatNumber(d.status.behind)),
        h("td", {}, d.status.last_status ?? "")))
        : h("tr", {}, h("td", { colspan: 8 }, "No destination yet.")))));
}

export async function destinationPage(main, [key, mode]) {
  if (key === "new" || mode === "edit") return editor(main, key === "new" ? null : key);
  const status = h("div", { "aria-live": "polite" });
  const body = h("div");
  async function draw() {
    const [dest, failed, retrying, mapped] = await Promise.all([
      api(`/destinations/${encodeURIComponent(key)}`),
      api(`/destinations/${encodeURIComponent(key)}/deliveries?status=failed&limit=100`),
      api(`/destinations/${encodeURIComponent(key)}/deliveries?status=retrying&limit=100`),
      session.can("governance:read") ? api(`/destinations/${encodeURIComponent(key)}/mapping`) : null,
    ]);
    const s = dest.status, writable = session.can("destinations:write");
    const card = (label, value, id) => h("div", { class: "card", "data-testid": id },
      h("div", { class: "figure" }, formatNumber(value)), h("div", { class: "label" }, label));
    const table = (name, rows) => h("table", { "aria-label": name },
      h("thead", {}, h("tr", {}, ["Message", "Type", "Attempts", "Answer", "Response", "Idempotency key"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, h("td", { class: "mono" }, r.message_id || `offset ${r.log_offset}`),
        h("td", {}, r.type || ""), h("td", {}, r.attempts), h("td", {}, r.last_status ?? ""),
        h("td", { class: "mono" }, (r.last_response || "").slice(0, 200)), h("td", { class: "mono" }, r.idempotency_key)))
        : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "None."))));
    const { status: _, ...definition } = dest;
    fill(body,
      h("div", { class: "cards" },
        card("delivered", s.delivered, "delivered"), card("retrying now", s.queue.retrying, "retrying"),
        card("waiting behind a retry", s.queue.waiting, "waiting"), card("dead letters", s.queue.failed, "failed"),
        card("filtered", s.filtered, "filtered"), card("behind the pipeline", s.behind, "behind")),
      s.last_attempt_at ? h("p", {}, `Last answer ${s.last_status ?? "(none)"} at ${formatTime(s.last_attempt_at)}`,
        s.last_response ? [": ", h("code", {}, s.last_response.slice(0, 200))] : "") : h("p", { class: "muted" }, "Nothing sent yet."),
      h("h2", {}, "Dead letters"),
      writable && failed.deliveries.length ? h("p", {},
        h("button", { type: "button", onclick: () => act("replay", { dead_letters: true }, "Dead letters queued again.") }, "Replay dead letters"), " ",
        h("button", { type: "button", class: "secondary", onclick: () => act("discard", {}, "Dead letters discarded.") }, "Discard dead letters")) : null,
      table("Dead letters", failed.deliveries),
      h("h2", {}, "Retrying"), table("Retrying", retrying.deliveries),
      h("h2", {}, "Definition"), h("pre", { "data-testid": "definition" }, JSON.stringify(definition, null, 2)),
      mapped ? [h("h2", {}, "Mapping"), mapped.own.length || mapped.shared.length
        ? h("pre", { "data-testid": "mapping" }, JSON.stringify([...mapped.own, ...mapped.shared], null, 2))
        : h("p", { class: "muted" }, "No transformation: it receives events as processed.")] : null,
      writable ? h("p", {}, h("a", { href: `#/destinations/${encodeURIComponent(key)}/edit` }, "Edit")) : null);
  }
  async function act(what, payload, done) {
    try {
      const answer = await api(`/destinations/${encodeURIComponent(key)}/${what}`, { method: "POST", body: payload });
      fill(status, notice(`${done} ${answer && answer.queued !== undefined ? `(${answer.queued})` : ""}`, "ok"));
      await draw();
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }
  fill(main, h("p", {}, h("a", { href: "#/destinations" }, "← Destinations")), h("h1", {}, key), status, body);
  await draw();
  const timer = setInterval(() => draw().catch((error) => fill(status, notice(`Could not refresh: ${errorText(error)}`))), 5000);
  return () => clearInterval(timer);
}

async function editor(main, key) {
  const mappable = session.can("governance:read");
  const [{ types }, existing, mapped] = await Promise.all([api("/destination-types"),
    key ? api(`/destinations/${encodeURIComponent(key)}`) : null,
    key && mappable ? api(`/destinations/${encodeURIComponent(key)}/mapping`) : { own: [], shared: [] }]);
  const mapping = mappingEditor(mapped.own, mapped.shared, { editable: session.can("governance:write") });
  const savedMapping = JSON.stringify(mapping.read());
  const doc = existing || { type: "webhook", settings: {} };
  const keyInput = h("input", { name: "key", required: true, value: key || "", readonly: key ? true : undefined });
  const type = h("select", { name: "type", disabled: key ? true : undefined }, types.map((t) =>
    h("option", { value: t.type, selected: t.type === doc.type ? true : undefined }, t.type)));
  const about = h("p", { class: "muted", "aria-live": "polite" });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: doc.enabled === false ? undefined : true });
  const filter = h("input", { name: "filter", class: "mono", value: doc.filter || "", placeholder: "type == 'track' and event != 'Heartbeat'" });
  const sources = h("input", { name: "sources", value: (doc.sources || []).join(", "), placeholder: "every source" });
  const audiences = h("input", { name: "audiences", value: (doc.audiences || []).join(", "), placeholder: "none (every message)" });
  const kinds = MESSAGE_TYPES.map((t) => h("input", { type: "checkbox", name: "types", value: t,
    checked: (doc.types || []).includes(t) ? true : undefined }));
  const batch = h("input", { name: "batch_size", type: "number", min: "1", value: doc.batch_size ?? "" });
  const rate = h("input", { name: "rate_limit", type: "number", min: "0", step: "any", value: doc.rate_limit ?? "" });
  const settings = h("textarea", { name: "settings", rows: "5", cols: "60", class: "mono", spellcheck: "false" });
  settings.value = JSON.stringify(doc.settings || {}, null, 2);
  // The form and the JSON are one set of settings: each control writes the JSON; JSON
  // edited by hand fills the controls again (in place).
  const form = settingsForm(settings);
  const status = h("div", { "aria-live": "polite" });
  const before = h("pre", { "data-testid": "preview-before", "aria-label": "The event" }, "—");
  const after = h("pre", { "data-testid": "preview-after", "aria-label": "What the destination receives" }, "—");
  const outcome = h("p", { "data-testid": "preview-outcome", "aria-live": "polite" });

  const describeType = (changed) => {
    const t = types.find((x) => x.type === type.value);
    about.textContent = t ? `${t.about} Batches of up to ${t.max_batch}.` : "";
    if (t) form.show(t, { keepOthers: !changed });
  };
  type.addEventListener("change", () => describeType(true));
  describeType(false);
  settings.addEventListener("change", () => {
    if (!form.load()) fill(status, notice("Settings: not a JSON object (the form shows them as before)."));
  });

  function definition() {
    let parsed;
    try { parsed = JSON.parse(settings.value || "{}"); } catch (error) { throw new Error(`settings: not JSON (${error.message})`); }
    const out = { type: type.value, enabled: enabled.checked, settings: parsed };
    if (filter.value.trim()) out.filter = filter.value.trim();
    if (list(sources.value).length) out.sources = list(sources.value);
    if (list(audiences.value).length) out.audiences = list(audiences.value);
    const chosen = kinds.filter((k) => k.checked).map((k) => k.value);
    if (chosen.length) out.types = chosen;
    if (batch.value) out.batch_size = Number(batch.value);
    if (rate.value) out.rate_limit = Number(rate.value);
    for (const keep of ["name", "retry_period", "backoff", "max_backoff"]) if (doc[keep] !== undefined) out[keep] = doc[keep];
    return out;
  }

  let older = null;  // the processed message before the one shown, to step back to
  const olderButton = h("button", { type: "button", class: "secondary", disabled: true, onclick: () => preview(older) }, "Older event");
  async function preview(offset) {
    fill(status);
    try {
      const body = { destination: { key: keyInput.value || "preview", ...definition() } };
      if (offset !== undefined) body.log_offset = offset;
      if (mappable) body.mapping = mapping.read();
      const found = await api("/destinations/preview", { method: "POST", body });
      before.textContent = JSON.stringify(found.before, null, 2);
      after.textContent = found.after ? JSON.stringify(found.after, null, 2) : "(nothing)";
      outcome.textContent = `${offset === undefined ? "The latest event" : "Event"} ${found.message_id} (${found.before.type}${found.before.event ? ` “${found.before.event}”` : ""}): ${found.outcome}.`;
      older = found.older;
      olderButton.disabled = older === null;
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }

  async function save(event) {
    event.preventDefault();
    fill(status);
    try {
      const k = keyInput.value.trim();
      const changedMapping = mappable && JSON.stringify(mapping.read()) !== savedMapping ? mapping.read() : null;
      await api(`/destinations/${encodeURIComponent(k)}`, { method: "PUT", body: definition() });
      if (changedMapping) {
        await api(`/destinations/${encodeURIComponent(k)}/mapping`, { method: "PUT", body: { mapping: changedMapping } });
      }
      location.hash = `#/destinations/${encodeURIComponent(k)}`;
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }

  fill(main, h("p", {}, h("a", { href: "#/destinations" }, "← Destinations")),
    h("h1", {}, key ? `Edit ${key}` : "Connect a destination"), status,
    h("form", { class: "panel builder", onsubmit: save, "aria-label": "Destination" },
      h("div", { class: "inline" }, field("Key", keyInput), field("Type", type), h("label", {}, "Enabled", enabled)), about,
      form.element, field("Settings (JSON)", settings),
      h("h2", {}, "Which messages"),
      field("Filter", filter), h("div", { class: "inline" }, field("Sources (names, commas)", sources), field("Audiences (keys, commas)", audiences)),
      h("fieldset", {}, h("legend", {}, "Message types (none checked: all)"),
        h("div", { class: "inline" }, kinds.map((k) => h("label", {}, k, k.value)))),
      h("div", { class: "inline" }, field("Batch size", batch), field("Rate limit (requests a second)", rate)),
      mappable ? [h("h2", {}, "Mapping"), mapping.element] : null,
      h("h2", {}, "Before and after"),
      h("p", {}, h("button", { type: "button", class: "secondary", onclick: () => preview() }, "Preview on the latest event"), " ", olderButton), outcome,
      h("div", { class: "columns" }, h("div", {}, h("h3", {}, "The event"), before), h("div", {}, h("h3", {}, "What it receives"), after)),
      h("p", {}, h("button", { type: "submit" }, "Save destination"))));
}

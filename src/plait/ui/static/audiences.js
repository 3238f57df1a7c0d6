// Audiences: the list; a builder that helps write the audience language (what has been
// seen, suggested) and previews the size and a sample as you type; an audience's
// membership over time and the destinations it syncs to.
import { api, errorText, field, fill, formatNumber, formatTime, h, notice, session } from "./core.js";
import { lineChart } from "./charts.js";
import { completion } from "./completion.js";

const WORDS = ["and", "or", "not", "performed", "at least", "at most", "exactly", "times",
  "in last 30 days", "where", "exists", "not exists", "contains", "starts with", "ends with", "in [\"\"]"];

/** What may come next in the audience language, from what has been seen (the vocabulary):
 *  a quoted name after performed / audience, else the word being typed completed. */
function suggester(vocabulary) {
  const events = vocabulary.events.map((e) => e.name);
  const properties = [...new Set(vocabulary.events.flatMap((e) => e.properties))];
  const quoted = (text) => `"${text}"`;
  // Each: what it writes, and the words it is found by (its path's last part too).
  const candidates = [
    ...events.map((n) => [`performed ${quoted(n)}`, n]),
    ...properties.map((p) => [`properties.${p}`, p]),
    ...vocabulary.traits.map((t) => [`traits.${t.key}`, t.key]),
    ...vocabulary.computed_traits.map((k) => [`computed.${k}`, k]),
    ...vocabulary.audiences.map((k) => [`audience ${quoted(k)}`, k]),
    ...WORDS.map((w) => [w]),
  ].map(([text, ...also]) => ({ label: text, text, keys: [text, ...also].map((k) => k.toLowerCase()) }));
  return (before) => {
    const name = before.match(/\b(performed|audience)\s+"([^"]*)$/);
    if (name) {
      const typed = name[2].toLowerCase();
      const names = name[1] === "performed" ? events : vocabulary.audiences;
      return { from: before.length - name[2].length, items: names.filter((n) => n.toLowerCase().includes(typed))
        .map((n) => ({ label: n, text: `${n}"` })) };
    }
    const word = before.match(/[A-Za-z_][\w.]*$/);
    if (!word || (before.split('"').length - 1) % 2) return { from: 0, items: [] };  // none inside a string
    const typed = word[0].toLowerCase();
    return { from: before.length - word[0].length, items: candidates.filter((c) => c.text.toLowerCase() !== typed
      && c.keys.some((k) => k.startsWith(typed))) };
  };
}

export async function audiencesPage(main) {
  const { audiences } = await api("/audiences");
  fill(main, h("h1", {}, "Audiences"),
    session.can("audiences:write") ? h("p", {}, h("a", { href: "#/audiences/new", class: "button" }, "New audience")) : null,
    h("table", { "aria-label": "Audiences" },
      h("thead", {}, h("tr", {}, ["Audience", "Name", "Members", "Definition"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, audiences.length ? audiences.map((a) => h("tr", {},
        h("td", {}, h("a", { href: `#/audiences/${encodeURIComponent(a.key)}` }, a.key)), h("td", {}, a.name || ""),
        h("td", { "data-testid": `size-${a.key}` }, formatNumber(a.size)), h("td", { class: "mono" }, a.definition)))
        : h("tr", {}, h("td", { colspan: 4 }, "No audience yet.")))));
}

export async function audiencePage(main, [key, mode]) {
  if (key === "new" || mode === "edit") return builder(main, key === "new" ? null : key);
  const [audience, { history }, { destinations }] = await Promise.all([
    api(`/audiences/${encodeURIComponent(key)}`),
    api(`/audiences/${encodeURIComponent(key)}/history?limit=50`),
    api("/destinations"),
  ]);
  const syncs = destinations.filter((d) => (d.audiences || []).includes(key));
  const days = audience.by_day;
  const from = days.length ? Date.parse(`${days[0].day}T00:00:00Z`) : Date.now();
  // Every day from the first to today, so quiet days show as zero.
  const span = days.length ? Math.min(366, Math.floor((Date.now() - from) / 86_400_000) + 1) : 0;
  const byDay = Object.fromEntries(days.map((d) => [d.day, d]));
  const series = (field) => Array.from({ length: span }, (_, i) =>
    byDay[new Date(from + i * 86_400_000).toISOString().slice(0, 10)]?.[field] || 0);
  fill(main, h("p", {}, h("a", { href: "#/audiences" }, "← Audiences")),
    h("h1", {}, audience.name || key, " ", h("span", { class: "badge" }, key)),
    h("div", { class: "cards" },
      h("div", { class: "card", "data-testid": "audience-size" }, h("div", { class: "figure" }, formatNumber(audience.size)),
        h("div", { class: "label" }, "members now"))),
    h("h2", {}, "Definition"), h("pre", { "data-testid": "definition" }, audience.definition),
    session.can("audiences:write") ? h("p", {}, h("a", { href: `#/audiences/${encodeURIComponent(key)}/edit` }, "Edit")) : null,
    h("h2", {}, "Membership over time"),
    span ? lineChart({ title: "Entries and exits a day", from, bucketMs: 86_400_000,
      series: [{ name: "entered", counts: series("entered") }, { name: "exited", counts: series("exited") }] })
      : h("p", { class: "muted" }, "Nobody has entered yet."),
    h("h2", {}, "Syncs to"),
    syncs.length ? h("ul", { "data-testid": "syncs" }, syncs.map((d) => h("li", {},
      h("a", { href: `#/destinations/${encodeURIComponent(d.key)}` }, d.key), ` (${d.type})`)))
      : h("p", { class: "muted", "data-testid": "syncs" }, "No destination receives this audience; add it to a destination's audiences."),
    h("h2", {}, "Latest changes"),
    h("table", { "aria-label": "Latest changes" },
      h("thead", {}, h("tr", {}, ["Profile", "Change", "At", "Why"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, history.map((c) => h("tr", {},
        h("td", {}, h("a", { href: `#/profiles/${encodeURIComponent(c.profile_id)}` }, c.profile_id)),
        h("td", {}, c.change), h("td", {}, formatTime(c.at)), h("td", {}, c.reason || ""))))));
}

async function builder(main, key) {
  const [existing, vocabulary] = await Promise.all([
    key ? api(`/audiences/${encodeURIComponent(key)}`) : null, api("/audiences/vocabulary")]);
  const keyInput = h("input", { name: "key", required: true, pattern: "[a-z][a-z0-9_]*", value: key || "",
    readonly: key ? true : undefined, "aria-describedby": "key-help" });
  const name = h("input", { name: "name", value: existing?.name || "" });
  const definition = h("textarea", { name: "definition", rows: "6", cols: "70", spellcheck: "false",
    class: "mono", "aria-describedby": "definition-help" });
  definition.value = existing?.definition || "";
  const emit = h("select", { name: "emit" }, ["identify", "track", "both", "none"].map((v) =>
    h("option", { value: v, selected: (existing?.emit || "identify") === v ? true : undefined }, v)));
  const preview = h("div", { "aria-live": "polite", "data-testid": "preview" });
  const status = h("div", { "aria-live": "polite" });

  function insert(text) {
    const { selectionStart: a, selectionEnd: b, value } = definition;
    const before = value.slice(0, a), pad = before && !/\s$/.test(before) ? " " : "";
    definition.value = before + pad + text + value.slice(b);
    definition.focus();
    definition.selectionStart = definition.selectionEnd = a + pad.length + text.length;
    schedule();
  }
  const chip = (label, text) => h("button", { type: "button", class: "secondary chip", onclick: () => insert(text),
    "aria-label": `Insert ${text}` }, label);
  const events = vocabulary.events;
  const suggestions = h("div", { class: "panel suggestions", "aria-label": "Suggestions" },
    h("h2", {}, "Seen in your data"),
    h("h3", {}, "Events"), events.length ? events.map((e) => chip(`${e.name} (${formatNumber(e.count)})`, `performed "${e.name}"`)) : h("p", { class: "muted" }, "No track event yet."),
    events.some((e) => e.properties.length) ? [h("h3", {}, "Their properties (after where)"),
      [...new Set(events.flatMap((e) => e.properties))].slice(0, 40).map((p) => chip(p, `properties.${p}`))] : null,
    h("h3", {}, "Traits"), vocabulary.traits.length ? vocabulary.traits.map((t) => chip(t.key, `traits.${t.key}`)) : h("p", { class: "muted" }, "No trait yet."),
    vocabulary.computed_traits.length ? [h("h3", {}, "Computed traits"), vocabulary.computed_traits.map((k) => chip(k, `computed.${k}`))] : null,
    vocabulary.audiences.length ? [h("h3", {}, "Audiences"), vocabulary.audiences.map((k) => chip(k, `audience "${k}"`))] : null,
    h("h3", {}, "Words"), ["and", "or", "not", "at least 2 times", "in last 30 days", "where", "exists", "in [\"\"]"].map((w) => chip(w, w)));

  let timer = null, asked = 0;
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(run, 350);
  }
  async function run() {
    const text = definition.value.trim();
    const mine = ++asked;  // only the latest answer is shown
    if (!text) { fill(preview, h("p", { class: "muted" }, "Write a definition to see who is in it.")); return; }
    try {
      await api("/audiences/parse", { method: "POST", body: { definition: text } });
      fill(preview, h("p", { class: "muted" }, "Counting…"));
      const found = await api("/audiences/preview", { method: "POST", body: { definition: text } });
      if (mine !== asked) return;
      fill(preview, h("p", {}, h("strong", { "data-testid": "preview-size" }, formatNumber(found.size)),
        ` of ${formatNumber(found.profiles)} profiles${found.estimated ? " (estimated from a sample)" : ""}, counted in ${found.took_ms} ms.`),
      found.sample.length ? h("ul", { "aria-label": "Sample" }, found.sample.map((p) => h("li", {},
        h("a", { href: `#/profiles/${encodeURIComponent(p.profile_id)}` }, p.profile_id),
        p.traits?.email ? ` ${p.traits.email}` : ""))) : null);
    } catch (error) {
      if (mine !== asked) return;
      fill(preview, notice(error.status === 400 && error.field === "definition" ? `Not yet right: ${error.message}` : errorText(error)));
    }
  }
  definition.addEventListener("input", schedule);
  const completions = completion(definition, suggester(vocabulary), schedule);

  async function save(event) {
    event.preventDefault();
    try {
      const k = keyInput.value.trim();
      await api(`/audiences/${encodeURIComponent(k)}`, { method: "PUT",
        body: { name: name.value || undefined, definition: definition.value, emit: emit.value } });
      location.hash = `#/audiences/${encodeURIComponent(k)}`;
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }

  fill(main, h("p", {}, h("a", { href: "#/audiences" }, "← Audiences")),
    h("h1", {}, key ? `Edit ${key}` : "New audience"), status,
    h("div", { class: "columns" },
      h("form", { class: "panel builder", onsubmit: save, "aria-label": "Audience" },
        field("Key", keyInput), h("p", { id: "key-help", class: "muted" }, "Lower-case letters, digits and _; it names the trait or event sent."),
        field("Name", name), h("div", { class: "completing" }, field("Definition", definition), completions),
        h("p", { id: "definition-help", class: "muted" }, 'For example: performed "Order Completed" at least 2 times in last 30 days and traits.plan = "pro". Completions appear as you type: ↓ ↑ to choose, Enter to take, Escape to close.'),
        field("Send as", emit),
        h("h2", {}, "Preview"), preview,
        h("p", {}, h("button", { type: "submit" }, "Save audience"))),
      suggestions));
  await run();
  return () => clearTimeout(timer);
}

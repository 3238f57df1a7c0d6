// Sources: list and create; a source's write keys (new, rotate, revoke), ready snippets,
// and the live debugger that streams its events as they arrive.
import { api, errorText, field, fill, formatTime, h, notice, session } from "./core.js";

const TYPES = ["javascript", "python", "node", "http", "server", "webhook", "pixel", "ios",
  "android", "react-native", "go", "java", "ruby", "php", "file", "database"];

export async function sourcesPage(main) {
  const { sources } = await api("/sources");
  const status = h("div", { "aria-live": "polite" });
  const rows = sources.map((s) => h("tr", {},
    h("td", {}, h("a", { href: `#/sources/${encodeURIComponent(s.id)}` }, s.name)),
    h("td", {}, s.type), h("td", {}, s.enabled ? "enabled" : "disabled"),
    h("td", { class: "mono" }, s.id)));
  fill(main, h("h1", {}, "Sources"), status,
    session.can("sources:write") ? createForm(status) : null,
    h("table", { "aria-label": "Sources" },
      h("thead", {}, h("tr", {}, ["Name", "Type", "State", "Id"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 4 }, "No source yet.")))));
}

function createForm(status) {
  const name = h("input", { name: "name", required: true });
  const type = h("select", { name: "type" }, TYPES.map((t) => h("option", { value: t }, t)));
  async function create(event) {
    event.preventDefault();
    try {
      const made = await api("/sources", { method: "POST", body: { name: name.value, type: type.value } });
      sessionStorage.setItem(`plait.key.${made.source.id}`, made.write_key);  // shown once
      location.hash = `#/sources/${encodeURIComponent(made.source.id)}`;
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }
  return h("form", { class: "inline panel", onsubmit: create, "aria-label": "New source" },
    field("Name", name), field("Type", type), h("button", { type: "submit" }, "Create source"));
}

export async function sourcePage(main, [ref]) {
  const source = await api(`/sources/${encodeURIComponent(ref)}`);
  const status = h("div", { "aria-live": "polite" });
  const keysPanel = h("section", { "aria-labelledby": "keys-title" });
  const snippetsPanel = h("section", { "aria-labelledby": "snippets-title" });
  // A key's secret is shown once, when made; the snippets use it while this page is open.
  let secret = sessionStorage.getItem(`plait.key.${source.id}`);
  sessionStorage.removeItem(`plait.key.${source.id}`);

  async function drawKeys() {
    const { write_keys: keys } = await api(`/sources/${encodeURIComponent(source.id)}`);
    const writable = session.can("sources:write");
    fill(keysPanel, h("h2", { id: "keys-title" }, "Write keys"),
      secret ? h("p", { class: "notice ok", role: "status" }, "New write key (shown once): ",
        h("code", { "data-testid": "new-key" }, secret)) : null,
      h("table", { "aria-label": "Write keys" },
        h("thead", {}, h("tr", {}, ["Key", "Created", "State", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, keys.map((k) => h("tr", {},
          h("td", { class: "mono" }, `${k.hint}…`), h("td", {}, formatTime(k.created_at)),
          h("td", {}, k.revoked_at ? "revoked" : "active"),
          h("td", {}, writable && !k.revoked_at ? h("button", { type: "button", class: "secondary",
            "aria-label": `Revoke key ${k.hint}`, onclick: () => act(() =>
              api(`/sources/${encodeURIComponent(source.id)}/keys/${k.id}`, { method: "DELETE" })) }, "Revoke") : null))))),
      writable ? h("p", {},
        h("button", { type: "button", onclick: () => newKey(false) }, "New key"), " ",
        h("button", { type: "button", class: "secondary", onclick: () => newKey(true) }, "Rotate keys")) : null);
    drawSnippets();
  }

  async function act(call) {
    fill(status);
    try {
      await call();
      await drawKeys();
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }

  function newKey(rotate) {
    return act(async () => {
      const made = await api(`/sources/${encodeURIComponent(source.id)}/keys`, { method: "POST", body: { rotate } });
      secret = made.write_key;
    });
  }

  function drawSnippets() {
    const key = secret || "YOUR_WRITE_KEY";
    const host = location.origin;
    const snippets = {
      "analytics.js": `import { AnalyticsBrowser } from "@segment/analytics-next";\n\nexport const analytics = AnalyticsBrowser.load(\n  { writeKey: "${key}", cdnURL: "${host}" },\n  { integrations: { "Segment.io": { apiHost: "${location.host}/v1", protocol: "${location.protocol.replace(":", "")}" } } },\n);\nanalytics.page();`,
      Python: `# pip install segment-analytics-python\nimport segment.analytics as analytics\n\nanalytics.write_key = "${key}"\nanalytics.host = "${host}"\nanalytics.track("user-1", "Order Completed", {"revenue": 42})\nanalytics.flush()`,
      Node: `// npm install @segment/analytics-node\nimport { Analytics } from "@segment/analytics-node";\n\nconst analytics = new Analytics({ writeKey: "${key}", host: "${host}" });\nanalytics.track({ userId: "user-1", event: "Order Completed", properties: { revenue: 42 } });`,
    };
    fill(snippetsPanel, h("h2", { id: "snippets-title" }, "Snippets"),
      secret ? null : h("p", { class: "muted" }, "Put one of this source's write keys in place of YOUR_WRITE_KEY (a key is shown only when it is made)."),
      Object.entries(snippets).map(([name, text]) => {
        const copied = h("span", { class: "muted", "aria-live": "polite" });
        return h("div", { class: "snippet panel" }, h("h3", {}, name),
          h("pre", { "data-testid": `snippet-${name}` }, text),
          h("button", { type: "button", class: "secondary", "aria-label": `Copy the ${name} snippet`,
            onclick: async () => {
              try { await navigator.clipboard.writeText(text); copied.textContent = "Copied."; }
              catch (error) { copied.textContent = `Copy failed: ${error.message}`; }
            } }, "Copy"), copied);
      }));
  }

  const live = liveDebugger(source);
  fill(main, h("p", {}, h("a", { href: "#/sources" }, "← Sources")),
    h("h1", {}, source.name, " ", h("span", { class: "badge" }, source.type)), status,
    keysPanel, live.element, snippetsPanel);
  await drawKeys();
  return live.stop;
}

/** Segment's live debugger: this source's events as they arrive, newest first. */
function liveDebugger(source) {
  const type = h("select", { name: "type" }, ["", "track", "identify", "page", "screen", "group", "alias"]
    .map((t) => h("option", { value: t }, t || "any type")));
  const event = h("input", { name: "event", placeholder: "Order* or *Viewed" });
  const user = h("input", { name: "user", placeholder: "userId or anonymousId" });
  const pause = h("button", { type: "button", class: "secondary", "aria-pressed": "false" }, "Pause");
  const list = h("ol", { "aria-label": "Incoming events", "data-testid": "debugger-events" });
  const detail = h("pre", { "data-testid": "debugger-detail", tabindex: "0", "aria-label": "The selected event" });
  const state = h("p", { class: "muted", "aria-live": "polite" }, "Listening…");
  const hint = "Events appear here as they arrive; choose one to see it whole.";
  detail.textContent = hint;
  let after = "end", seen = 0, paused = false, timer = null, running = false, stopped = false;

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
  });
  for (const control of [type, event, user]) control.addEventListener("change", restart);

  function restart() {  // a new filter applies from where the debugger is
    fill(list);
    detail.textContent = hint;
    seen = 0;
  }

  function query() {
    const params = new URLSearchParams({ after, limit: "200", source: source.id });
    if (type.value) params.append("type", type.value);
    if (event.value.trim()) params.append("event", event.value.trim());
    if (user.value.trim()) params.append("user", user.value.trim());
    return params;
  }

  function label(message) {
    const name = message.event || message.name || (message.traits?.email ? `email=${message.traits.email}` : "");
    const who = message.userId || message.anonymousId || "";
    return `${message.type}${name ? ` · ${name}` : ""}${who ? ` · ${who}` : ""}`;
  }

  function show(item, button) {
    for (const b of list.querySelectorAll("button[aria-pressed='true']")) b.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-pressed", "true");
    detail.textContent = JSON.stringify(item.message, null, 2);
  }

  async function poll() {
    if (stopped || running) return;
    running = true;
    try {
      if (!paused) {
        const data = await api(`/events?${query()}`);
        after = String(data.next_after);
        for (const item of data.events) {
          const button = h("button", { type: "button", "aria-pressed": "false" },
            h("span", {}, label(item.message)), " ",
            h("span", { class: "muted" }, new Date(item.received_at / 1000).toISOString().slice(11, 19)));
          button.addEventListener("click", () => show(item, button));
          list.prepend(h("li", {}, button));
          seen += 1;
        }
        while (list.children.length > 200) list.lastChild.remove();
        state.textContent = paused ? "Paused." : `Listening… ${seen} event${seen === 1 ? "" : "s"} since opened.`;
      }
    } catch (error) {
      state.textContent = `The debugger could not read events: ${errorText(error)}`;
    } finally {
      running = false;
      if (!stopped) timer = setTimeout(poll, 1000);
    }
  }

  poll();
  const element = h("section", { "aria-labelledby": "debugger-title" },
    h("h2", { id: "debugger-title" }, "Live debugger"),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); restart(); } , "aria-label": "Filter events" },
      field("Type", type), field("Event", event), field("User", user), pause), state,
    h("div", { class: "debugger" }, list, detail));
  return { element, stop: () => { stopped = true; clearTimeout(timer); } };
}

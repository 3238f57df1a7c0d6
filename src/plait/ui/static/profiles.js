// Profiles: search by any identifier; a profile's traits with their provenance, computed
// traits, audiences, consent, its event timeline and its identity graph with the merges
// that made it, from which it can be unmerged.
import { api, errorText, field, fill, formatTime, h, notice, request, session } from "./core.js";
import { identityGraph } from "./graph.js";

const space = () => `/v1/spaces/${encodeURIComponent(session.me.workspace.slug)}/collections/users/profiles`;

/** The Profile API (Segment's paths). */
const profileApi = (path) => request(space() + path);

export async function profilesPage(main) {
  const query = h("input", { name: "q", type: "search", required: true,
    placeholder: "ada@example.com, user_id:u-1, +33…", "aria-describedby": "search-help" });
  const results = h("div", { "aria-live": "polite" });
  async function search(event) {
    event?.preventDefault();
    const text = query.value.trim();
    if (!text) return;
    sessionStorage.setItem("plait.profiles.q", text);
    // type:value names the identifier; anything else is matched under every type.
    const param = /^[a-z_]+:./.test(text) ? "identifier" : "q";
    try {
      const { data } = await profileApi(`?${new URLSearchParams({ [param]: text, limit: "50" })}`);
      fill(results, data.length ? h("table", { "aria-label": "Profiles found" },
        h("thead", {}, h("tr", {}, ["Profile", "Identifiers", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, data.map((p) => h("tr", {},
          h("td", {}, h("a", { href: `#/profiles/${encodeURIComponent(p.segment_id)}` }, p.segment_id)),
          h("td", {}, p.external_ids.map((i) => `${i.type}:${i.id}`).join(", ")),
          h("td", {}, p.created_at)))))
        : h("p", {}, `No profile has the identifier ${text}.`));
    } catch (error) {
      fill(results, notice(errorText(error)));
    }
  }
  fill(main, h("h1", {}, "Profiles"),
    h("form", { class: "inline panel", role: "search", onsubmit: search, "aria-label": "Find a profile" },
      field("Identifier", query), h("button", { type: "submit" }, "Search")),
    h("p", { id: "search-help", class: "muted" },
      "An email, phone, user id, anonymous id or external id; type:value (email:ada@example.com) to name the type."),
    results);
  query.value = sessionStorage.getItem("plait.profiles.q") || "";
  if (query.value) await search();
  query.focus();
}

export async function profilePage(main, [id]) {
  const ref = `segment_id:${id}`;
  const enc = encodeURIComponent(ref);
  const [traits, explain, memberships, consent, events, sources] = await Promise.all([
    profileApi(`/${enc}/traits?verbose=true&limit=200`),
    api(`/profiles/${enc}/explain`),
    api(`/profiles/${enc}/audiences`),
    profileApi(`/${enc}/consent`),
    profileApi(`/${enc}/events?limit=100`),
    api("/sources"),
  ]);
  const sourceName = Object.fromEntries(sources.sources.map((s) => [s.id, s.name]));
  const picked = h("p", { class: "muted", "aria-live": "polite", "data-testid": "graph-picked" },
    "Focus or click an identifier or a link to see where it came from.");
  const status = h("div", { "aria-live": "polite" });

  const rows = (items, cols) => h("tbody", {}, items.length ? items : h("tr", {}, h("td", { colspan: cols, class: "muted" }, "None.")));
  const head = (...names) => h("thead", {}, h("tr", {}, names.map((t) => h("th", { scope: "col" }, t))));
  const json = (v) => (typeof v === "string" ? v : JSON.stringify(v));

  fill(main,
    h("p", {}, h("a", { href: "#/profiles" }, "← Profiles")),
    h("h1", {}, "Profile ", h("span", { class: "mono", "data-testid": "profile-id" }, explain.profile_id)),
    status,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "traits-title" },
        h("h2", { id: "traits-title" }, "Traits"),
        h("table", { "aria-label": "Traits", "data-testid": "traits" }, head("Trait", "Value", "Set by", "At"),
          rows(Object.entries(traits.traits).map(([k, t]) => h("tr", {},
            h("th", { scope: "row" }, k), h("td", {}, json(t.value)),
            h("td", {}, sourceName[t.source_id] || t.source_id, h("br"), h("span", { class: "muted mono" }, t.message_id || "")),
            h("td", {}, t.updated_at))), 4)),
        h("h2", {}, "Computed traits"),
        h("table", { "aria-label": "Computed traits" }, head("Trait", "Value"),
          rows(Object.entries(memberships.computed_traits).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, json(v)))), 2)),
        h("h2", {}, "Audiences"),
        h("table", { "aria-label": "Audiences", "data-testid": "audiences" }, head("Audience", "Entered"),
          rows(memberships.audiences.map((a) => h("tr", {}, h("td", {}, h("a", { href: `#/audiences/${encodeURIComponent(a.key)}` }, a.key)),
            h("td", {}, formatTime(a.entered_at)))), 2)),
        h("h2", {}, "Consent"),
        h("table", { "aria-label": "Consent" }, head("Category", "Allowed", "Since"),
          rows(Object.entries(consent.consent.categories).map(([c, v]) => h("tr", {}, h("th", { scope: "row" }, c),
            h("td", {}, v.allowed ? "yes" : "no"), h("td", {}, formatTime(v.timestamp)))), 3))),
      h("section", { "aria-labelledby": "graph-title" },
        h("h2", { id: "graph-title" }, "Identity graph"),
        identityGraph(explain, (text) => { picked.textContent = text; }), picked,
        h("table", { "aria-label": "Identifiers", "data-testid": "identifiers" }, head("Identifier", "First seen", "Message"),
          rows(explain.identifiers.map((i) => h("tr", {}, h("td", { class: "mono" }, `${i.type}:${i.value}`),
            h("td", {}, formatTime(i.first_seen)), h("td", { class: "mono" }, i.message_id))), 3)),
        h("h2", {}, "Merges"),
        h("table", { "aria-label": "Merge lineage", "data-testid": "lineage" }, head("What", "Profiles", "Message", "At"),
          rows(explain.lineage.map((m) => h("tr", {}, h("td", {}, m.kind), h("td", { class: "mono" }, `${m.profile_id} ← ${m.other_id}`),
            h("td", { class: "mono" }, m.message_id || m.reason || ""), h("td", {}, formatTime(m.timestamp)))), 4)),
        session.can("profiles:write") ? unmergeForm(explain, id, status) : null)),
    h("section", { "aria-labelledby": "timeline-title" },
      h("h2", { id: "timeline-title" }, `Timeline (${events.data.length}${events.cursor?.has_more ? "+" : ""} events, newest first)`),
      h("ol", { class: "timeline", "data-testid": "timeline" }, events.data.map((e) => h("li", {},
        h("details", {}, h("summary", {}, `${e.timestamp} · ${e.type}${e.event ? ` · ${e.event}` : ""} · ${sourceName[e.source_id] || e.source_id}`),
          h("pre", {}, JSON.stringify(e, null, 2))))))));
}

function unmergeForm(explain, id, status) {
  const options = explain.identifiers.map((i) => h("option", { value: `${i.type}:${i.value}` }, `${i.type}:${i.value}`));
  const identifier = h("select", { name: "identifier" }, options);
  const linked = h("select", { name: "linked_to" }, h("option", { value: "" }, "every link (split it off)"),
    explain.identifiers.map((i) => h("option", { value: `${i.type}:${i.value}` }, `${i.type}:${i.value}`)));
  const reason = h("input", { name: "reason", maxlength: "500", placeholder: "why (kept in the lineage)" });
  async function unmerge(event) {
    event.preventDefault();
    const body = { identifier: identifier.value, reason: reason.value };
    if (linked.value) body.linked_to = linked.value;
    try {
      const result = await api(`/profiles/${encodeURIComponent(`segment_id:${id}`)}/unmerge`, { method: "POST", body });
      // The messages were resolved again: they now belong to these profiles (new ids).
      fill(status, h("p", { class: "notice ok", role: "status" },
        `Unmerged: ${result.messages} messages resolved again, now in ${result.profiles.length} profile${result.profiles.length === 1 ? "" : "s"}: `,
        result.profiles.map((p, n) => [n ? ", " : "", h("a", { href: `#/profiles/${encodeURIComponent(p)}` }, p)])));
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }
  return h("form", { class: "panel", onsubmit: unmerge, "aria-label": "Unmerge" },
    h("h2", {}, "Unmerge"),
    h("p", { class: "muted" }, "Take an identifier out of this person (it is never used to join again), or only one of its links (the two are never joined again); the profile's messages are then resolved again without it."),
    h("div", { class: "inline" }, field("Identifier", identifier), field("Link to remove", linked), field("Reason", reason),
      h("button", { type: "submit" }, "Unmerge")));
}

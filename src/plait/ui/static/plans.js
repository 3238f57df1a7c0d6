// Tracking plans: view and edit a plan (JSON, checked whole by the API), violations by
// event and by property with their trend (the last 24 hours against the 24 before), and
// the quarantine, inspected and replayed.
import { api, errorText, field, fill, formatNumber, formatTime, h, notice, session } from "./core.js";
import { planForm } from "./plan_form.js";

const DAY = 86_400_000;
const TEMPLATE = { name: "Main plan", sources: [], modes: { unplanned_event: "allow", unplanned_property: "allow", schema_violation: "block" },
  events: { "Order Completed": { properties: { type: "object", required: ["revenue"], properties: { revenue: { type: "number", minimum: 0 } } } } } };

export async function plansPage(main) {
  const status = h("div", { "aria-live": "polite" });
  const [{ tracking_plans: plans }, byEvent, byProperty, before, beforeProps, quarantine] = await Promise.all([
    api("/tracking-plans"), ...counts(Date.now()), api("/quarantine?limit=100")]);
  const writable = session.can("governance:write");

  function trendTable(name, now, earlier, keyOf, columns) {
    const previous = Object.fromEntries(earlier.counts.map((c) => [keyOf(c), c.violations]));
    return h("table", { "aria-label": name },
      h("thead", {}, h("tr", {}, [...columns.map(([t]) => t), "Last 24 h", "Trend", "Last seen"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, now.counts.length ? now.counts.map((c) => {
        const was = previous[keyOf(c)] || 0, change = c.violations - was;
        return h("tr", {}, columns.map(([, get]) => h("td", {}, get(c))),
          h("td", {}, formatNumber(c.violations)),
          h("td", { "aria-label": `${change >= 0 ? "up" : "down"} ${Math.abs(change)} from the day before` },
            change > 0 ? `▲ ${formatNumber(change)}` : change < 0 ? `▼ ${formatNumber(-change)}` : "="),
          h("td", {}, formatTime(c.last_seen)));
      }) : h("tr", {}, h("td", { colspan: columns.length + 3, class: "muted" }, "No violation in the last 24 hours."))));
  }

  const picked = new Set();
  async function replay(offsets) {
    try {
      const result = await api("/quarantine/replay", { method: "POST", body: offsets ? { offsets } : {} });
      await plansPage(main);  // drawn again with what is left
      fill(main.querySelector("[data-testid=plans-status]"), notice(`Replayed ${result.replayed}: ${result.passed} passed, ${result.blocked} still blocked.`, "ok"));
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }

  fill(main, h("h1", {}, "Tracking plans"), h("div", { "data-testid": "plans-status", "aria-live": "polite" }), status,
    h("table", { "aria-label": "Tracking plans" },
      h("thead", {}, h("tr", {}, ["Plan", "Name", "Sources", "Version", "Events"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, plans.length ? plans.map((p) => h("tr", {},
        h("td", {}, h("a", { href: `#/plans/${encodeURIComponent(p.id)}` }, p.id)), h("td", {}, p.name || ""),
        h("td", {}, (p.sources || []).join(", ")), h("td", {}, p.version ?? ""), h("td", {}, Object.keys(p.events || {}).length)))
        : h("tr", {}, h("td", { colspan: 5 }, "No plan yet.")))),
    writable ? h("p", {}, h("a", { href: "#/plans/new", class: "button" }, "New plan")) : null,
    h("h2", {}, "Violations by event"),
    trendTable("Violations by event", byEvent, before, (c) => `${c.event_type}|${c.event_name}`,
      [["Type", (c) => c.event_type], ["Event", (c) => c.event_name || ""]]),
    h("h2", {}, "Violations by property"),
    trendTable("Violations by property", byProperty, beforeProps, (c) => `${c.event_type}|${c.event_name}|${c.field}`,
      [["Event", (c) => c.event_name || c.event_type], ["Property", (c) => c.field]]),
    h("h2", {}, `Quarantine (${formatNumber(quarantine.total)})`),
    writable && quarantine.total ? h("p", {},
      h("button", { type: "button", onclick: () => replay([...picked]), "data-testid": "replay-selected" }, "Replay selected"), " ",
      h("button", { type: "button", class: "secondary", onclick: () => replay(null) }, "Replay all")) : null,
    h("table", { "aria-label": "Quarantine" },
      h("thead", {}, h("tr", {}, ["", "Message", "Plan", "Why", "When"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, quarantine.messages.length ? quarantine.messages.map((q) => {
        const box = h("input", { type: "checkbox", "aria-label": `Select ${q.message.messageId}` });
        box.addEventListener("change", () => (box.checked ? picked.add(q.log_offset) : picked.delete(q.log_offset)));
        return h("tr", {}, h("td", {}, writable ? box : null),
          h("td", {}, h("details", {}, h("summary", {}, `${q.message.type} · ${q.message.event || q.message.name || ""} · ${q.message.messageId}`),
            h("pre", {}, JSON.stringify(q.message, null, 2)))),
          h("td", {}, `${q.plan_id} v${q.plan_version}`), h("td", {}, q.reason), h("td", {}, formatTime(q.created_at)));
      }) : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Nothing is quarantined.")))));
}

/** Violation counts by event and by property: the last day, then the day before. */
function counts(now) {
  const window = (group, since, until) => api(`/violations?group_by=${group}&since=${since}&until=${until}`);
  return [window("event", now - DAY, now + 1), window("property", now - DAY, now + 1),
    window("event", now - 2 * DAY, now - DAY), window("property", now - 2 * DAY, now - DAY)];
}

export async function planPage(main, [id]) {
  const isNew = id === "new";
  const writable = session.can("governance:write");
  const [found, lint, { sources }] = await Promise.all([
    isNew ? null : api(`/tracking-plans/${encodeURIComponent(id)}`),
    isNew || !writable ? null : api(`/tracking-plans/${encodeURIComponent(id)}/lint`),
    api("/sources")]);
  const idInput = h("input", { name: "id", required: true, value: isNew ? "" : id, readonly: isNew ? undefined : true });
  const text = h("textarea", { name: "plan", rows: "22", cols: "80", class: "mono", spellcheck: "false", readonly: writable ? undefined : true });
  const { id: _, version: __, ...body } = found?.plan || structuredClone(TEMPLATE);
  text.value = JSON.stringify(body, null, 2);
  const status = h("div", { "aria-live": "polite" });
  // The form and the JSON are one plan: the form rewrites the JSON; JSON edited by hand
  // (and valid) draws the form again.
  const formBox = h("div", {});
  const drawForm = (plan) => fill(formBox, planForm(plan, { sources, writable,
    onChange: () => { text.value = JSON.stringify(plan, null, 2); } }));
  drawForm(body);
  text.addEventListener("change", () => {
    try { drawForm(JSON.parse(text.value)); fill(status); } catch (error) {
      fill(status, notice(`Not JSON: ${error.message} (the form shows the plan before)`));
    }
  });
  async function save(event) {
    event.preventDefault();
    fill(status);
    let plan;
    try { plan = JSON.parse(text.value); } catch (error) { fill(status, notice(`Not JSON: ${error.message}`)); return; }
    try {
      const saved = await api(`/tracking-plans/${encodeURIComponent(idInput.value.trim())}`, { method: "PUT", body: plan });
      fill(status, notice(`Saved as version ${saved.plan.version}.`, "ok"));
      if (isNew) location.hash = `#/plans/${encodeURIComponent(saved.plan.id)}`;
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }
  fill(main, h("p", {}, h("a", { href: "#/plans" }, "← Tracking plans")),
    h("h1", {}, isNew ? "New tracking plan" : `Plan ${id}`, found ? [" ", h("span", { class: "badge", "data-testid": "plan-version" }, `version ${found.plan.version}`)] : null),
    h("form", { class: "panel builder", onsubmit: save, "aria-label": "Tracking plan" },
      // Held at the top: the form drawn again (after JSON edited by hand) never moves it.
      h("div", { class: "actions" }, h("div", { class: "inline" }, field("Plan id", idInput),
        writable ? h("button", { type: "submit" }, "Save plan") : null), status),
      formBox, field("Plan (JSON, as in the workspace file)", text)),
    lint && lint.findings.length ? [h("h2", {}, "Naming"), h("ul", { "aria-label": "Naming findings" }, lint.findings.map((f) =>
      h("li", {}, `${f.field}: "${f.name}" is not ${f.expected}`)))] : null,
    found?.versions?.length ? [h("h2", {}, "Versions"), h("ul", {}, found.versions.map((v) => h("li", {}, `version ${v.version} · ${v.created_at ? formatTime(v.created_at) : ""}`)))] : null);
}

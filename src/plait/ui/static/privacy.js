// Privacy: file deletion and suppression requests and follow them to their receipts;
// access requests (the person's data, downloaded); the audit log.
import { api, errorText, field, fill, formatTime, h, notice, session } from "./core.js";

const KINDS = [
  ["DELETE_ONLY", "Delete, and forward the deletion to destinations"],
  ["DELETE_INTERNAL", "Delete from Plait only"],
  ["SUPPRESS_WITH_DELETE", "Suppress future messages, delete, forward"],
  ["SUPPRESS_WITH_DELETE_INTERNAL", "Suppress and delete from Plait only"],
  ["SUPPRESS_ONLY", "Suppress future messages only"],
  ["UNSUPPRESS", "Lift a suppression"],
];
const SUBJECTS = ["USER_ID", "ANONYMOUS_ID", "EMAIL", "PHONE"];

/** Offers `data` as a JSON file to save (made in the page: nothing is fetched again). */
function download(name, data) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export async function privacyPage(main) {
  const status = h("div", { "aria-live": "polite" });
  const requests = h("section", { "aria-labelledby": "requests-title" });
  const auditPanel = h("section", { "aria-labelledby": "audit-title" });
  const writable = session.can("privacy:write");

  async function drawRequests() {
    const { data } = await api("/regulations?limit=50");
    fill(requests, h("h2", { id: "requests-title" }, "Requests"),
      h("table", { "aria-label": "Privacy requests" },
        h("thead", {}, h("tr", {}, ["Request", "Kind", "Subjects", "Status", "Filed", "Finished", "Receipt"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, data.regulations.length ? data.regulations.map((r) => h("tr", {},
          h("td", { class: "mono" }, r.id), h("td", {}, r.regulationType), h("td", {}, `${r.subjectCount} ${r.subjectType}`),
          h("td", { "data-testid": `status-${r.id}` }, r.overallStatus, r.error ? [h("br"), h("span", { class: "muted" }, r.error)] : null),
          h("td", {}, r.createdAt), h("td", {}, r.finishedAt || ""),
          h("td", {}, r.receipt ? h("button", { type: "button", class: "secondary", "aria-label": `Download the receipt of ${r.id}`,
            onclick: () => download(`${r.id}-receipt.json`, r) }, "Download") : "")))
          : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No request yet.")))));
  }

  async function drawAudit() {
    const action = h("input", { name: "action", placeholder: "privacy, token.create …", value: auditPanel.dataset.action || "" });
    const { records } = await api(`/audit?limit=100${auditPanel.dataset.action ? `&action=${encodeURIComponent(auditPanel.dataset.action)}` : ""}`);
    fill(auditPanel, h("h2", { id: "audit-title" }, "Audit log"),
      h("form", { class: "inline", "aria-label": "Filter the audit log", onsubmit: (e) => {
        e.preventDefault(); auditPanel.dataset.action = action.value.trim(); drawAudit().catch(showError);
      } }, field("Action", action), h("button", { type: "submit", class: "secondary" }, "Filter")),
      h("table", { "aria-label": "Audit log" },
        h("thead", {}, h("tr", {}, ["At", "Who", "Action", "Target", "Details"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, records.length ? records.map((r) => h("tr", {}, h("td", {}, formatTime(r.at)), h("td", { class: "mono" }, r.actor),
          h("td", {}, r.action), h("td", { class: "mono" }, r.target), h("td", { class: "mono" }, JSON.stringify(r.details))))
          : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Nothing recorded.")))));
  }
  const showError = (error) => fill(status, notice(errorText(error)));

  const kind = h("select", { name: "regulationType" }, KINDS.map(([v, t]) => h("option", { value: v }, t)));
  const subject = h("select", { name: "subjectType" }, SUBJECTS.map((v) => h("option", { value: v }, v.toLowerCase().replace("_", " "))));
  const ids = h("textarea", { name: "subjectIds", rows: "3", cols: "40", required: true, placeholder: "one a line" });
  async function file(event) {
    event.preventDefault();
    fill(status);
    const subjectIds = ids.value.split("\n").map((x) => x.trim()).filter(Boolean);
    try {
      const { data } = await api("/regulations", { method: "POST", body: { regulationType: kind.value, subjectType: subject.value, subjectIds } });
      fill(status, notice(`Request ${data.regulateId} filed.`, "ok"));
      ids.value = "";
      await drawRequests();
    } catch (error) { showError(error); }
  }
  const who = h("input", { name: "identifier", required: true, placeholder: "email:ada@example.com" });
  async function access(event) {
    event.preventDefault();
    fill(status);
    try {
      const document = await api("/access-requests", { method: "POST", body: { identifier: who.value.trim() } });
      download(`access-${who.value.trim().replace(/[^a-z0-9@._-]+/gi, "_")}.json`, document);
      fill(status, notice(`The data of ${who.value.trim()} was downloaded.`, "ok"));
    } catch (error) { showError(error); }
  }

  fill(main, h("h1", {}, "Privacy"), status,
    writable ? h("form", { class: "panel builder", onsubmit: file, "aria-label": "File a deletion or suppression" },
      h("h2", {}, "Delete or suppress a person"),
      h("div", { class: "inline" }, field("Kind", kind), field("Identifier type", subject)), field("Identifiers", ids),
      h("p", {}, h("button", { type: "submit" }, "File request"))) : null,
    h("form", { class: "panel inline", onsubmit: access, "aria-label": "Access request" },
      h("h2", {}, "Access request"), field("Identifier", who), h("button", { type: "submit" }, "Download their data")),
    requests, session.can("audit:read") ? auditPanel : null);
  await drawRequests();
  if (session.can("audit:read")) await drawAudit();
  // Requests run in the server: follow them until they are done.
  const timer = setInterval(() => drawRequests().catch(showError), 2000);
  return () => clearInterval(timer);
}

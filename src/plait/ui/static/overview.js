// Overview: the workspace's activity over a recent window, refreshed every 10 s.
import { api, errorText, fill, formatNumber, h, notice } from "./core.js";
import { lineChart } from "./charts.js";

const WINDOWS = [["60", "Last hour"], ["360", "Last 6 hours"], ["1440", "Last 24 hours"], ["10080", "Last 7 days"]];

export async function overviewPage(main) {
  const choice = h("select", { name: "window", onchange: () => refresh() },
    WINDOWS.map(([value, text]) => h("option", { value }, text)));
  const status = h("div", { "aria-live": "polite" });
  const body = h("div");
  fill(main, h("h1", {}, "Overview"),
    h("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Window", choice)), status, body);

  async function draw() {
    const data = await api(`/overview?minutes=${choice.value}`);
    const events = data.events.reduce((n, s) => n + s.total, 0);
    const card = (label, value, id) => h("div", { class: "card", "data-testid": id },
      h("div", { class: "figure" }, formatNumber(value)), h("div", { class: "label" }, label));
    const common = { from: data.from, bucketMs: data.bucket_ms };
    const one = (name, counts) => [{ name, counts }];
    fill(body,
      h("div", { class: "cards" },
        card("events in the window", events, "events-total"),
        card("profiles", data.profiles.total, "profiles-total"),
        card("merges in the window", data.merges.total, "merges-total"),
        card("violations in the window", data.violations.total, "violations-total"),
        card("delivery failures in the window", data.delivery_failures.total, "failures-total")),
      h("h2", {}, "Events a minute, by source"),
      lineChart({ title: "Events by source", series: data.events.map((s) => ({ name: s.name, counts: s.counts })), ...common }),
      lineChart({ title: "New profiles", series: one("new profiles", data.profiles.new), ...common }),
      lineChart({ title: "Merges", series: one("merges", data.merges.counts), ...common }),
      lineChart({ title: "Violations", series: one("violations", data.violations.counts), ...common }),
      lineChart({ title: "Delivery failures", series: one("failures", data.delivery_failures.counts), ...common }));
  }

  // A failed refresh says so and keeps the last figures; the next one may succeed.
  const refresh = () => draw().then(() => fill(status),
    (error) => fill(status, notice(`Could not refresh: ${errorText(error)}`)));
  await draw();
  const timer = setInterval(refresh, 10_000);
  return () => clearInterval(timer);
}

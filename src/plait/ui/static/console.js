// The console's shell: sign-in, the header and navigation, and a page per hash route.
import { api, errorText, field, fill, h, notice, session } from "./core.js";
import { overviewPage } from "./overview.js";
import { audiencePage, audiencesPage } from "./audiences.js";
import { destinationPage, destinationsPage } from "./destinations.js";
import { planPage, plansPage } from "./plans.js";
import { privacyPage } from "./privacy.js";
import { profilePage, profilesPage } from "./profiles.js";
import { sourcesPage, sourcePage } from "./sources.js";
import { usersPage } from "./users.js";

// [hash, title, page(main, params)]; a page may return a function that stops its timers.
const AREAS = [
  ["overview", "Overview", overviewPage],
  ["sources", "Sources", sourcesPage],
  ["plans", "Tracking plans", plansPage],
  ["profiles", "Profiles", profilesPage],
  ["audiences", "Audiences", audiencesPage],
  ["destinations", "Destinations", destinationsPage],
  ["privacy", "Privacy", privacyPage],
  ["users", "Users", usersPage, "admin"],  // a fourth entry: the scope the area needs
];
const DETAIL = { sources: sourcePage, plans: planPage, profiles: profilePage, audiences: audiencePage,
  destinations: destinationPage };

const app = document.getElementById("app");
let stopPage = null;

function signInPage(message) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const workspace = h("input", { name: "workspace", placeholder: "only when asked" });
  const token = h("input", { type: "password", name: "token", autocomplete: "off" });
  const status = h("div", { "aria-live": "polite" }, message ? notice(message) : null);

  async function signIn(event) {
    event.preventDefault();
    fill(status);
    try {
      const body = { email: email.value, password: password.value };
      if (workspace.value) body.workspace = workspace.value;
      session.token = (await api("/sessions", { method: "POST", body })).token;
      await start();
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }

  async function useToken(event) {
    event.preventDefault();
    session.token = token.value.trim();
    try {
      await start();
    } catch (error) {
      session.token = null;
      fill(status, notice(errorText(error)));
    }
  }

  fill(app, h("main", { id: "main", class: "signin panel" },
    h("h1", {}, "Sign in to Plait"),
    h("form", { onsubmit: signIn, "aria-label": "Sign in with email" },
      field("Email", email), field("Password", password), field("Workspace", workspace),
      h("button", { type: "submit" }, "Sign in")),
    h("details", {}, h("summary", {}, "Sign in with an API token"),
      h("form", { onsubmit: useToken, "aria-label": "Sign in with a token" },
        field("Token", token), h("button", { type: "submit" }, "Use token"))),
    status));
  email.focus();
}

function leavePage() {
  if (stopPage) { stopPage(); stopPage = null; }
}

async function signOut() {
  // The page goes first (its timers stop), then the session is ended with the token.
  const token = session.token;
  session.token = null;
  session.me = null;
  leavePage();
  signInPage();
  try {
    await api("/sessions/current", { method: "DELETE", token });
  } catch (error) {
    if (error.status !== 401) signInPage(`Signing out failed: ${errorText(error)}`);  // 401: ended already
  }
}

function shell() {
  const me = session.me;
  const who = me.user ? `${me.user.name} (${me.user.email})` : "API token";
  const nav = h("nav", { "aria-label": "Areas" }, AREAS.filter(([, , , scope]) => !scope || session.can(scope))
    .map(([key, title]) => h("a", { href: `#/${key}`, "data-area": key }, title)));
  fill(app, h("div", { class: "shell" },
    h("header", {},
      h("span", { class: "brand" }, "Plait"),
      h("span", { "data-testid": "workspace" }, me.workspace.name),
      h("span", { class: "who" }, h("span", {}, who),
        h("span", { class: "badge", "data-testid": "role" }, me.role || "custom"),
        h("button", { type: "button", onclick: signOut }, "Sign out"))),
    nav,
    h("main", { id: "main", tabindex: "-1" })));
}

async function route() {
  if (!session.me) return;
  leavePage();
  const [key = "overview", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const area = AREAS.find(([k]) => k === key) || AREAS[0];
  for (const link of app.querySelectorAll("nav a")) {
    if (link.dataset.area === area[0]) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = app.querySelector("main");
  fill(main, h("p", { class: "muted" }, "Loading…"));
  document.title = `${area[1]} · Plait`;
  const page = rest.length && DETAIL[area[0]] ? DETAIL[area[0]] : area[2];
  try {
    stopPage = (await page(main, rest.map(decodeURIComponent))) || null;
  } catch (error) {
    fill(main, h("h1", {}, area[1]), notice(errorText(error)));
  }
}

async function start() {
  session.me = await api("/me");
  shell();
  await route();
}

window.addEventListener("hashchange", route);
window.addEventListener("plait:signed-out", () => {
  session.me = null;
  leavePage();
  signInPage("Your session ended: sign in again.");
});

if (session.token) start().catch(() => signInPage()); else signInPage();

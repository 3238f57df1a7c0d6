// Users (admins only): who may sign in, with which role; a change of role, password or
// state ends the user's sessions.
import { api, errorText, field, fill, formatTime, h, notice } from "./core.js";

const ROLES = ["viewer", "editor", "admin"];

export async function usersPage(main) {
  const status = h("div", { "aria-live": "polite" });
  const table = h("div");
  async function draw() {
    const { users } = await api("/users");
    fill(table, h("table", { "aria-label": "Users" },
      h("thead", {}, h("tr", {}, ["User", "Name", "Role", "State", "Since", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, users.length ? users.map((u) => {
        const role = h("select", { "aria-label": `Role of ${u.email}` }, ROLES.map((r) =>
          h("option", { value: r, selected: r === u.role ? true : undefined }, r)));
        role.addEventListener("change", () => change(u, { role: role.value }, `${u.email} is now ${role.value}.`));
        return h("tr", {}, h("td", {}, u.email), h("td", {}, u.name), h("td", {}, role),
          h("td", {}, u.disabled ? "disabled" : "active"), h("td", {}, formatTime(u.created_at)),
          h("td", {},
            h("button", { type: "button", class: "secondary", onclick: () => change(u, { disabled: !u.disabled },
              `${u.email} is ${u.disabled ? "enabled" : "disabled"}.`) }, u.disabled ? "Enable" : "Disable"), " ",
            h("button", { type: "button", class: "secondary", "aria-label": `Delete ${u.email}`, onclick: () => remove(u) }, "Delete")));
      }) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No user yet: people sign in with API tokens.")))));
  }
  async function change(user, body, done) {
    try {
      await api(`/users/${encodeURIComponent(user.id)}`, { method: "PATCH", body });
      fill(status, notice(`${done} Their sessions ended.`, "ok"));
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
    await draw();
  }
  async function remove(user) {
    if (!window.confirm(`Delete ${user.email}?`)) return;
    try {
      await api(`/users/${encodeURIComponent(user.id)}`, { method: "DELETE" });
      fill(status, notice(`${user.email} was deleted.`, "ok"));
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
    await draw();
  }
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "off" });
  const name = h("input", { name: "name" });
  const role = h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r }, r)));
  const password = h("input", { type: "password", name: "password", required: true, minlength: "10", autocomplete: "new-password" });
  async function add(event) {
    event.preventDefault();
    try {
      const made = await api("/users", { method: "POST", body: { email: email.value, name: name.value || undefined, role: role.value, password: password.value } });
      fill(status, notice(`${made.email} may sign in as ${made.role}.`, "ok"));
      email.value = name.value = password.value = "";
      await draw();
    } catch (error) {
      fill(status, notice(errorText(error)));
    }
  }
  fill(main, h("h1", {}, "Users"), status,
    h("form", { class: "panel inline", onsubmit: add, "aria-label": "New user" },
      field("Email", email), field("Name", name), field("Role", role), field("Password (10 characters or more)", password),
      h("button", { type: "submit" }, "Add user")),
    table);
  await draw();
}

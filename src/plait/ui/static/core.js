// What every page of the console uses: building elements, calling the API, the session.

const TOKEN = "plait.token";

/** An element: h("button", {onclick, class: "x"}, "text", child...). Text is never HTML. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  return append(node, children);
}

/** Replaces a node's children with these (nested arrays flattened; null, false skipped). */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.field = error?.field;
    this.code = error?.code;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN, value); else sessionStorage.removeItem(TOKEN);
  },
  me: null,
  /** Whether the signed-in token holds a scope (the API decides; this hides what it refuses). */
  can(scope) {
    const scopes = this.me?.scopes || [];
    return scopes.includes("admin") || scopes.includes(scope);
  },
};

/** Calls /api/v1 (see request). */
export function api(path, options) {
  return request(`/api/v1${path}`, options);
}

/** Calls Plait with the session's token; a 401 signs out (the session ended), other
 *  errors throw ApiError. */
export async function request(url, { method = "GET", body, signal, token = session.token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && session.token && token === session.token) {
    session.token = null;
    window.dispatchEvent(new Event("plait:signed-out"));
  }
  if (!response.ok) throw new ApiError(response.status, data.error);
  return data;
}

/** A notice for an error (or a success): role="alert" so screen readers hear it. */
export function notice(message, kind = "error") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}

export function errorText(error) {
  if (error instanceof ApiError && error.field) return `${error.field}: ${error.message}`;
  return error.message || String(error);
}

export function formatNumber(n) {
  return new Intl.NumberFormat("en").format(n);
}

export function formatTime(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

let ids = 0;

/** An id no other element of the page has (to tie a control to its list or its help). */
export function uniqueId(prefix) {
  return `${prefix}-${++ids}`;
}

/** A labelled control: label text above the input, bound by nesting. */
export function field(text, control) {
  return h("label", {}, text, control);
}

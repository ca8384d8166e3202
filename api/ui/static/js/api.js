// The JSON API with the operator's bearer token (sessionStorage only: never a cookie).

const KEY = "vhdmend.token";

// Who the token is (GET /v1/whoami): its scopes decide which buttons are shown.
export const session = { who: null };

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else { sessionStorage.removeItem(KEY); kindsAsked = null; }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export async function api(path, { method = "GET", body, tok } = {}) {
  const t = tok || token();
  if (!t) throw new ApiError(401, { detail: "not signed in" });
  const headers = { Authorization: `Bearer ${t}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "omit", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    if (resp.status === 401 && !tok) onUnauthorized();
    throw new ApiError(resp.status, data);
  }
  return data;
}

// The job kinds the service runs (GET /v1/kinds, the service's registry): asked once per
// sign-in, as they change only when the service restarts; a failed answer is not kept.
let kindsAsked = null;
export function jobKinds() {
  if (!kindsAsked) {
    kindsAsked = api("/v1/kinds").then((data) => data.items, (e) => { kindsAsked = null; throw e; });
  }
  return kindsAsked;
}

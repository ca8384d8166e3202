// The dashboard: sign-in, client-side routing over /ui/..., one view at a time. Views
// refresh by polling the JSON API; leaving a view stops its timers.
import { api, session, setToken, token, whenUnauthorized } from "./api.js";
import { h } from "./dom.js";
import { overview } from "./views/overview.js";
import { volumePage } from "./views/volume.js";
import { jobsList, jobPage } from "./views/jobs.js";

let stopView = null;

const $ = (id) => document.getElementById(id);

function showSignin(message) {
  session.who = null;
  if (stopView) { stopView(); stopView = null; }
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

async function signIn(tok) {
  try {
    session.who = await api("/v1/whoami", { tok });
  } catch (e) {
    setToken(null);
    showSignin(e.status === 401 ? "This token is not valid." : `Cannot sign in: ${e.message}`);
    return false;
  }
  setToken(tok);
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `${session.who.name} (${session.who.scopes.join(", ")}${session.who.can_write ? "" : ", read-only"})`;
  return true;
}

function route() {
  if (stopView) { stopView(); stopView = null; }
  if (!session.who) return;
  const path = location.pathname.replace(/\/+$/, "");
  const view = $("view");
  view.replaceChildren();
  let m;
  let name = "overview";
  if ((m = path.match(/^\/ui\/jobs\/([^/]+)$/))) { name = "jobs"; stopView = jobPage(view, decodeURIComponent(m[1])); }
  else if (path === "/ui/jobs") { name = "jobs"; stopView = jobsList(view, new URLSearchParams(location.search)); }
  else if ((m = path.match(/^\/ui\/volumes\/([^/]+)$/))) { stopView = volumePage(view, decodeURIComponent(m[1])); }
  else if (path === "/ui" || path === "") { stopView = overview(view); }
  else { view.append(h("h1", {}, "Not found"), h("p", {}, "No such page.")); }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

export function navigate(href) {
  history.pushState(null, "", href);
  route();
  $("main").focus();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || a.target || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui")) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", route);

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tok = $("token").value.trim();
  if (tok && (await signIn(tok))) route();
});
$("sign-out").addEventListener("click", () => { setToken(null); showSignin("Signed out."); });
whenUnauthorized(() => { setToken(null); showSignin("The token was refused; sign in again."); });

(async () => {
  const tok = token();
  if (tok && (await signIn(tok))) route();
  else if (!tok) showSignin();
})();

// Jobs: a filtered, paged list, and one job followed live (polled) until it finishes.
import { api, jobKinds, session } from "../api.js";
import { h, confirmDialog, link } from "../dom.js";
import { duration, rate, stateBadge, when } from "../format.js";
import { navigate } from "../app.js";
import { errorBox, poll, progressBar, target } from "./common.js";

const STATES = ["", "queued", "running", "pausing", "paused", "cancelling", "succeeded", "failed", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// Which actions the job's state allows (service/states.py's table).
const ACTIONS = {
  cancel: new Set(["queued", "running", "pausing", "paused"]),
  pause: new Set(["queued", "running"]),
  resume: new Set(["paused"]),
};

function field(label, name, control) {
  control.id = `f-${name}`;
  control.name = name;
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}

function select(options, value) {
  return h("select", {}, options.map((o) => h("option", { value: o, selected: o === value }, o || "any")));
}

// The filters, drawn once the job kinds are known (the Type choices are the API's): never
// refilled afterwards, so a choice made in them cannot be undone by a late answer.
function filterForm(kinds, params) {
  const types = select(["", ...kinds.map((k) => k.name)], params.get("type") || "");
  for (const [i, k] of kinds.entries()) types.options[i + 1].title = k.summary;
  const form = h("form", { class: "filters", role: "search" },
    field("State", "state", select(STATES, params.get("state") || "")),
    field("Host", "host", h("input", { type: "text", value: params.get("host") || "" })),
    field("Type", "type", types),
    field("External ref", "external_ref", h("input", { type: "text", value: params.get("external_ref") || "" })),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    navigate(`/ui/jobs${q.toString() ? `?${q}` : ""}`);
  });
  return form;
}

export function jobsList(view, params) {
  // aria-busy until the kinds are known: the form appears whole, with its final choices.
  const filters = h("div", { id: "job-filters", "aria-busy": "true" });
  jobKinds().then((kinds) => filters.replaceChildren(filterForm(kinds, params)),
    (e) => filters.replaceChildren(errorBox(e)))
    .finally(() => filters.removeAttribute("aria-busy"));
  const list = h("div", {});
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  view.append(h("h1", {}, "Jobs"), filters, list, pager);
  const tokens = [null];
  let page = 0;
  async function load() {
    const q = new URLSearchParams({ limit: "20" });
    for (const k of ["state", "host", "type", "external_ref"]) if (params.get(k)) q.set(k, params.get(k));
    if (tokens[page]) q.set("page_token", tokens[page]);
    let data;
    try { data = await api(`/v1/jobs?${q}`); } catch (e) { list.replaceChildren(errorBox(e)); return; }
    tokens[page + 1] = data.next_page_token || null;
    const items = data.items;
    list.replaceChildren(items.length ? h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "Type", "Host", "Target", "State", "Progress", "Ref", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, items.map((j) => h("tr", { "data-job": j.id },
        h("td", { class: "mono" }, link(`/ui/jobs/${j.id}`, j.id)), h("td", {}, j.type), h("td", {}, j.host),
        h("td", {}, target(j)), h("td", {}, stateBadge(h, j.state)), h("td", { class: "barcell" }, progressBar(j)),
        h("td", {}, j.external_ref || "–"), h("td", { class: "small" }, when(j.created_at))))))
      : h("p", { class: "muted" }, "No job matches."));
    pager.replaceChildren(
      h("button", { type: "button", disabled: page === 0, onclick: () => { page--; load(); } }, "← Newer"),
      h("span", { class: "muted" }, ` page ${page + 1} `),
      h("button", { type: "button", disabled: !data.next_page_token, onclick: () => { page++; load(); } }, "Older →"));
  }
  load();
  return () => {};
}

function pre(value) {
  return value === null || value === undefined ? h("p", { class: "muted" }, "–") : h("pre", {}, JSON.stringify(value, null, 2));
}

function eventLine(ev) {
  const { at, ...rest } = ev;
  const text = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return h("li", {}, h("span", { class: "mono small" }, when(at)), " ", text);
}

export function jobPage(view, id) {
  const head = h("div", {});
  const actions = h("div", { class: "actions", id: "job-actions" });
  const live = h("div", {});
  const events = h("ol", { class: "events" });
  view.append(h("p", {}, link("/ui/jobs", "← Jobs")), head, actions, live,
    h("section", { "aria-labelledby": "h-ev" }, h("h2", { id: "h-ev" }, "Events"), events));
  let nextEvent = 0, shownActions = "", stop = null;

  async function act(job, name) {
    const verb = { cancel: "Cancel", pause: "Pause", resume: "Resume" }[name];
    const ok = await confirmDialog(`${verb} job ${job.id}?`, [
      `${verb} the ${job.type} of ${target(job)} on host ${job.host} (now ${job.state}).`,
      name === "cancel" ? "It stops between chunks; the originals stay valid and partial output is rolled back." :
        name === "pause" ? "It stops between chunks and can be resumed from its checkpoint." : "It is queued again and continues from its checkpoint.",
    ], `${verb} job`);
    if (!ok) return;
    try { await api(`/v1/jobs/${job.id}/${name}`, { method: "POST" }); } catch (e) { actions.append(errorBox(e)); }
  }

  function render(job) {
    head.replaceChildren(h("h1", {}, `Job ${job.id} `, stateBadge(h, job.state)),
      h("dl", { class: "facts" },
        h("dt", {}, "Type"), h("dd", {}, job.type),
        h("dt", {}, "Target"), h("dd", {}, `${job.host} ${target(job)}`),
        h("dt", {}, "Phase"), h("dd", { id: "job-phase" }, job.phase || "–"),
        h("dt", {}, "Reason"), h("dd", {}, job.reason || "–"),
        h("dt", {}, "Attempts"), h("dd", {}, `${job.attempts} (${job.chunks} checkpoints)`),
        h("dt", {}, "Requested by"), h("dd", {}, job.requested_by || "–"),
        h("dt", {}, "External ref"), h("dd", {}, job.external_ref || "–"),
        h("dt", {}, "Created"), h("dd", {}, when(job.created_at)),
        h("dt", {}, "Finished"), h("dd", {}, when(job.finished_at))));
    const allowed = session.who && session.who.can_write ? Object.keys(ACTIONS).filter((a) => ACTIONS[a].has(job.state)) : [];
    if (allowed.join() !== shownActions) {
      shownActions = allowed.join();
      actions.replaceChildren(...allowed.map((a) => h("button", { type: "button", class: a === "cancel" ? "danger" : "", "data-action": a, onclick: () => act(job, a) },
        a[0].toUpperCase() + a.slice(1))));
    } else {
      for (const b of actions.querySelectorAll("button")) b.onclick = () => act(job, b.dataset.action);
    }
    const p = job.progress || {};
    live.replaceChildren(...[
      h("section", { "aria-labelledby": "h-prog" }, h("h2", { id: "h-prog" }, "Progress"), progressBar(job),
        h("p", { class: "muted small" }, `rate ${rate(p.rate)} · ETA ${TERMINAL.has(job.state) ? "–" : duration(p.eta_seconds)}`)),
      job.error ? h("section", { class: "errorbox", "aria-labelledby": "h-err" }, h("h2", { id: "h-err" }, "Error"),
        h("p", {}, h("strong", {}, job.error.title || "Error"), " ", job.error.detail || ""), h("p", { class: "muted small" }, job.error.type || "")) : null,
      h("section", { "aria-labelledby": "h-plan" }, h("h2", { id: "h-plan" }, "Plan"), pre(job.plan)),
      h("section", { "aria-labelledby": "h-res" }, h("h2", { id: "h-res" }, "Result"), pre(job.result)),
      h("section", { "aria-labelledby": "h-opt" }, h("h2", { id: "h-opt" }, "Options"), pre(job.options))].filter(Boolean));
  }

  stop = poll(async () => {
    let job;
    try { job = await api(`/v1/jobs/${encodeURIComponent(id)}`); } catch (e) {
      head.replaceChildren(h("h1", {}, `Job ${id}`), errorBox(e)); stop && stop(); return;
    }
    render(job);
    const ev = await api(`/v1/jobs/${job.id}/events?start=${nextEvent}`);
    events.append(...ev.items.map(eventLine));
    nextEvent = ev.next;
    if (TERMINAL.has(job.state)) stop && stop();
  }, 700);
  return () => stop && stop();
}

// Overview: volumes riskiest first, hosts and their heartbeats, jobs running now.
import { api } from "../api.js";
import { h, link } from "../dom.js";
import { RISK_ORDER, ago, ageOf, bytes, duration, riskBadge, stateBadge } from "../format.js";
import { errorBox, poll, progressBar, target } from "./common.js";

//: A host whose newest heartbeat is older than this is flagged (workers beat every tick).
const STALE_SECONDS = 30;

function sortVolumes(items) {
  return [...items].sort((a, b) =>
    (RISK_ORDER[a.risk] ?? 3) - (RISK_ORDER[b.risk] ?? 3)
    || (a.seconds_to_full ?? Infinity) - (b.seconds_to_full ?? Infinity)
    || (a.free_bytes - a.growth_bytes) - (b.free_bytes - b.growth_bytes));
}

function growthBar(v) {
  const scale = Math.max(v.free_bytes, v.growth_bytes, 1);
  const over = v.growth_bytes > v.free_bytes;
  return h("div", { class: "bar", title: `free ${bytes(v.free_bytes)}, growth ${bytes(v.growth_bytes)}` },
    h("div", { class: "bar-row" }, h("span", { class: "bar-label" }, "free"),
      h("span", { class: "bar-track" }, h("span", { class: "bar-free", style: { width: `${(100 * v.free_bytes) / scale}%` } })),
      h("span", { class: "bar-value" }, bytes(v.free_bytes))),
    h("div", { class: "bar-row" }, h("span", { class: "bar-label" }, "growth"),
      h("span", { class: "bar-track" }, h("span", { class: over ? "bar-growth over" : "bar-growth", style: { width: `${(100 * v.growth_bytes) / scale}%` } })),
      h("span", { class: "bar-value" }, bytes(v.growth_bytes))));
}

function volumesTable(items) {
  if (!items.length) return h("p", { class: "muted" }, "No volume scanned yet.");
  return h("table", { class: "volumes" },
    h("thead", {}, h("tr", {}, ["Risk", "Volume", "Host", "Free vs growth", "Time to full", "Why"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, sortVolumes(items).map((v) => h("tr", { "data-volume": v.id, class: `row-${v.risk}` },
      h("td", {}, riskBadge(h, v.risk)),
      h("td", {}, link(`/ui/volumes/${encodeURIComponent(v.id)}`, (v.roots || []).join(", ") || v.id),
        h("div", { class: "muted small" }, `${bytes(v.total_bytes)} total · ${v.chain_count} chains`)),
      h("td", {}, v.host),
      h("td", { class: "barcell" }, growthBar(v)),
      h("td", {}, v.seconds_to_full === null || v.seconds_to_full === undefined ? h("span", { class: "muted" }, "not filling") : duration(v.seconds_to_full)),
      h("td", { class: "small" }, (v.reasons || []).join("; ") || "–")))));
}

function hostsTable(items) {
  if (!items.length) return h("p", { class: "muted" }, "No worker has registered.");
  return h("table", { class: "hosts" },
    h("thead", {}, h("tr", {}, ["Host", "Last heartbeat", "Workers", "Roots", "Running"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((x) => {
      const stale = x.state ? x.state === "stale" : ageOf(x.last_heartbeat) > STALE_SECONDS;
      return h("tr", { "data-host": x.host, class: stale ? "stale" : "" },
        h("td", {}, x.host),
        h("td", {}, ago(x.last_heartbeat), stale ? h("span", { class: "flag" }, " stale") : null),
        h("td", {}, String((x.workers || []).length)),
        h("td", { class: "small" }, Object.entries(x.roots || {}).map(([r, sp]) => `${r}: ${bytes(sp.free_bytes)} free of ${bytes(sp.total_bytes)}`).join("; ")),
        h("td", {}, String((x.running_jobs || []).length)));
    })));
}

function jobsTable(items) {
  if (!items.length) return h("p", { class: "muted" }, "No job is running.");
  return h("table", { class: "running" },
    h("thead", {}, h("tr", {}, ["Job", "Type", "Target", "State", "Progress"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, link(`/ui/jobs/${j.id}`, j.id)),
      h("td", {}, j.type), h("td", {}, `${j.host} ${target(j)}`),
      h("td", {}, stateBadge(h, j.state), j.phase ? h("div", { class: "muted small" }, j.phase) : null),
      h("td", { class: "barcell" }, progressBar(j))))));
}

export function overview(view) {
  const vols = h("section", { "aria-labelledby": "h-vol" }, h("h2", { id: "h-vol" }, "Volumes, riskiest first"), h("div", {}));
  const hosts = h("section", { "aria-labelledby": "h-hosts" }, h("h2", { id: "h-hosts" }, "Hosts"), h("div", {}));
  const jobs = h("section", { "aria-labelledby": "h-run" }, h("h2", { id: "h-run" }, "Running jobs"), h("div", {}));
  view.append(h("h1", {}, "Overview"), vols, hosts, jobs);
  return poll(async () => {
    const [v, ho, run, pausing, cancelling] = await Promise.all([
      api("/v1/volumes"), api("/v1/hosts"), api("/v1/jobs?state=running&limit=50"),
      api("/v1/jobs?state=pausing&limit=50"), api("/v1/jobs?state=cancelling&limit=50")]);
    vols.lastChild.replaceChildren(volumesTable(v.items));
    hosts.lastChild.replaceChildren(hostsTable(ho.items));
    jobs.lastChild.replaceChildren(jobsTable([...run.items, ...pausing.items, ...cancelling.items]));
  }, 2000);
}

export { errorBox };

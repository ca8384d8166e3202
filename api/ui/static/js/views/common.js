// Helpers shared by the views: polling, progress, errors.
import { h } from "../dom.js";
import { bytes, duration, rate } from "../format.js";

// Calls ``fn`` now and every ``ms`` until stopped; returns the stop function.
export function poll(fn, ms) {
  let timer = null, stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { if (e.status !== 401) console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

export function progressBar(job) {
  const p = job.progress || {};
  const pct = p.percent ?? (p.total ? (100 * (p.done || 0)) / p.total : job.state === "succeeded" ? 100 : 0);
  return h("div", { class: "progress" },
    h("progress", { max: 100, value: pct.toFixed(1), "aria-label": `progress of job ${job.id}` }),
    h("span", { class: "pct" }, `${pct.toFixed(0)} %`),
    p.total ? h("span", { class: "muted" }, ` ${bytes(p.done || 0)} of ${bytes(p.total)}`) : null,
    p.rate ? h("span", { class: "muted" }, ` · ${rate(p.rate)}`) : null,
    p.eta_seconds !== undefined && p.eta_seconds !== null && !["succeeded", "failed", "cancelled"].includes(job.state)
      ? h("span", { class: "muted" }, ` · ETA ${duration(p.eta_seconds)}`) : null);
}

export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, `Error: ${e.message}`);
}

export function target(job) {
  return `${job.root}:${job.path}`;
}

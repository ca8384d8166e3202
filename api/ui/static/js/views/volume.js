// One volume: free space over time with the projection, its chains by growth, its plan
// with a button per step that submits the step as a job.
import { api, session } from "../api.js";
import { h, confirmDialog, link } from "../dom.js";
import { bytes, duration, riskBadge, when } from "../format.js";
import { navigate } from "../app.js";
import { freeSpacePlot } from "../plot.js";
import { errorBox, poll } from "./common.js";

function chainsTable(chains) {
  if (!chains.length) return h("p", { class: "muted" }, "No chain on this volume.");
  const sorted = [...chains].sort((a, b) => b.growth_bytes - a.growth_bytes);
  return h("table", { class: "chains" },
    h("thead", {}, h("tr", {}, ["Risk", "Leaf", "Format", "Growth", "Allocated / max", "Snapshots", "Oldest snapshot", "Problems"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, sorted.map((c) => h("tr", { "data-chain": c.id },
      h("td", {}, riskBadge(h, c.risk)),
      h("td", {}, c.leaf ? `${c.root}:${c.leaf}` : "(outside the roots)"),
      h("td", {}, [c.format, c.type].filter(Boolean).join(" ")),
      h("td", {}, bytes(c.growth_bytes)),
      h("td", {}, `${bytes(c.allocated_bytes)} / ${bytes(c.max_bytes)}`),
      h("td", {}, String(c.snapshots)),
      h("td", {}, c.oldest_snapshot_age_seconds === null ? "–" : duration(c.oldest_snapshot_age_seconds)),
      h("td", { class: "small" }, c.problems.length ? c.problems.map((p) => h("div", { class: "problem" }, `${p.code}: ${p.message}`)) : "–")))));
}

async function submitStep(step, index) {
  const j = step.job;
  const ok = await confirmDialog(`Run step ${index + 1}: ${step.operation}?`, [
    `${j.type} of ${j.root}:${j.path} on host ${j.host}.`,
    step.description,
    `It needs ${bytes(step.needs_bytes)} while it runs and frees ${bytes(step.frees_bytes)}: free space ${bytes(step.free_before_bytes)} → ${bytes(step.free_after_bytes)}.`,
    Object.keys(j.options || {}).length ? `Options: ${JSON.stringify(j.options)}` : "No options.",
  ], "Submit job");
  if (!ok) return;
  const job = await api("/v1/jobs", { method: "POST", body: j });
  navigate(`/ui/jobs/${job.id}`);
}

function planSection(plan) {
  if (!plan) return h("p", { class: "muted" }, "No plan: nothing to do.");
  const steps = plan.steps || [];
  const out = [];
  if (steps.length) {
    out.push(h("ol", { class: "steps" }, steps.map((st, i) => h("li", { class: "step" },
      h("div", {}, h("strong", {}, st.operation), " ", st.description),
      h("div", { class: "muted small" }, `needs ${bytes(st.needs_bytes)} · frees ${bytes(st.frees_bytes)} · free ${bytes(st.free_before_bytes)} → ${bytes(st.free_after_bytes)}`),
      st.job && session.who && session.who.can_write
        ? h("button", { type: "button", class: "run-step", onclick: (ev) => submitStep(st, i).catch((e) => ev.target.after(errorBox(e))) }, `Run step ${i + 1} as a job`)
        : null))));
  } else out.push(h("p", { class: "muted" }, "No step needed."));
  for (const inf of plan.infeasible || []) {
    out.push(h("p", { class: "warning" }, `Cannot fix ${inf.chain ? `${inf.chain.root}:${inf.chain.path}` : "a chain"}: ${inf.why}`,
      inf.would_fit_if && inf.would_fit_if.length ? ` (would fit if ${inf.would_fit_if.join("; ")})` : ""));
  }
  out.push(h("p", {}, "After the plan: ", riskBadge(h, plan.remaining_risk), ` ${bytes(plan.free_after_bytes)} free`,
    plan.remaining_reasons && plan.remaining_reasons.length ? ` (${plan.remaining_reasons.join("; ")})` : ""));
  return out;
}

export function volumePage(view, id) {
  const body = h("div", {});
  view.append(h("p", {}, link("/ui/", "← Overview")), body);
  // Built once: the plan (its buttons are never redrawn or moved under the operator's
  // pointer or keyboard focus) and the slots the polls refresh around it.
  const head = h("div", {}), plot = h("div", {}), chains = h("div", {});
  let planEl = null;
  return poll(async () => {
    let v;
    try { v = await api(`/v1/volumes/${encodeURIComponent(id)}`); } catch (e) {
      if (!planEl) body.replaceChildren(h("h1", {}, "Volume"), errorBox(e));
      return;
    }
    if (!planEl) {
      planEl = h("div", { id: "plan" }, planSection(v.plan));
      body.replaceChildren(head,
        h("section", { "aria-labelledby": "h-plot" }, h("h2", { id: "h-plot" }, "Free space"), plot),
        h("section", { "aria-labelledby": "h-plan" }, h("h2", { id: "h-plan" }, "Plan"), planEl),
        h("section", { "aria-labelledby": "h-chains" }, h("h2", { id: "h-chains" }, "Chains by growth"), chains));
    }
    head.replaceChildren(
      h("h1", {}, "Volume ", (v.roots || []).join(", "), " on ", v.host, " ", riskBadge(h, v.risk)),
      h("dl", { class: "facts" },
        h("dt", {}, "Free"), h("dd", {}, `${bytes(v.free_bytes)} of ${bytes(v.total_bytes)} (reserve ${bytes(v.reserve_bytes)})`),
        h("dt", {}, "Growth"), h("dd", {}, `${bytes(v.growth_bytes)} the disks can still take`),
        h("dt", {}, "Rate"), h("dd", {}, v.rate_bytes_per_second === null ? "–" : `${bytes(v.rate_bytes_per_second)}/s`),
        h("dt", {}, "Time to full"), h("dd", {}, v.seconds_to_full === null ? "not filling" : duration(v.seconds_to_full)),
        h("dt", {}, "Why"), h("dd", {}, (v.reasons || []).join("; ") || "–"),
        h("dt", {}, "Scanned"), h("dd", {}, `${when(v.scanned_at)} (${v.scan_seconds.toFixed(2)} s)`),
        h("dt", {}, "Id"), h("dd", { class: "mono" }, v.id)));
    plot.replaceChildren(freeSpacePlot(v),
      h("p", { class: "legend small" }, h("span", { class: "key key-free" }), " free ", h("span", { class: "key key-projection" }), " projection ",
        h("span", { class: "key key-reserve" }), " reserve ", h("span", { class: "key key-ceiling" }), " growth ceiling"));
    chains.replaceChildren(chainsTable(v.chains || []));
  }, 5000);
}

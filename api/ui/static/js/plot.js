// Free space over time as inline SVG: the samples, the reserve, the projection from the
// last sample at the fitted rate down to the reserve, and the growth ceiling (the free
// space left if every disk grew to its maximum).
import { s } from "./dom.js";
import { bytes, duration } from "./format.js";

const W = 900, H = 300, L = 78, R = 20, T = 16, B = 40;

export function freeSpacePlot(vol) {
  const pts = (vol.history || []).map((p) => ({ t: Date.parse(p.at) / 1000, free: p.free_bytes }));
  if (!pts.length) pts.push({ t: Date.parse(vol.scanned_at) / 1000, free: vol.free_bytes });
  const last = pts[pts.length - 1];
  const reserve = vol.reserve_bytes || 0;
  const ceiling = vol.free_bytes - vol.growth_bytes;
  let tEnd = last.t;
  let proj = null;
  if (vol.seconds_to_full !== null && vol.seconds_to_full !== undefined) {
    proj = { t: last.t + vol.seconds_to_full, free: reserve };
    tEnd = proj.t;
  }
  const tStart = Math.min(pts[0].t, last.t - 60);
  if (tEnd <= last.t) tEnd = last.t + Math.max(60, (last.t - tStart) * 0.25);
  const ys = [...pts.map((p) => p.free), reserve, ceiling, 0, vol.total_bytes || 0];
  const yMin = Math.min(...ys), yMax = Math.max(...ys) || 1;
  const x = (t) => L + ((t - tStart) / (tEnd - tStart || 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - yMin) / (yMax - yMin || 1)) * (H - T - B);

  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    grid.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    grid.push(s("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, bytes(Math.round(v))));
  }
  grid.push(s("text", { x: L, y: H - 12, class: "axis" }, `${duration(last.t - tStart)} ago`));
  grid.push(s("text", { x: x(last.t), y: H - 12, class: "axis", "text-anchor": "middle" }, "now"));
  if (proj) grid.push(s("text", { x: W - R, y: H - 12, class: "axis", "text-anchor": "end" }, `+${duration(vol.seconds_to_full)}`));

  const line = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.free).toFixed(1)}`).join(" ");
  const parts = [
    s("title", {}, "Free space over time"),
    ...grid,
    s("line", { x1: L, x2: W - R, y1: y(reserve), y2: y(reserve), class: "reserve" }),
    s("text", { x: L + 6, y: y(reserve) - 5, class: "label reserve-label" }, `reserve ${bytes(reserve)}`),
    s("line", { x1: L, x2: W - R, y1: y(ceiling), y2: y(ceiling), class: "ceiling" }),
    s("text", { x: L + 6, y: y(ceiling) + (ceiling < reserve ? 14 : -5), class: "label ceiling-label" }, `growth ceiling: ${bytes(ceiling)} free if every disk grows fully`),
    s("path", { d: line, class: "free" }),
    ...pts.map((p) => s("circle", { cx: x(p.t), cy: y(p.free), r: 2.5, class: "dot" })),
  ];
  if (proj) {
    parts.push(s("line", { x1: x(last.t), y1: y(last.free), x2: x(proj.t), y2: y(proj.free), class: "projection" }));
    parts.push(s("text", { x: x(proj.t) - 4, y: y(proj.free) + 16, class: "label projection-label", "text-anchor": "end" }, `reserve reached in ${duration(vol.seconds_to_full)}`));
  }
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": "Free space over time, with the projection to the reserve and the growth ceiling" }, ...parts);
}

// Human figures: bytes, durations, ages, risk.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const neg = n < 0;
  let v = Math.abs(n), i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  const text = i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
  return neg ? `−${text}` : text;
}

export function duration(sec) {
  if (sec === null || sec === undefined || !isFinite(sec)) return "–";
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${sec % 60} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function ageOf(iso) {
  if (!iso) return null;
  return (Date.now() - Date.parse(iso)) / 1000;
}

export function ago(iso) {
  const a = ageOf(iso);
  return a === null ? "–" : `${duration(a)} ago`;
}

export function rate(bps) {
  if (bps === null || bps === undefined) return "–";
  return `${bytes(bps)}/s`;
}

export const RISK_ORDER = { critical: 0, warning: 1, ok: 2 };

export function riskBadge(h, risk) {
  return h("span", { class: `risk risk-${risk}` }, risk);
}

export function stateBadge(h, state) {
  return h("span", { class: `state state-${state}`, "data-state": state }, state);
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

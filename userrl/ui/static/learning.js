// Learning page: the learner's metrics.jsonl as line charts, extended as the file grows.
"use strict";

(() => {
  const { el } = UI;
  const rows = [];
  const CHARTS = [
    // the mean return (sum of turn rewards); rollout/score* are its deprecated names (learner/metrics.py)
    { title: "mean return per gym", match: (k) => k.startsWith("rollout/return/") || k === "rollout/return_mean" },
    { title: "policy loss", match: (k) => k.startsWith("loss/") },
    { title: "clip fraction", match: (k) => k === "policy/clip_frac" },
    { title: "staleness (versions behind)", match: (k) => k === "rollout/staleness_mean" },
    { title: "stale tokens", match: (k) => k === "rollout/stale_tokens" },
    { title: "turns / s", match: (k) => k === "perf/turns_per_s" },
    { title: "tokens / s", match: (k) => k === "perf/tokens_per_s" },
    { title: "KL / ratio", match: (k) => k === "policy/kl" || k === "policy/ratio_mean" },
    // simulator health (learner/sim_health.py)
    { title: "how episodes ended", match: (k) => k.startsWith("sim/ended/") },
    { title: "user format errors, leaks, early hang-ups (rates)",
      match: (k) => ["sim/format_error_rate", "sim/leak_rate", "sim/early_hangup_rate"].includes(k) },
    { title: "user latency (ms)", match: (k) => k.startsWith("sim/user_latency_ms") },
    { title: "user calls by simulator", match: (k) => k.startsWith("sim/by/") },
    { title: "simulator counts",
      match: (k) => ["sim/episodes", "sim/user_calls", "sim/early_hangups", "sim/leak_hits", "sim/empty_replies"].includes(k) },
  ];
  const SKIP = new Set(["step", "time"]);
  // a metric under its deprecated name: charted as the new one (runs before the rename log only the old)
  const renamed = (k) => k === "rollout/score_mean" ? "rollout/return_mean"
    : k.startsWith("rollout/score/") ? "rollout/return/" + k.slice("rollout/score/".length) : null;

  const info = el("p", { id: "info", class: "muted" }, "waiting for metrics…");
  document.getElementById("main").append(el("h1", {}, "Learning"), info, el("div", { id: "charts" }));

  const oldName = (k) => k === "rollout/return_mean" ? "rollout/score_mean"
    : k.startsWith("rollout/return/") ? "rollout/score/" + k.slice("rollout/return/".length) : null;

  function value(r, k) {
    if (k in r) return r[k];
    const old = oldName(k);
    return old === null ? undefined : r[old];
  }

  function seriesFor(keys) {
    return keys.sort().map((k) => ({
      name: k.replace("rollout/return/", "").replace("rollout/", "").replace(/^sim\/(ended|by)\//, "").replace("sim/", ""),
      points: rows.map((r) => [r.step, value(r, k)]).filter((p) => typeof p[1] === "number"),
    }));
  }

  function render() {
    const keys = new Set();
    rows.forEach((r) => Object.keys(r).forEach((k) => {
      if (!SKIP.has(k) && typeof r[k] === "number") keys.add(renamed(k) || k);
    }));
    const used = new Set();
    const charts = [];
    for (const c of CHARTS) {
      const ks = [...keys].filter(c.match);
      ks.forEach((k) => used.add(k));
      if (ks.length) charts.push(Plot.lineChart(c.title, seriesFor(ks)));
    }
    for (const k of [...keys].filter((k) => !used.has(k)).sort().slice(0, 12)) {
      charts.push(Plot.lineChart(k, seriesFor([k])));
    }
    const last = rows[rows.length - 1];
    const users = rows.length && last["sim/user"] ? ` · user turns by ${last["sim/user"]}` : "";
    info.textContent = rows.length ? `${rows.length} steps, last step ${last.step}${users}` : "no metrics yet";
    UI.replace("charts", el("div", { class: "charts" }, charts.map((c) => el("div", { class: "card" }, c))));
  }

  UI.stream("/api/stream/metrics", {
    info: (d) => { info.textContent = "waiting for " + d.path + " …"; },
    reset: () => { rows.length = 0; render(); },
    rows: (batch) => { rows.push(...batch); render(); },
  });
})();

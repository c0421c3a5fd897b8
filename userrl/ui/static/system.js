// System page: per role replicas, heartbeats, consumer-group lag and pending, dead letters
// with their reasons, restarts and throughput; a new snapshot every few seconds over SSE.
"use strict";

(() => {
  const { el, fmt, age } = UI;
  const history = {}; // role -> [[seconds since page load, msg/s]]
  const t0 = Date.now() / 1000;
  const main = document.getElementById("main");
  main.append(el("h1", {}, "System"), el("div", { id: "head", class: "summary" }),
    el("h2", {}, "Roles"), el("div", { id: "roles" }),
    el("div", { id: "rate" }),
    el("h2", {}, "Workers (heartbeats)"), el("div", { id: "workers" }),
    el("h2", {}, "Dead letters"), el("div", { id: "dead" }),
    el("h2", {}, "Counters"), el("div", { id: "counters" }));

  function head(s) {
    const sup = s.supervisor;
    const restarts = sup ? Object.entries(sup.restarts || {}).map(([r, n]) => `${r}=${n}`).join(" ") : "";
    return el("div", { class: "summary" },
      el("span", {}, "run " + s.run),
      el("span", {}, `episodes live ${s.episodes.live} · finished ${s.episodes.finished}`),
      el("span", { class: s.dead_letters ? "bad" : "" }, `dead letters ${s.dead_letters}`),
      el("span", {}, sup ? `supervisor pid ${sup.pid} on ${sup.host} · restarts: ${restarts || "none"}`
        : "supervisor: none (workers started alone, or no deploy running)"));
  }

  function roles(s) {
    const cols = ["role", "wanted", "live", "stream", "lag", "pending", "dead", "msg/s"];
    return UI.table(cols, Object.entries(s.roles), ([r, v]) => el("tr", { "data-role": r },
      el("td", {}, r), el("td", { class: "num" }, fmt(v.wanted)),
      el("td", { class: "num" + (v.wanted && v.live < v.wanted ? " bad" : "") }, v.live),
      el("td", { class: "num" }, v.stream_length), el("td", { class: "num" }, fmt(v.lag)),
      el("td", { class: "num" }, v.pending), el("td", { class: "num" + (v.dead_letters ? " bad" : "") }, v.dead_letters),
      el("td", { class: "num" }, fmt(v.throughput, 1))));
  }

  function workers(s) {
    const ws = Object.values(s.roles).flatMap((v) => v.workers);
    if (!ws.length) return el("p", { class: "muted" }, "no live heartbeat");
    const cols = ["worker", "pid", "host", "heartbeat age", "in flight", "handled", "duplicates", "dead", "errors"];
    return UI.table(cols, ws, (w) => el("tr", {},
      el("td", {}, w.worker), el("td", { class: "num" }, fmt(w.pid)), el("td", {}, fmt(w.host)),
      el("td", { class: "num" }, fmt(w.age_s, 1) + "s"), el("td", { class: "num" }, fmt(w.in_flight)),
      el("td", { class: "num" }, fmt(w.handled)), el("td", { class: "num" }, fmt(w.duplicates)),
      el("td", { class: "num" }, fmt(w.dead_lettered)), el("td", { class: "num" }, fmt(w.errors))));
  }

  function dead(s) {
    if (!s.dead.length) return el("p", { class: "muted" }, "none");
    const cols = ["id", "group", "kind", "episode", "deliveries", "age", "reason"];
    const now = s.at;
    return UI.table(cols, s.dead, (d) => el("tr", {},
      el("td", {}, d.id), el("td", {}, fmt(d.group)), el("td", {}, fmt(d.kind)), el("td", {}, fmt(d.episode)),
      el("td", { class: "num" }, fmt(d.deliveries)), el("td", { class: "num" }, d.at ? age(now - Number(d.at)) : "–"),
      el("td", {}, el("pre", { class: "text small" }, d.error || ""))));
  }

  function counters(s) {
    const entries = Object.entries(s.counters).sort();
    if (!entries.length) return el("p", { class: "muted" }, "none");
    return UI.table(["counter", "value"], entries, ([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v)));
  }

  function rate(s) {
    for (const [r, v] of Object.entries(s.roles)) {
      if (v.throughput === null) continue;
      (history[r] = history[r] || []).push([s.at - t0, v.throughput]);
      if (history[r].length > 300) history[r].shift();
    }
    const series = Object.entries(history).map(([name, points]) => ({ name, points }));
    return el("div", {}, el("div", { class: "card" },
      Plot.lineChart("throughput (messages/s) since this page opened", series, "seconds")));
  }

  UI.stream("/api/stream/system", {
    system: (s) => {
      UI.replace("head", head(s));
      UI.replace("roles", roles(s));
      UI.replace("rate", rate(s));
      UI.replace("workers", workers(s));
      UI.replace("dead", dead(s));
      UI.replace("counters", counters(s));
    },
  });
})();

// Episodes page: the newest live and finished episodes, refreshed by the server every few
// seconds over Server-Sent Events; filter by gym and status.
"use strict";

(() => {
  const { el, fmt, age } = UI;
  const params = new URLSearchParams(location.search);
  const gyms = new Set();
  let source = null;

  const gymSel = el("select", { id: "gym", onchange: restart }, el("option", { value: "" }, "all gyms"));
  const statusSel = el("select", { id: "status", onchange: restart },
    ["", "live", "finished", "failed"].map((s) => el("option", { value: s }, s || "any status")));
  const counts = el("span", { id: "counts", class: "muted" });
  const main = document.getElementById("main");
  main.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Episodes"), gymSel, statusSel, counts),
    el("div", { id: "episodes" }, el("p", { class: "muted" }, "waiting for episodes…")));

  function addGym(g) {
    if (!g || gyms.has(g)) return;
    gyms.add(g);
    gymSel.append(el("option", { value: g }, g));
  }

  function row(r) {
    const href = "/episode?id=" + encodeURIComponent(r.episode);
    return el("tr", { class: "st-" + r.status, "data-episode": r.episode },
      el("td", {}, el("a", { href }, r.episode)),
      el("td", {}, r.gym), el("td", {}, r.task),
      el("td", {}, el("span", { class: "badge " + r.status }, r.status)),
      el("td", { class: "num" }, r.turn), el("td", { class: "num" }, fmt(r.last_reward)),
      el("td", { class: "num" }, fmt(r.score)), el("td", { class: "num" }, fmt(r.version)),
      el("td", {}, r.worker), el("td", { class: "num" }, age(r.age_s)),
      el("td", { class: "muted" }, r.expired ? "(log expired)" : (r.end || "")));
  }

  function render(data) {
    data.rows.forEach((r) => addGym(r.gym));
    const live = data.rows.filter((r) => r.status === "live").length;
    counts.textContent = `${data.rows.length} shown, ${live} live`;
    const cols = ["episode", "gym", "task", "status", "turn", "last reward", "score", "version",
      "worker", "age", "end"];
    const body = data.rows.length ? UI.table(cols, data.rows, row)
      : el("p", { class: "muted" }, "no episodes (start some with `userrl dispatch`)");
    UI.replace("episodes", el("div", {}, body));
  }

  function restart() {
    const q = new URLSearchParams();
    if (gymSel.value) q.set("gym", gymSel.value);
    if (statusSel.value) q.set("status", statusSel.value);
    history.replaceState(null, "", "/episodes" + (q.toString() ? "?" + q : ""));
    if (source) source.close();
    source = UI.stream("/api/stream/episodes?" + q, { episodes: render });
  }

  addGym(params.get("gym"));
  gymSel.value = params.get("gym") || "";
  statusSel.value = params.get("status") || "";
  restart();
})();

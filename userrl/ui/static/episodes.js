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

  // Rows are kept per episode and only their cells' text changes: a redraw every refresh would
  // lose the row under the mouse (a click in flight, a text selection).
  const rowsById = new Map();
  const COLS = ["episode", "gym", "task", "status", "turn", "last reward", "return", "version", "worker", "age", "end"];
  const NUM = new Set([4, 5, 6, 7, 9]);
  const tbody = el("tbody");
  const tableEl = el("table", {}, el("thead", {}, el("tr", {}, COLS.map((c) => el("th", {}, c)))), tbody);

  function cells(r) {
    return [r.episode, r.gym, r.task, r.status, r.turn, fmt(r.last_reward), fmt(r["return"]), fmt(r.version),
      r.worker, age(r.age_s), r.expired ? "(log expired)" : (r.end || "")].map(String);
  }

  function row(r) {
    let tr = rowsById.get(r.episode);
    if (!tr) {
      const link = el("a", { href: "/episode?id=" + encodeURIComponent(r.episode) }, r.episode);
      tr = el("tr", { "data-episode": r.episode }, el("td", {}, link),
        COLS.slice(1).map((_, i) => el("td", { class: NUM.has(i + 1) ? "num" : (i === 9 ? "muted" : "") })));
      tr.children[3].append(el("span", { class: "badge" }));
      rowsById.set(r.episode, tr);
    }
    tr.className = "st-" + r.status;
    cells(r).forEach((text, i) => {
      if (i === 0) return;
      const target = i === 3 ? tr.children[3].firstChild : tr.children[i];
      if (target.textContent !== text) target.textContent = text;
    });
    tr.children[3].firstChild.className = "badge " + r.status;
    return tr;
  }

  function render(data) {
    (data.gyms || []).forEach(addGym);
    data.rows.forEach((r) => addGym(r.gym));
    const live = data.rows.filter((r) => r.status === "live").length;
    counts.textContent = `${data.rows.length} shown, ${live} live`;
    const wanted = data.rows.map(row);
    const keep = new Set(data.rows.map((r) => r.episode));
    for (const id of [...rowsById.keys()]) if (!keep.has(id)) rowsById.delete(id);
    const same = wanted.length === tbody.children.length && wanted.every((tr, i) => tbody.children[i] === tr);
    if (!same) tbody.replaceChildren(...wanted);
    const body = data.rows.length ? tableEl : el("p", { class: "muted" }, "no episodes (start some with `userrl dispatch`)");
    if (document.getElementById("episodes").firstChild !== body) {
      document.getElementById("episodes").replaceChildren(body);
    }
  }

  function restart() {
    const q = new URLSearchParams();
    if (gymSel.value) q.set("gym", gymSel.value);
    if (statusSel.value) q.set("status", statusSel.value);
    history.replaceState(null, "", "/episodes" + (q.toString() ? "?" + q : ""));
    if (source) source.close();
    rowsById.clear();
    tbody.replaceChildren();
    source = UI.stream("/api/stream/episodes?" + q, { episodes: render });
  }

  addGym(params.get("gym"));
  gymSel.value = params.get("gym") || "";
  statusSel.value = params.get("status") || "";
  restart();
})();

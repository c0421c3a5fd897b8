// Episode page: the dialogue turn by turn, followed live from the episode's Redis stream
// (the server's XREAD BLOCK, sent as Server-Sent Events) until its `end` entry.
"use strict";

(() => {
  const { el, fmt } = UI;
  const id = new URLSearchParams(location.search).get("id") || "";
  const LABEL = { system: "system prompt", user: "user", assistant: "policy", env: "env feedback", end: "end" };
  const rewards = [];
  let state = "live";

  const title = el("h1", { id: "title" }, id);
  const info = el("div", { id: "info", class: "muted" });
  const summary = el("div", { id: "summary", class: "summary" });
  const dialogue = el("div", { id: "dialogue" });
  document.getElementById("main").append(
    el("p", {}, el("a", { href: "/episodes" }, "← episodes")), title, info, summary, dialogue);

  function updateSummary() {
    const total = rewards.reduce((a, b) => a + b, 0);
    summary.replaceChildren(
      el("span", { class: "badge " + state, id: "state" }, state),
      el("span", {}, `turns ${rewards.length}`),
      el("span", {}, `reward per turn: ${rewards.map((r) => fmt(r, 2)).join(", ") || "–"}`),
      el("span", {}, `sum ${fmt(total, 3)}`));
  }

  function entry(e) {
    const role = e.role || "?";
    const meta = [];
    if (e.reward !== undefined) meta.push(el("span", { class: "reward" }, "reward " + fmt(Number(e.reward), 3)));
    if (e.version !== undefined) meta.push(el("span", { class: "version" }, "policy v" + e.version));
    if (e.by) {
      const human = e.by.split(",").some((b) => b.startsWith("human:"));
      meta.push(el("span", { class: "by" + (human ? " human" : "") }, "user: " + e.by));
    }
    if (e.error) meta.push(el("span", { class: "badge failed error-kind" }, e.error));
    if (e.worker) meta.push(el("span", { class: "worker" }, e.worker));
    const head = el("div", { class: "head" }, el("span", { class: "turnno" }, "t" + (e.turn ?? "?")),
      el("span", { class: "role" }, LABEL[role] || role), meta);
    const text = el("pre", { class: "text" }, e.text || "");
    if (role === "system") return el("details", { class: "entry role-system" }, el("summary", {}, head), text);
    return el("div", { class: "entry role-" + role }, head, text);
  }

  function onEntry(e) {
    if (e.role === "env" && e.reward !== undefined) rewards.push(Number(e.reward));
    if (e.role === "end") state = (e.text || "").startsWith("failed") ? "failed" : "finished";
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    dialogue.append(entry(e));
    updateSummary();
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }

  async function start() {
    updateSummary();
    try {
      const meta = await (await fetch("/api/episode?id=" + encodeURIComponent(id))).json();
      info.textContent = `gym ${meta.gym || "?"} · task ${meta.task || "?"}`;
      if (meta.seat && meta.state !== "finished" && typeof Seat !== "undefined") Seat.start(id, document.getElementById("main"));
      if (meta.state === "unknown" && !meta.entries.length) {
        info.textContent += " · not started yet (or an unknown id): waiting for its first turn";
      }
    } catch (err) {
      info.textContent = "could not read the episode: " + err;
    }
    const es = UI.stream("/api/stream/episode?id=" + encodeURIComponent(id), {
      entry: onEntry,
      end: () => { es.close(); UI.setConn("episode ended", true); if (typeof Seat !== "undefined") Seat.stop("the episode is over: the seat is closed"); },
      expired: () => {
        es.close();
        state = "expired";
        updateSummary();
        dialogue.append(el("p", { class: "muted" }, "this episode finished and its log has expired"));
        UI.setConn("expired", false);
      },
    });
  }

  start();
})();

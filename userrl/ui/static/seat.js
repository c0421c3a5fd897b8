// The user's seat (shown only when the deploy has user.seat on): claim a live episode, answer
// the user questions the user workers park for it, and renew the claim while this page is open.
// A page that closes stops renewing, and the claim times out back to the simulator.
"use strict";

const Seat = (() => {
  const { el } = UI;
  let id = "";
  let holder = "";
  let who = "";
  let box = null;
  let asksBox = null;
  let pollTimer = null;
  let renewTimer = null;
  const shown = new Map(); // "seq:hop" -> its node, kept so a half-written reply survives polls

  async function call(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers["content-type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = {};
    try { data = await r.json(); } catch (err) { data = {}; }
    return { ok: r.ok, status: r.status, data };
  }

  function status(text, bad) {
    const s = document.getElementById("seat-status");
    if (s) { s.textContent = text; s.className = bad ? "bad" : "muted"; }
  }

  function idle(message, bad) {
    holder = "";
    clearInterval(renewTimer);
    shown.clear();
    const name = el("input", { id: "seat-who", placeholder: "your name", maxlength: "40", value: who });
    const take = el("button", { id: "seat-claim", onclick: () => claim(name.value.trim()) }, "Take the user's seat");
    box.replaceChildren(el("div", { class: "row" }, el("strong", {}, "User's seat"), name, take,
      el("span", { id: "seat-status", class: "muted" }, message || "the simulator answers this episode's user")));
    if (bad) status(message, true);
  }

  function held() {
    asksBox = el("div", { id: "seat-asks" });
    const give = el("button", { id: "seat-release", onclick: release }, "Give the seat back");
    box.replaceChildren(
      el("div", { class: "row" }, el("strong", {}, `You are the user (human:${who})`), give,
        el("span", { id: "seat-status", class: "muted" }, "waiting for the agent's next question…")),
      asksBox);
  }

  async function claim(name) {
    if (!name) { status("write your name first", true); return; }
    const r = await call("POST", "/api/seat/claim", { id, who: name });
    if (!r.ok) { status(r.data.error || `could not claim (HTTP ${r.status})`, true); return; }
    holder = r.data.holder;
    who = r.data.who;
    held();
    clearInterval(renewTimer);
    renewTimer = setInterval(renew, Math.max(1000, (r.data.timeout_s * 1000) / 3));
    poll();
  }

  async function renew() {
    if (!holder) return;
    const r = await call("POST", "/api/seat/renew", { id, holder });
    if (r.status === 410) idle("your claim expired: the simulator answers again", true);
  }

  async function release() {
    if (!holder) return;
    await call("POST", "/api/seat/release", { id, holder });
    idle("you gave the seat back: the simulator answers again");
  }

  function askNode(a) {
    const key = `${a.seq}:${a.hop}`;
    const text = el("textarea", { class: "seat-reply", "data-ask": key, placeholder: "your reply (plain words, or the JSON the instructions ask for)" });
    const note = el("span", { class: "muted seat-note" });
    const send = el("button", { class: "seat-send", "data-ask": key, onclick: async () => {
      send.disabled = true;
      const r = await call("POST", "/api/seat/reply", { id, holder, seq: a.seq, hop: a.hop, text: text.value });
      if (r.ok) {
        note.textContent = "sent: it reaches the episode through the user stream";
        note.className = "muted seat-note sent";
        text.disabled = true;
      } else {
        note.textContent = r.data.error || `not sent (HTTP ${r.status})`;
        note.className = "bad seat-note";
        send.disabled = false;
      }
    } }, "Send as the user");
    return el("div", { class: "ask", "data-ask": key },
      el("div", { class: "muted" }, `turn ${a.seq} · question ${a.hop} · ${a.name}`),
      el("pre", { class: "text seat-question" }, a.question),
      el("details", {}, el("summary", {}, "what the user knows and how to answer"),
        el("pre", { class: "text small" }, a.instructions)),
      a.hint ? el("div", { class: "muted" }, "the scripted user would answer: ", el("code", {}, a.hint)) : null,
      text, el("div", { class: "row" }, send, note));
  }

  async function poll() {
    if (!id) return;
    let r;
    try {
      r = await call("GET", "/api/seat?id=" + encodeURIComponent(id) + (holder ? "&holder=" + encodeURIComponent(holder) : ""));
    } catch (err) {
      status("seat: " + err, true);
      return;
    }
    if (!r.ok) { status(r.data.error || `seat: HTTP ${r.status}`, true); return; }
    const s = r.data;
    if (!s.live) { stop("the episode is over: the seat is closed"); return; }
    if (holder && !s.mine) { idle("your claim expired: the simulator answers again", true); return; }
    if (!holder) {
      if (s.claim) status(`taken by human:${s.claim.who}`);
      return;
    }
    const open = new Set(s.asks.map((a) => `${a.seq}:${a.hop}`));
    for (const [key, node] of shown) {
      if (!open.has(key)) { node.remove(); shown.delete(key); }
    }
    for (const a of s.asks) {
      const key = `${a.seq}:${a.hop}`;
      if (!shown.has(key)) {
        const node = askNode(a);
        shown.set(key, node);
        asksBox.append(node);
      }
    }
    status(s.asks.length ? "the agent is waiting for your reply" : "waiting for the agent's next question…");
  }

  function start(episodeId, main) {
    id = episodeId;
    box = el("div", { id: "seat" });
    main.insertBefore(box, document.getElementById("dialogue"));
    idle("");
    pollTimer = setInterval(poll, 1000);
    poll();
  }

  function stop(message) {
    clearInterval(pollTimer);
    clearInterval(renewTimer);
    holder = "";
    if (box && message) box.replaceChildren(el("p", { id: "seat-closed", class: "muted" }, message));
  }

  return { start, stop };
})();

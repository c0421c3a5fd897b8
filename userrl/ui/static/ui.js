// Shared helpers of the userrl pages. Text from Redis (model and user turns, errors) is only
// ever put into the page as text nodes: el() never parses HTML.
"use strict";

const UI = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || v === "") return "–";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits ?? 3);
    return String(v);
  }

  function age(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(0) + "s";
    if (s < 3600) return (s / 60).toFixed(0) + "m";
    return (s / 3600).toFixed(1) + "h";
  }

  function setConn(text, ok) {
    const c = document.getElementById("conn");
    c.textContent = text;
    c.className = "conn " + (ok ? "ok" : "bad");
  }

  // An EventSource whose named events go to handlers; shows the connection state in the header.
  function stream(url, handlers) {
    const es = new EventSource(url);
    es.onopen = () => setConn("live", true);
    es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? "closed" : "reconnecting…", false);
    // the server ends a stream with `problem` when Redis is unreachable; the browser reconnects
    es.addEventListener("problem", (ev) => setConn(JSON.parse(ev.data).error, false));
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => fn(JSON.parse(ev.data), ev));
    }
    return es;
  }

  function table(columns, rows, rowFn) {
    const head = el("tr", {}, columns.map((c) => el("th", {}, c)));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, rows.map(rowFn)));
  }

  function replace(id, node) {
    const old = document.getElementById(id);
    node.id = id;
    old.replaceWith(node);
  }

  function markNav() {
    const page = document.body.dataset.page === "episode" ? "episodes" : document.body.dataset.page;
    const a = document.querySelector(`nav a[data-nav="${page}"]`);
    if (a) a.classList.add("active");
  }

  markNav();
  return { el, fmt, age, stream, table, replace, setConn };
})();

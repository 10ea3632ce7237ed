// tipline console: live pages without a reload. Every second, ask the read model's version;
// when it moved (or every 5 s, for ages and overdue states), fetch this page's <main> alone and
// bring the page in line with it row by row (rows carry data-key), so focus, selection and
// scroll stay where the reader left them. The header says whether the page is live, paused or
// offline (within 5 s of the server going away). Nothing is loaded from elsewhere.
"use strict";
(function () {
  const main = document.getElementById("live");
  const state = document.getElementById("live-state");
  const pause = document.getElementById("live-pause");
  if (!main || !state || !pause) return;
  const OFFLINE_AFTER_MS = 2500;  // no answer for this long: offline (shown within 5 s)
  let version = main.dataset.version;
  let answered = Date.now();  // the server last answered
  let refreshed = Date.now();  // the page last brought up to date
  let offlineSince = null;
  let paused = sessionStorage.getItem("tipline-console-paused") === "1";
  let busy = false;

  function utc(ms) { return new Date(ms).toISOString().slice(11, 19) + " UTC"; }

  function show() {
    const now = Date.now();
    if (offlineSince === null && now - answered > OFFLINE_AFTER_MS) offlineSince = answered;
    let text, kind;
    if (offlineSince !== null) {
      kind = "offline";
      text = "offline since " + utc(offlineSince) + " · retrying";
    } else if (paused) {
      kind = "paused";
      text = "paused · updated " + utc(refreshed);
    } else {
      kind = "live";
      text = "live · updated " + Math.max(0, Math.round((now - refreshed) / 1000)) + " s ago";
    }
    if (state.textContent !== text) state.textContent = text;
    state.dataset.state = kind;
    document.body.dataset.live = kind;
    pause.textContent = paused ? "resume" : "pause";
    pause.setAttribute("aria-pressed", String(paused));
  }

  async function get(url, headers) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 2500);
    try {
      return await fetch(url, { headers: headers || {}, credentials: "same-origin",
                                cache: "no-store", signal: abort.signal });
    } finally {
      clearTimeout(timer);
    }
  }

  function keyOf(node) {
    if (node.nodeType !== 1) return "#" + node.nodeType;
    return node.tagName + "|" + (node.id || node.getAttribute("data-key") || "");
  }

  function keyed(node) {
    return node.nodeType === 1 && (node.id !== "" || node.hasAttribute("data-key"));
  }

  // Make `old` look like `neu`, keeping every node that is still there.
  function morph(old, neu) {
    if (old.nodeType !== 1) {
      if (old.nodeValue !== neu.nodeValue) old.nodeValue = neu.nodeValue;
      return;
    }
    for (const a of Array.from(old.attributes)) {
      if (!neu.hasAttribute(a.name)) old.removeAttribute(a.name);
    }
    for (const a of Array.from(neu.attributes)) {
      if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
    }
    children(old, neu);
  }

  function children(old, neu) {
    const olds = Array.from(old.childNodes);
    let i = 0;
    for (const child of Array.from(neu.childNodes)) {
      const key = keyOf(child);
      let j = i;
      if (keyed(child)) while (j < olds.length && keyOf(olds[j]) !== key) j++;
      if (j < olds.length && keyOf(olds[j]) === key) {
        for (; i < j; i++) olds[i].remove();  // rows gone from the page
        morph(olds[i], child);
        i++;
      } else {
        old.insertBefore(child, i < olds.length ? olds[i] : null);  // a new row
      }
    }
    for (; i < olds.length; i++) olds[i].remove();
  }

  async function refresh() {
    const response = await get(location.pathname + location.search,
                               { "X-Console-Fragment": "1" });
    if (response.status === 401) { location.reload(); return; }
    if (!response.ok) return;
    const fresh = document.createElement("main");
    fresh.innerHTML = await response.text();
    children(main, fresh);
    const now = response.headers.get("X-Console-Version");
    if (now) { version = now; main.dataset.version = now; }
    refreshed = Date.now();
  }

  async function tick() {
    show();
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await get("/live/version");
      if (response.status === 401) { location.reload(); return; }
      if (!response.ok) throw new Error("status " + response.status);
      const now = String((await response.json()).version);
      answered = Date.now();
      offlineSince = null;
      if (paused) return;
      if (now !== version || Date.now() - refreshed > 5000) await refresh();
      else refreshed = Date.now();  // checked: the page is up to date
    } catch (e) {
      // the console is away: the header says offline once it has been for OFFLINE_AFTER_MS
    } finally {
      busy = false;
      show();
    }
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    sessionStorage.setItem("tipline-console-paused", paused ? "1" : "0");
    show();
    if (!paused) tick();
  });
  show();
  setInterval(tick, 1000);
})();

// tipline console: live pages without a reload. Every second, ask the read model's version;
// when it moved (or every 5 s, for ages and overdue states), fetch this page's <main> alone
// and put it in place. Nothing else: no framework, nothing loaded from elsewhere.
"use strict";
(function () {
  const main = document.getElementById("live");
  if (!main) return;
  let version = main.dataset.version;
  let refreshed = Date.now();
  let busy = false;

  async function refresh() {
    const response = await fetch(location.pathname + location.search, {
      headers: { "X-Console-Fragment": "1" }, credentials: "same-origin", cache: "no-store",
    });
    if (response.status === 401) { location.reload(); return; }
    if (!response.ok) return;
    const html = await response.text();
    const now = response.headers.get("X-Console-Version");
    if (html !== main.innerHTML) main.innerHTML = html;
    if (now) { version = now; main.dataset.version = now; }
    refreshed = Date.now();
    document.body.dataset.refreshed = String(refreshed);
  }

  async function tick() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch("/live/version", { credentials: "same-origin",
                                                      cache: "no-store" });
      if (response.status === 401) { location.reload(); return; }
      const now = String((await response.json()).version);
      if (now !== version || Date.now() - refreshed > 5000) await refresh();
    } catch (e) {
      document.body.dataset.offline = "1";  // the console is away: try again next tick
    } finally {
      busy = false;
    }
  }

  setInterval(tick, 1000);
})();

// The dashboard's only script: live regions refreshed on run changes (SSE from
// /dashboard/<project>/<env>/events), and a confirm step for destructive buttons.
"use strict";

function refresher(region) {
  let pending = null;
  let last = 0;
  async function refresh() {
    pending = null;
    last = Date.now();
    const checked = new Set(
      [...document.querySelectorAll("input[name=run_ids]:checked")].map((el) => el.value));
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.querySelector("[data-live]");
    if (!fresh) return;
    region.replaceChildren(...fresh.childNodes);
    region.dataset.watch = fresh.dataset.watch;
    for (const box of region.querySelectorAll("input[name=run_ids]")) {
      box.checked = checked.has(box.value);
    }
  }
  return function schedule() {
    // at most one refresh a second, however many changes arrive
    if (pending) return;
    pending = setTimeout(refresh, Math.max(100, 1000 - (Date.now() - last)));
  };
}

function live() {
  const region = document.querySelector("[data-live]");
  if (!region || !region.dataset.events) return;
  const schedule = refresher(region);
  const source = new EventSource(region.dataset.events);
  // (re)connected: re-read once, for a change made between this page's render (or the
  // connection's loss) and the subscription, which no event will ever announce
  source.onopen = schedule;
  source.onmessage = (event) => {
    const change = JSON.parse(event.data);
    const watch = region.dataset.watch || "";
    if (watch === "*" || watch.split(" ").includes(change.id)) schedule();
  };
  source.addEventListener("resync", schedule);
  // changes between the page's render and the subscription (or during a reconnect) were
  // not streamed: re-read once the stream is open
  source.onopen = schedule;
  document.body.dataset.live = "connected";
}

function confirmations() {
  for (const button of document.querySelectorAll("[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  live();
  confirmations();
});

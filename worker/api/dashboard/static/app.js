// The dashboard's only script: live regions refreshed on run changes (SSE from
// /dashboard/<project>/<env>/events), and a confirm step for destructive buttons.
"use strict";

// Swap the live region for its fresh copy, keeping what the user did meanwhile: the runs
// selected (read now, not when the fetch began: a box checked while the page was being
// fetched stays checked) and the focused checkbox.
function swap(region, fresh) {
  const boxes = () => region.querySelectorAll("input[name=run_ids]");
  const checked = new Set([...boxes()].filter((box) => box.checked).map((box) => box.value));
  const active = document.activeElement;
  const focused = active && region.contains(active) && active.name === "run_ids"
    ? active.value : null;
  region.replaceChildren(...fresh.childNodes);
  region.dataset.watch = fresh.dataset.watch;
  for (const box of boxes()) {
    box.checked = checked.has(box.value);
    if (box.value === focused) box.focus();
  }
}

function refresher(region) {
  let timer = null;  // a refresh is scheduled
  let running = false;  // a refresh is fetching
  let again = false;  // a change came while it fetched: it may have read the page before it
  let last = 0;
  // the region's markup as the server last rendered it: a refresh that finds it unchanged
  // (most do: the re-read on connecting, changes of runs this list does not show) leaves
  // the page alone, so nothing the user is pointing at is replaced under the pointer
  let shown = region.innerHTML;
  let count = 0;
  async function refresh() {
    timer = null;
    running = true;
    last = Date.now();
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.querySelector("[data-live]");
      if (fresh && fresh.innerHTML !== shown) {
        shown = fresh.innerHTML;
        swap(region, fresh);
      }
    } catch (error) {
      // the server is unreachable: the stream's reconnection (onopen) re-reads the page
    } finally {
      // re-read n times (swapped or not): what a test, or a style, can wait for
      region.dataset.refreshed = String(++count);
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }
  function schedule() {
    // one refresh at a time (two in flight could answer out of order and leave the older
    // page on screen), and at most one a second, however many changes arrive
    if (running) {
      again = true;
      return;
    }
    if (timer) return;
    timer = setTimeout(refresh, Math.max(100, 1000 - (Date.now() - last)));
  }
  return schedule;
}

function live() {
  const region = document.querySelector("[data-live]");
  if (!region || !region.dataset.events) return;
  const schedule = refresher(region);
  const source = new EventSource(region.dataset.events);
  // (re)connected: re-read once, for a change made between this page's render (or the
  // connection's loss) and the subscription, which no event will ever announce
  source.onopen = () => {
    document.body.dataset.live = "connected";
    schedule();
  };
  source.onerror = () => {
    document.body.dataset.live = "reconnecting";
  };
  source.onmessage = (event) => {
    const change = JSON.parse(event.data);
    const watch = region.dataset.watch || "";
    if (watch === "*" || watch.split(" ").includes(change.id)) schedule();
  };
  source.addEventListener("resync", schedule);
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

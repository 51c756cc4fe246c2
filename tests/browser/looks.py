"""What a person would see, asked of the page in the browser: width, overlaps, headings, speed."""

from __future__ import annotations

from tests.browser.cdp import Browser

#: Elements whose right edge passes the column's (inside a code block they scroll, as on GitHub).
TOO_WIDE = """(() => {
  const column = document.getElementById("comment").getBoundingClientRect().right + 0.5;
  return Array.from(document.querySelectorAll("#comment *"))
    .filter((e) => !e.closest("pre") && e.getBoundingClientRect().width > 0 &&
                   e.getBoundingClientRect().right > column)
    .map((e) => e.tagName + ": " + (e.textContent || "").trim().slice(0, 50));
})()"""

#: Pairs of text labels of one chart whose boxes overlap.
OVERLAPPING_LABELS = """(() => {
  const pairs = [];
  document.querySelectorAll("svg").forEach((chart) => {
    const boxes = Array.from(chart.querySelectorAll("text"))
      .filter((t) => t.textContent.trim())
      .map((t) => [t.textContent.trim(), t.getBoundingClientRect()]);
    boxes.forEach(([a, p], i) => boxes.slice(i + 1).forEach(([b, q]) => {
      const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (w > 1 && h > 1) pairs.push(a + " / " + b);
    }));
  });
  return pairs;
})()"""

OPEN_DETAILS = "document.querySelectorAll('details').forEach((d) => { d.open = true; }); true"

#: Milliseconds a click on a column header takes to sort and repaint the table.
SORT_TIME = """((key) => {
  const started = performance.now();
  document.querySelector('#table-head [data-key="' + key + '"]').click();
  void document.getElementById("spacer").offsetHeight;
  return performance.now() - started;
})"""

#: Milliseconds from typing into the filter to the table showing the answer.
FILTER_TIME = """((query) => new Promise((done) => {
  const input = document.getElementById("filter");
  const count = document.getElementById("count");
  const before = count.textContent;
  const started = performance.now();
  input.value = query;
  input.dispatchEvent(new Event("input"));
  const poll = () => count.textContent !== before ? done(performance.now() - started)
                                                  : requestAnimationFrame(poll);
  poll();
}))"""

VISIBLE_NAMES = """Array.from(document.querySelectorAll("#spacer .row:not([hidden])"))
  .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
  .map((row) => row.children[0].textContent)"""


def sort_time(browser: Browser, key: str) -> float:
    return browser.evaluate(f"{SORT_TIME}({key!r})")


def filter_time(browser: Browser, query: str) -> float:
    return browser.evaluate(f"{FILTER_TIME}({query!r})")

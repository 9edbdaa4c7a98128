// ptvl review: keyboard shortcuts and the actions of the row page (vanilla JS, no build step).
// Every action POSTs JSON to /api/...; the answer's message is shown in the status bar (kept across the
// page change in sessionStorage), and accept/edit move on to the next row of the queue.
// `replaces` names the human correction shown as current (its id, "" for the machine text): an accept
// over a human text asks first, and the server refuses one that names another (409).
(function () {
  "use strict";
  const status = document.getElementById("status");
  const help = document.getElementById("help");
  const dataEl = document.getElementById("row-data");
  const row = dataEl ? JSON.parse(dataEl.textContent) : null;

  function show(message, kind) {
    status.textContent = message;
    status.className = kind || "ok";
    status.hidden = false;
  }

  const flash = sessionStorage.getItem("ptvl-review-flash");
  if (flash) {
    sessionStorage.removeItem("ptvl-review-flash");
    const f = JSON.parse(flash);
    show(f.message, f.kind);
  }

  function go(delta) {
    if (!row) return;
    const pos = row.pos + delta;
    if (pos < 0 || pos >= row.total) return false;
    location.href = "/q/" + encodeURIComponent(row.queue) + "/" + pos;
    return true;
  }

  async function post(path, body, then) {
    let res, out;
    try {
      res = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify(Object.assign({engine: row.engine, text_hash: row.text_hash}, body))});
      out = await res.json();
    } catch (e) {
      show("the server did not answer: " + e, "error");
      return;
    }
    if (!res.ok) {
      show("not saved: " + (out.error || res.status), "error");
      return;
    }
    const kind = out.superseded ? "warn" : "ok";
    sessionStorage.setItem("ptvl-review-flash", JSON.stringify({message: out.message, kind: kind}));
    if (then === "next" && go(1)) return;
    location.reload();
  }

  const seen = () => (row.human ? String(row.human.id) : "");

  function accept(engine) {
    const text = row.machine[engine];
    if (row.human && text !== row.current &&
        !window.confirm("This row has a human " + row.human.action + " by " + row.human.who + ":\n\n  " +
                        row.current + "\n\nReplace it with " + engine + "'s output?\n\n  " + text)) {
      show("kept the human text (nothing saved)", "warn");
      return;
    }
    post("/api/correct", {action: "accept", source_engine: engine, replaces: seen()}, "next");
  }

  const form = document.getElementById("edit-form");
  const text = document.getElementById("edit-text");
  function startEdit() {
    if (!form) return;
    form.hidden = false;
    text.focus();
    text.setSelectionRange(text.value.length, text.value.length);
  }
  function cancelEdit() {
    if (!form) return;
    form.hidden = true;
    text.value = row.current;
  }
  function saveEdit() {
    post("/api/correct", {action: "edit", text_pt: text.value, replaces: seen()}, "next");
  }

  function verdict(flag, value) {
    post("/api/verdict", {flag: flag, verdict: value}, "reload");
  }
  function firstOpenFlag() {
    const open = Array.from(document.querySelectorAll(".engine.reviewed .flag"))
      .find(li => !li.querySelector(".verdict").textContent.trim());
    return open ? open.dataset.flag : (row.flags[0] || null);
  }

  function gold() {
    const b = document.getElementById("btn-gold");
    if (b && !b.disabled) post("/api/gold", {}, "reload");
  }

  if (row && row.text_hash) {
    document.querySelectorAll(".btn-accept").forEach(b => b.addEventListener("click", () => accept(b.dataset.engine)));
    document.querySelectorAll(".btn-verdict").forEach(b =>
      b.addEventListener("click", () => verdict(b.dataset.flag, b.dataset.verdict)));
    document.getElementById("btn-edit").addEventListener("click", startEdit);
    document.getElementById("btn-gold").addEventListener("click", gold);
    document.getElementById("cancel-edit").addEventListener("click", cancelEdit);
    form.addEventListener("submit", e => { e.preventDefault(); saveEdit(); });
  }

  const start = document.getElementById("start");
  if (start) start.focus();  // the index: Enter opens the first queue that has rows

  document.addEventListener("keydown", e => {
    const typing = e.target && (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT");
    if (typing) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); saveEdit(); }
      else if (e.key === "Escape") { e.preventDefault(); cancelEdit(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "?") { e.preventDefault(); help.open ? help.close() : help.showModal(); return; }
    if (!row || !row.text_hash) return;
    const k = e.key;
    if (k === "j") go(1);
    else if (k === "k") go(-1);
    else if (k === "a") accept(row.engine);
    else if (k === "e") { e.preventDefault(); startEdit(); }
    else if (k === "g") gold();
    else if (k === "f" || k === "c") {
      const flag = firstOpenFlag();
      if (flag) verdict(flag, k === "f" ? "false_alarm" : "confirmed");
      else show("this row has no flag", "error");
    } else if (/^[1-9]$/.test(k) && row.engines[Number(k) - 1]) accept(row.engines[Number(k) - 1]);
  });
})();

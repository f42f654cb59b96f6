// runledger Trust UI: live updates (one EventSource), confirmations, toasts, local times.
// Pages are rendered by the server; this script only patches the elements that change, so
// an open dialog, the focus and the scroll position are never replaced.
"use strict";
(function () {
  const body = document.body;
  const canWrite = body.dataset.canWrite === "1";
  const toasts = document.getElementById("toasts");
  const dialog = document.getElementById("confirm");

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- toasts (an aria-live region; each toast stays until dismissed or 12 s) ----
  function toast(message, opts) {
    opts = opts || {};
    const t = el("div", { class: "toast" + (opts.error ? " error" : ""), role: "status" });
    if (opts.kind) t.dataset.toast = opts.kind;
    t.appendChild(el("div", {}, message));
    const row = el("div", { class: "toast-actions" });
    for (const a of opts.actions || []) {
      const b = el(a.href ? "a" : "button", a.href ? { href: a.href, class: "button" } : { type: "button" }, a.label);
      if (a.onClick) b.addEventListener("click", () => { t.remove(); a.onClick(); });
      row.appendChild(b);
    }
    const close = el("button", { type: "button", "aria-label": "Dismiss" }, "Dismiss");
    close.addEventListener("click", () => t.remove());
    row.appendChild(close);
    t.appendChild(row);
    toasts.appendChild(t);
    if (!opts.sticky) setTimeout(() => t.remove(), 12000);
    return t;
  }

  // ---- confirmations: every write goes through the dialog ----
  function confirmThen(text, onYes) {
    if (!dialog) return;
    dialog.querySelector("#confirm-text").textContent = text;
    const yes = dialog.querySelector("#confirm-yes");
    const fresh = yes.cloneNode(true);
    yes.replaceWith(fresh);
    fresh.addEventListener("click", () => { dialog.close(); onYes(); });
    dialog.showModal();
    fresh.focus();
  }

  async function post(url) {
    const res = await fetch(url, { method: "POST", headers: { "X-Runledger-UI": "1" }, credentials: "same-origin" });
    let data = {};
    try { data = await res.json(); } catch (_) { /* empty body */ }
    if (!res.ok) throw new Error((data.code ? data.code + ": " : "") + (data.message || res.statusText));
    return data;
  }

  function runAction(button) {
    const url = button.dataset.post;
    const say = button.dataset.confirm;
    const go = async () => {
      button.disabled = true;
      try {
        const data = await post(url);
        toast(data.message || "Done.");
        if (data.job_id) await refreshJob(data.job_id);
        if (button.dataset.reload === "1") location.reload();
      } catch (e) {
        toast(e.message, { error: true });
      } finally {
        button.disabled = false;
      }
    };
    if (say) confirmThen(say, go); else go();
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-post]");
    if (b) { ev.preventDefault(); runAction(b); }
  });
  if (dialog) dialog.querySelector("#confirm-no").addEventListener("click", () => dialog.close());

  // ---- patching a job's elements ----
  function setState(scope, state) {
    for (const s of scope.querySelectorAll('[data-field="state"]')) {
      s.dataset.state = state;
      s.textContent = state;
    }
  }
  function setProgress(scope, pct, step) {
    for (const p of scope.querySelectorAll('progress[data-field="progress"]')) p.value = pct;
    for (const p of scope.querySelectorAll('[data-field="pct"]')) p.textContent = pct + "%";
    if (step !== undefined) for (const s of scope.querySelectorAll('[data-field="step"]')) s.textContent = step || "";
  }
  function scopesOf(jobId) {
    return document.querySelectorAll('[data-job="' + jobId + '"]');
  }

  async function liveJob(jobId) {
    const res = await fetch("/ui/jobs/" + jobId + "/live.json", { credentials: "same-origin" });
    if (!res.ok) return null;
    return res.json();
  }

  async function refreshJob(jobId) {
    const j = await liveJob(jobId);
    if (!j) return null;
    for (const scope of scopesOf(jobId)) {
      setState(scope, j.state);
      setProgress(scope, j.progress, j.step);
    }
    const page = document.querySelector('[data-job-page="' + jobId + '"]');
    if (page) {
      for (const b of page.querySelectorAll("button[data-action]")) b.hidden = !j.actions[b.dataset.action];
      const rec = page.querySelector("#recovery-text");
      if (rec) rec.textContent = j.recovery_text;
      for (const d of page.querySelectorAll("[data-live]")) d.textContent = j.live[d.dataset.live];
      const audit = page.querySelector("#audit-rows");
      if (audit && j.audit.length) {
        audit.replaceChildren(...j.audit.map((a) => {
          const tr = el("tr");
          for (const v of [a.action, a.actor, a.at]) tr.appendChild(el("td", {}, v));
          return tr;
        }));
      }
      const keys = page.querySelector("#ckpt-keys");
      if (keys) {
        keys.replaceChildren(...(j.checkpoint ? j.checkpoint.keys : []).map((k) => el("li", { class: "mono" }, k)));
        page.querySelector("#ckpt-summary").textContent = j.checkpoint_text;
      }
    }
    return j;
  }

  function resumableToast(j) {
    if (document.querySelector('[data-toast="resumable"][data-job-id="' + j.id + '"]')) return;
    const actions = [];
    if (canWrite) actions.push({ label: "Resume…", onClick: () => confirmThen("Resume job #" + j.id + " from its checkpoint? It goes back to the queue.", async () => {
      try { const d = await post("/ui/jobs/" + j.id + "/resume"); toast(d.message); await refreshJob(j.id); } catch (e) { toast(e.message, { error: true }); }
    }) });
    if (!document.querySelector('[data-job-page="' + j.id + '"]')) actions.push({ label: "Open job #" + j.id, href: "/ui/jobs/" + j.id });
    const t = toast("Job #" + j.id + " (" + j.kind + ") is paused with a checkpoint: it can be resumed.", { kind: "resumable", actions, sticky: true });
    t.dataset.jobId = j.id;
  }

  // ---- the event stream ----
  function onEvent(e) {
    const list = document.querySelector('ol#events[data-job="' + e.job_id + '"]');
    if (list) {
      const li = el("li", { "data-seq": e.seq });
      li.appendChild(el("span", { class: "kind" }, e.kind));
      li.appendChild(el("time", { datetime: e.at, class: "muted" }, e.at));
      li.appendChild(document.createTextNode(" " + JSON.stringify(e.payload)));
      const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      list.appendChild(li);
      if (atEnd) list.scrollTop = list.scrollHeight;
    }
    if (e.kind === "progress") {
      for (const scope of scopesOf(e.job_id)) setProgress(scope, e.payload.progress, e.payload.step);
      return;
    }
    const interested = scopesOf(e.job_id).length > 0;
    const fresh = document.getElementById("new-jobs");
    if (fresh && e.kind === "created" && !interested) {
      fresh.dataset.count = String(Number(fresh.dataset.count || 0) + 1);
      const link = fresh.querySelector("a");
      link.href = location.href;
      link.textContent = fresh.dataset.count + " new job" + (fresh.dataset.count === "1" ? "" : "s") + " since this page loaded";
      fresh.hidden = false;
    }
    if (interested || e.kind === "paused") {
      refreshJob(e.job_id).then((j) => { if (j && e.kind === "paused" && j.resumable) resumableToast(j); });
    }
  }

  function follow() {
    const url = body.dataset.stream;
    if (!url || !window.EventSource) return;
    const sep = url.includes("?") ? "&" : "?";
    const src = new EventSource(url + sep + "after=" + encodeURIComponent(body.dataset.cursor || "0"));
    const handle = (m) => {
      try { onEvent(JSON.parse(m.data)); } catch (err) { console.warn("bad event", err); }
    };
    src.addEventListener("message", handle);
    src.addEventListener("job", handle);
    src.addEventListener("resync", () => {
      const ids = new Set([...document.querySelectorAll("[data-job]")].map((n) => n.dataset.job));
      for (const id of ids) refreshJob(id);
    });
    body.dataset.live = "1";
  }

  // ---- times in the viewer's zone ----
  for (const t of document.querySelectorAll("time[data-local]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      const span = t.parentElement.querySelector(".local-time") || t.after(el("span", { class: "local-time muted" })) || t.nextElementSibling;
      span.textContent = " · your time " + d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    }
  }

  // A paused, resumable job opened directly shows the toast too.
  const page = document.querySelector("[data-job-page]");
  if (page && page.dataset.resumable === "1") refreshJob(page.dataset.jobPage).then((j) => j && j.resumable && resumableToast(j));

  window.runledgerUi = { toast, refreshJob };
  follow();
})();

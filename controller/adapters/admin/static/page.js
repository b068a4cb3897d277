// njet-cert-manager status page. Plain JavaScript, no build step, nothing fetched from
// elsewhere: every datum comes from this controller's JSON API and is written with
// textContent (never innerHTML). The admin token, when the server asks for one (401), is
// kept in this tab's sessionStorage and sent as an Authorization header, never as a cookie.
"use strict";

(() => {
  const TOKEN_KEY = "njcm-admin-token";
  const REFRESH_MS = 15000;
  const SAFE_NAME = /^[a-z0-9*_.-]+$/;
  const DAY = 86400000;
  const $ = (id) => document.getElementById(id);

  let last = null;          // the last data shown: {certs, plan}
  let inflight = null;      // the refresh in progress (one at a time)
  let refreshes = 0;
  const rowMsgs = new Map(); // domain -> {kind, text, force, serial}: survives re-rendering

  class AuthNeeded extends Error {}

  // -- DOM helpers: text only ---------------------------------------------------------------
  function el(tag, opts, ...children) {
    const e = document.createElement(tag);
    if (opts) {
      if (opts.cls) e.className = opts.cls;
      if (opts.text !== undefined && opts.text !== null) e.textContent = String(opts.text);
      if (opts.title) e.title = String(opts.title);
      if (opts.data) {
        for (const [k, v] of Object.entries(opts.data)) e.dataset[k] = String(v);
      }
    }
    for (const c of children) {
      if (c !== null && c !== undefined && c !== false) e.append(c); // strings become text nodes
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(node, on) {
    node.hidden = !on;
  }

  // -- formatting ---------------------------------------------------------------------------
  function fmtTime(iso) {
    if (!iso) return "";
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return String(iso);
    return new Date(t).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  function fmtDays(days) {
    const d = Math.abs(days);
    if (d >= 2) return `${Math.round(d)} days`;
    if (d * 24 >= 2) return `${Math.round(d * 24)} hours`;
    return `${Math.max(1, Math.round(d * 1440))} minutes`;
  }

  function short(fp) {
    return fp ? String(fp).slice(0, 12) + "…" : "";
  }

  function issuerName(rfc4514) {
    if (!rfc4514) return "";
    const m = /(?:^|,)CN=((?:[^,\\]|\\.)*)/.exec(String(rfc4514));
    return m ? m[1].replace(/\\(.)/g, "$1") : String(rfc4514);
  }

  // -- the API ------------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(method, path) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const r = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (r.status === 401) throw new AuthNeeded((body && body.error) || "token needed");
    return { status: r.status, body };
  }

  function errorOf(res, what) {
    const said = res.body && typeof res.body === "object" && res.body.error;
    return `${what}: ${said || "HTTP " + res.status}`;
  }

  // -- the login form -----------------------------------------------------------------------
  function showLogin(message) {
    show($("content"), false);
    show($("login"), true);
    show($("forget"), false);
    $("login-error").textContent = message || "";
    show($("login-error"), Boolean(message));
    document.body.dataset.state = "login";
    $("token").focus();
  }

  function onLogin(ev) {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    show($("login"), false);
    refresh();
  }

  function onForget() {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  }

  // -- rendering ----------------------------------------------------------------------------
  function planIndex(plan) {
    const idx = new Map();
    for (const a of (plan && plan.actions) || []) if (!idx.has(a.domain)) idx.set(a.domain, a);
    for (const w of (plan && plan.waiting) || []) if (!idx.has(w.domain)) idx.set(w.domain, w);
    return idx;
  }

  function readiness(c, idx) {
    if (Array.isArray(c.conditions)) {
      const r = c.conditions.find((x) => x && x.type === "Ready");
      if (r) {
        const s = String(r.status).toLowerCase();
        return { state: s === "true" ? true : s === "false" ? false : null,
                 reason: r.reason, message: r.message,
                 since: r.last_transition || r.last_transition_time || r.lastTransitionTime };
      }
    }
    if (c.problem) return { state: false, reason: "StoredUnusable", message: c.problem };
    const p = idx.get(c.domain);
    if (p) return { state: false, reason: p.reason, message: p.message };
    if (typeof c.ready === "boolean") return { state: c.ready };
    if (c.desired === false) {
      return { state: null, reason: "NotDesired", message: "no longer in NJet's configuration" };
    }
    return { state: true };
  }

  function readyCell(c, idx) {
    const r = readiness(c, idx);
    const label = r.state === true ? "Ready" : r.state === false ? "Not ready" : "Unknown";
    const td = el("td", { cls: "ready" },
      el("span", { cls: "pill", text: label, data: { state: String(r.state) } }));
    if (r.reason) td.append(el("div", { cls: "small mono", text: r.reason }));
    if (r.message) td.append(el("div", { cls: "small muted", text: r.message }));
    if (r.since) td.append(el("div", { cls: "small muted", text: "since " + fmtTime(r.since) }));
    const issuing = Array.isArray(c.conditions) &&
      c.conditions.find((x) => x && x.type === "Issuing" && String(x.status) === "True");
    if (issuing) {
      td.append(el("div", { cls: "small" },
        el("span", { cls: "pill", text: "Issuing", data: { state: "pending" } }),
        " ", issuing.reason || "", issuing.message ? ": " + issuing.message : ""));
    }
    if (c.attempts) {
      td.append(el("div", { cls: "small muted",
        text: `${c.attempts} failed attempt(s)` +
              (c.backoff_until ? `, next try ${fmtTime(c.backoff_until)}` : "") }));
    }
    if (c.last_failure) td.append(el("div", { cls: "small mismatch", text: c.last_failure }));
    return td;
  }

  function lifetimeCell(c) {
    const td = el("td", { cls: "validity" });
    if (c.not_after === null || c.not_after === undefined || c.days_left === null) {
      td.append(el("span", { cls: "muted", text: c.problem ? "unusable files" : "not stored" }));
      return td;
    }
    const na = Date.parse(c.not_after);
    const nb = Date.parse(c.not_before);
    const now = na - c.days_left * DAY; // the controller's clock, not the browser's
    const life = Math.max(na - nb, 1);
    const left = Math.min(Math.max((na - now) / life, 0), 1);
    const renewAt = c.renewal_at ? Date.parse(c.renewal_at) : NaN;
    let state = "ok"; // green until the renewal point, amber past it, red once expired
    if (c.days_left <= 0) state = "expired";
    else if (Number.isNaN(renewAt) ? c.days_left < 7 : renewAt <= now) state = "due";
    const fill = el("div", { cls: "fill" });
    fill.style.width = (left * 100).toFixed(1) + "%"; // CSSOM: allowed under the CSP
    const bar = el("div", { cls: "bar", data: { state },
      title: `valid ${fmtTime(c.not_before)} → ${fmtTime(c.not_after)}` }, fill);
    if (!Number.isNaN(renewAt)) {
      const mark = el("div", { cls: "mark", title: "renewal point " + fmtTime(c.renewal_at) });
      mark.style.left = (Math.min(Math.max((na - renewAt) / life, 0), 1) * 100).toFixed(1) + "%";
      bar.append(mark);
    }
    const daysText = c.days_left <= 0 ? `expired ${fmtDays(c.days_left)} ago`
      : `${Number(c.days_left).toFixed(1)} days left`;
    td.append(el("div", { cls: "days", text: daysText },
                 el("span", { cls: "muted", text: ` of ${Math.round(life / DAY)}` })),
              bar);
    let when = `expires ${fmtTime(c.not_after)}`;
    if (!Number.isNaN(renewAt)) {
      when = renewAt <= now ? "renewal due now" : `renews ${fmtTime(c.renewal_at)} ` +
        `(in ${fmtDays((renewAt - now) / DAY)})`;
    }
    td.append(el("div", { cls: "small muted", text: when }));
    return td;
  }

  function servedList(c) {
    const raw = c.served || c.served_listens;
    const out = [];
    if (Array.isArray(raw)) {
      for (const s of raw) {
        if (s && typeof s === "object") {
          out.push({ listen: s.listen || s.address || "?", fp: s.fingerprint || null,
                     error: s.error || null });
        }
      }
    } else if (raw && typeof raw === "object") {
      for (const [listen, fp] of Object.entries(raw)) {
        out.push({ listen, fp: typeof fp === "string" ? fp : null, error: null });
      }
    }
    return out;
  }

  function servedCell(c) {
    const td = el("td", { cls: "served" });
    const list = servedList(c);
    if (list.length) {
      const ul = el("ul", { cls: "listens" });
      for (const s of list) {
        const same = s.fp && s.fp === c.fingerprint;
        const what = same ? "✓ stored certificate" : s.fp ? `✗ serves ${short(s.fp)}`
          : `✗ ${s.error || "no answer"}`;
        ul.append(el("li", { cls: same ? "match" : "mismatch", title: s.fp || s.error || "" },
                     el("span", { cls: "mono", text: s.listen }), " ", what));
      }
      td.append(ul);
    } else if (c.served_fingerprint) {
      const same = c.served_fingerprint === c.fingerprint;
      td.append(el("span", { cls: same ? "match" : "mismatch", title: c.served_fingerprint,
        text: same ? "✓ served = stored" : `✗ served ${short(c.served_fingerprint)} ≠ stored` }));
    } else {
      td.append(el("span", { cls: "muted", text: "not observed (store-only, or not applied yet)" }));
    }
    if (c.fingerprint) {
      td.append(el("div", { cls: "small muted mono", title: c.fingerprint,
                            text: "stored " + short(c.fingerprint) }));
    }
    return td;
  }

  function actionsCell(c) {
    const td = el("td", { cls: "actions" });
    const canAct = SAFE_NAME.test(c.domain) && c.desired !== false;
    const btn = el("button", { cls: "renew", text: "Renew",
      title: canAct ? "ask the controller to renew now" : "not a desired certificate" });
    btn.type = "button";
    btn.disabled = !canAct;
    btn.addEventListener("click", () => renew(c.domain, false));
    td.append(btn);
    const m = rowMsgs.get(c.domain);
    if (m) {
      const box = el("div", { cls: "msg " + (m.kind === "error" ? "error" : "muted"), text: m.text });
      td.append(box);
      if (m.force) {
        const f = el("button", { cls: "force", text: "Force renewal",
          title: "renew even though the certificate is young (?force=true)" });
        f.type = "button";
        f.addEventListener("click", () => renew(c.domain, true));
        td.append(f);
      }
    }
    return td;
  }

  function certRow(c, idx) {
    const names = (c.names || []).filter((n) => n !== c.domain);
    const first = el("td", { cls: "domain" }, el("span", { text: c.domain }));
    if (names.length) {
      first.append(el("ul", { cls: "names" }, ...names.map((n) => el("li", { text: n }))));
    }
    const facts = [c.key_type, c.desired === false ? "not desired" : null].filter(Boolean);
    if (facts.length) first.append(el("div", { cls: "small muted", text: facts.join(" · ") }));
    if (c.serial) {
      first.append(el("div", { cls: "small muted mono serial", title: "serial " + c.serial,
                               text: "serial " + c.serial.slice(0, 16) }));
    }
    return el("tr", { data: { domain: c.domain, serial: c.serial || "" } },
      first,
      el("td", { cls: "issuer", text: issuerName(c.issuer) || "—", title: c.issuer || "" }),
      lifetimeCell(c), readyCell(c, idx), servedCell(c), actionsCell(c));
  }

  function renderCerts() {
    const { certs, plan } = last;
    const idx = planIndex(plan);
    const body = $("certs").querySelector("tbody");
    clear(body);
    for (const c of certs) {
      const m = rowMsgs.get(c.domain);
      if (m && m.serial !== undefined && c.serial && c.serial !== m.serial) {
        rowMsgs.set(c.domain, { kind: "ok", text: "renewed: new serial " + c.serial.slice(0, 16) });
      }
      body.append(certRow(c, idx));
    }
    $("cert-count").textContent = `(${certs.length})`;
    show($("certs"), certs.length > 0);
    show($("no-certs"), certs.length === 0);
  }

  function renderPlan(res) {
    const table = $("plan");
    const body = table.querySelector("tbody");
    const warnings = $("plan-warnings");
    clear(body);
    clear(warnings);
    if (res.status !== 200 || !res.body) {
      $("plan-state").textContent = errorOf(res, "the plan could not be computed");
      show(table, false);
      return;
    }
    const p = res.body;
    const rows = [];
    for (const a of p.actions || []) {
      const why = [a.message, a.listens ? "on " + a.listens.join(", ") : null]
        .filter(Boolean).join(" · ");
      rows.push([a.kind, a.domain, a.names, a.reason, why, "now"]);
    }
    for (const w of p.waiting || []) {
      rows.push(["wait", w.domain, null, w.reason, w.message, w.until ? "until " + fmtTime(w.until) : ""]);
    }
    for (const s of p.scheduled || []) {
      rows.push(["later", s.domain, null, s.reason, s.message, s.at ? fmtTime(s.at) : ""]);
    }
    for (const [what, domain, names, reason, why, when] of rows) {
      const cert = el("td", { cls: "domain", text: domain });
      if (names && names.length > 1) cert.append(el("div", { cls: "small muted", text: names.join(" ") }));
      body.append(el("tr", { data: { kind: what } },
        el("td", {}, el("span", { cls: "pill", text: what,
                                  data: { state: what === "later" ? "unknown" : "pending" } })),
        cert, el("td", { cls: "mono", text: reason || "" }), el("td", { text: why || "" }),
        el("td", { cls: "muted", text: when || "" })));
    }
    const pending = (p.actions || []).length + (p.waiting || []).length;
    $("plan-state").textContent = p.in_sync ? "In sync: nothing to do now." +
      ((p.scheduled || []).length ? " Upcoming:" : "")
      : `${pending} pending (computed ${fmtTime(p.generated_at)}):`;
    show(table, rows.length > 0);
    for (const w of p.warnings || []) {
      warnings.append(el("li", { text: [w.origin, w.name, w.reason].filter(Boolean).join(": ") }));
    }
  }

  function renderEvents(res) {
    const list = $("events");
    clear(list);
    const none = $("no-events");
    if (res.status === 404) { // a controller without GET /api/v1/events
      none.textContent = "No events.";
      show(none, true);
      return;
    }
    if (res.status !== 200) {
      none.textContent = errorOf(res, "events unavailable");
      show(none, true);
      return;
    }
    const raw = Array.isArray(res.body) ? res.body : (res.body && res.body.events) || [];
    const evs = raw.filter((e) => e && typeof e === "object");
    const at = (e) => e.ts || e.time || e.timestamp || e.at || "";
    evs.sort((a, b) => String(at(b)).localeCompare(String(at(a))));
    for (const e of evs.slice(0, 100)) {
      const what = e.action || e.type || e.event || e.kind || "event";
      const detail = [e.result, e.detail || e.message || e.reason].filter(Boolean).join(": ");
      list.append(el("li", { data: { domain: e.domain || "" } },
        el("time", { text: fmtTime(at(e)), title: at(e) }),
        el("span", { cls: "what", text: what }),
        el("span", { cls: "mono", text: e.domain || "" }),
        el("span", { text: detail }),
        el("span", { cls: "muted small", text: e.peer ? "by " + e.peer : "" })));
    }
    none.textContent = "No events.";
    show(none, evs.length === 0);
  }

  function renderHealth(res) {
    const h = (res && res.body) || {};
    const pill = $("health");
    const state = h.status || (res.status === 200 ? "ok" : "unknown");
    pill.textContent = state;
    pill.dataset.state = state;
    const parts = [];
    if (typeof h.reconciles === "number") parts.push(`${h.reconciles} reconcile(s)`);
    if (h.in_sync === true) parts.push("in sync");
    else if (h.in_sync === false) parts.push("not in sync");
    if (typeof h.problem_count === "number" && h.problem_count) parts.push(`${h.problem_count} unusable pair(s)`);
    $("summary").textContent = parts.join(" · ");
  }

  // -- refresh and actions ------------------------------------------------------------------
  function showError(text) {
    $("error").textContent = text || "";
    show($("error"), Boolean(text));
  }

  async function load() {
    const settled = await Promise.allSettled([
      api("GET", "/healthz"), api("GET", "/api/v1/cert"), api("GET", "/api/v1/plan"),
      api("GET", "/api/v1/events")]);
    if (settled[0].status === "fulfilled") renderHealth(settled[0].value); // open to all
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    const [, certs, plan, events] = settled.map((s) => s.value);
    if (certs.status !== 200 || !certs.body) {
      showError(errorOf(certs, "the certificates could not be read"));
      show($("content"), false);
      return;
    }
    showError("");
    last = { certs: certs.body.certificates || [], plan: plan.status === 200 ? plan.body : null };
    show($("login"), false);
    show($("content"), true);
    show($("forget"), Boolean(token()));
    renderCerts();
    renderPlan(plan);
    renderEvents(events);
    refreshes += 1;
    document.body.dataset.state = "ready";
    document.body.dataset.refreshes = String(refreshes);
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  }

  function refresh() {
    if (inflight) return inflight;
    inflight = load().catch((err) => {
      if (err instanceof AuthNeeded) {
        const had = Boolean(token());
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(had ? "That token was refused: " + err.message : "");
      } else {
        showError("The controller did not answer: " + err.message);
      }
    }).finally(() => { inflight = null; });
    return inflight;
  }

  async function renew(domain, force) {
    if (!SAFE_NAME.test(domain)) return;
    const cur = last && last.certs.find((c) => c.domain === domain);
    rowMsgs.set(domain, { kind: "info", text: force ? "forcing a renewal…" : "requesting a renewal…" });
    if (last) renderCerts();
    let res;
    try {
      res = await api("POST", `/api/v1/cert/${domain}/renew` + (force ? "?force=true" : ""));
    } catch (err) {
      if (err instanceof AuthNeeded) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin("The token was refused: " + err.message);
        return;
      }
      rowMsgs.set(domain, { kind: "error", text: "no answer: " + err.message });
      if (last) renderCerts();
      return;
    }
    const said = res.body && (res.body.status || res.body.error);
    if (res.status === 202) {
      rowMsgs.set(domain, { kind: "ok", text: (said || "renewal requested") + "; ordering…",
                            serial: cur ? cur.serial : undefined });
    } else if (res.status === 409) {
      const text = said || "refused";
      rowMsgs.set(domain, { kind: "error", text, force: !force && /forceRenewMinAge/.test(text) });
    } else {
      rowMsgs.set(domain, { kind: "error", text: said || "HTTP " + res.status });
    }
    await refresh();
    if (res.status === 202) {
      for (let i = 0; i < 15; i += 1) { // follow the order until the new serial shows
        await new Promise((r) => setTimeout(r, 2000));
        const m = rowMsgs.get(domain);
        if (!m || m.serial === undefined) break;
        await refresh();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", onLogin);
    $("refresh").addEventListener("click", () => refresh());
    $("forget").addEventListener("click", onForget);
    refresh();
    setInterval(() => {
      if (document.visibilityState === "visible" && $("login").hidden) refresh();
    }, REFRESH_MS);
  });
})();

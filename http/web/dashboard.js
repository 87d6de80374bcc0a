// Switchboard dashboard: plain JavaScript, no build step, nothing from another origin.
// Signed in by an HttpOnly cookie; every state-changing request carries X-CSRF-Token.
// Every text from the server is put in with textContent, never parsed as HTML.
(function () {
  "use strict";
  var csrf = null, who = null, sessions = {}, stream = null, current = null, activity = null, refreshTimer = null;
  var $ = function (id) { return document.getElementById(id); };
  var ATTENTION = ["failed", "conflict", "banned", "logged_out"];

  function api(method, path, body) {
    var headers = { "Accept": "application/json" };
    if (method !== "GET") { headers["X-CSRF-Token"] = csrf || ""; }
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    return fetch(path, { method: method, headers: headers, credentials: "same-origin", cache: "no-store",
                         body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (answer) {
        return answer.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { error: text }; }
          if (answer.status === 401 && path !== "/api/dashboard/session") { signedOut(); }
          return { status: answer.status, ok: answer.ok, data: data || {} };
        });
      });
  }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }

  function show(id) {
    ["signin", "overview", "company"].forEach(function (s) { $(s).hidden = s !== id; });
  }

  // ---- signing in and out -------------------------------------------------------------

  function boot() {
    api("GET", "/api/dashboard/session").then(function (r) {
      if (r.ok) { signedIn(r.data); } else { signedOut(); }
    }).catch(function () { signedOut(); });
  }

  function signedIn(data) {
    who = data; csrf = data.csrfToken;
    $("who").textContent = data.admin ? "admin" : "company " + data.companyId;
    $("signout").hidden = false;
    if (!data.admin) { $("new-company").value = data.companyId; }
    openStream();
    route();
  }

  function signedOut() {
    who = null; csrf = null;
    if (stream) { stream.close(); stream = null; }
    setLive(false);
    $("who").textContent = ""; $("signout").hidden = true;
    show("signin");
  }

  $("signin-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    $("signin-error").textContent = "";
    api("POST", "/api/dashboard/session", { key: $("key").value }).then(function (r) {
      $("key").value = "";
      if (r.ok) { signedIn(r.data); } else { $("signin-error").textContent = r.data.error || "sign-in failed"; }
    });
  });

  $("signout").addEventListener("click", function () {
    api("DELETE", "/api/dashboard/session").then(signedOut);
  });

  // ---- live updates: one event stream, authenticated by the cookie -------------------------

  function setLive(on) {
    $("live").textContent = on ? "live" : "offline";
    $("live").className = "live " + (on ? "on" : "off");
  }

  function openStream() {
    if (stream) { stream.close(); }
    stream = new EventSource("/api/whatsapp/events");
    stream.onopen = function () { setLive(true); };
    stream.onerror = function () { setLive(false); };      // EventSource reconnects by itself (Last-Event-ID)
    ["state", "qr", "paired", "spawned", "crashed", "restarting", "gave_up", "removed"].forEach(function (kind) {
      stream.addEventListener(kind, function (ev) { onEvent(kind, JSON.parse(ev.data)); });
    });
    ["message", "message.sent"].forEach(function (kind) {
      stream.addEventListener(kind, function (ev) { onTraffic(kind, JSON.parse(ev.data)); });
    });
    stream.addEventListener("close", function () { stream.close(); stream = null; boot(); });
  }

  function onEvent(kind, data) {
    if (kind === "state" && data.companyId && sessions[data.companyId]) {
      sessions[data.companyId].status = data.state;
    }
    addEvent($("events"), data);
    if (current && data.companyId === current) {
      addEvent($("c-events"), data);
      if (kind === "qr" || kind === "state" || kind === "paired") { loadCompany(current, true); }
    }
    scheduleRefresh();
  }

  function onTraffic(kind, data) {
    if (!activity) { return; }
    var last = activity.minutes[activity.minutes.length - 1];
    if (kind === "message") { last.received += 1; activity.messagesReceived += 1; }
    else { last.sent += 1; activity.messagesSent += 1; }
    renderFigures();
    drawChart($("chart"), activity.minutes);
    if (current && data.companyId === current) { loadCompanyChart(current); }
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(loadSessions, 250);
  }

  // ---- overview ----------------------------------------------------------------------

  function loadSessions() {
    return api("GET", "/api/whatsapp/sessions").then(function (r) {
      if (!r.ok) { return; }
      sessions = {};
      r.data.sessions.forEach(function (s) { sessions[s.companyId] = s; });
      renderTable();
      renderFigures();
    });
  }

  function renderTable() {
    var body = $("companies").querySelector("tbody");
    body.textContent = "";
    Object.keys(sessions).sort().forEach(function (id) {
      var s = sessions[id], row = el("tr");
      row.setAttribute("data-company", id);
      row.appendChild(el("td", id));
      var cell = el("td"); cell.appendChild(el("span", s.status, "badge " + s.status)); row.appendChild(cell);
      row.appendChild(el("td", s.phoneNumber || "–"));
      row.appendChild(el("td", s.queued || 0));
      row.appendChild(el("td", s.messagesSent || 0));
      row.appendChild(el("td", s.messagesReceived || 0));
      row.appendChild(el("td", s.lastError || "", "error"));
      row.addEventListener("click", function () { location.hash = "#/company/" + encodeURIComponent(id); });
      body.appendChild(row);
    });
  }

  function renderFigures() {
    var list = Object.keys(sessions).map(function (k) { return sessions[k]; });
    $("f-total").textContent = list.length;
    $("f-connected").textContent = list.filter(function (s) { return s.status === "connected"; }).length;
    $("f-attention").textContent = list.filter(function (s) { return ATTENTION.indexOf(s.status) >= 0; }).length;
    if (activity) {
      $("f-sent").textContent = activity.messagesSent;
      $("f-received").textContent = activity.messagesReceived;
    }
  }

  function loadActivity() {
    return api("GET", "/api/dashboard/activity").then(function (r) {
      if (!r.ok) { return; }
      activity = r.data;
      renderFigures();
      drawChart($("chart"), activity.minutes);
    });
  }

  function loadLog(list, company) {
    var path = "/api/supervisor/log?limit=30" + (company ? "&company=" + encodeURIComponent(company) : "");
    return api("GET", path).then(function (r) {
      if (!r.ok) { return; }
      list.textContent = "";
      r.data.records.forEach(function (rec) { addEvent(list, rec); });
    });
  }

  function describe(rec) {
    var parts = [(rec.ts || "").replace("T", " ").replace(/\.\d+Z$/, "Z"), rec.companyId || "gateway", rec.event];
    if (rec.state) { parts.push((rec.previous ? rec.previous + " " : "") + "→ " + rec.state); }
    if (rec.action) { parts.push(rec.action); }
    var error = rec.error || rec.reason || rec.lastError;
    if (error) { parts.push("— " + error); }
    return parts.join("  ");
  }

  function addEvent(list, rec) {
    if (rec.event === "message" || rec.event === "message.sent" || rec.event === "receipt") { return; }
    list.insertBefore(el("li", describe(rec)), list.firstChild);
    while (list.children.length > 50) { list.removeChild(list.lastChild); }
  }

  $("create-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = $("new-company").value.trim();
    $("create-error").textContent = "";
    api("POST", "/api/whatsapp/sessions", { companyId: id }).then(function (r) {
      if (r.ok) { location.hash = "#/company/" + encodeURIComponent(id); }
      else { $("create-error").textContent = r.data.error || ("HTTP " + r.status); }
    });
  });

  // ---- the chart: inline SVG, two bars per minute --------------------------------------

  function drawChart(box, minutes) {
    var NS = "http://www.w3.org/2000/svg", w = 1000, h = 120, pad = 16;
    var max = 1;
    minutes.forEach(function (m) { max = Math.max(max, m.sent, m.received); });
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "sends and receives per minute");
    var step = (w - 2 * pad) / minutes.length, bar = Math.max(1, step / 2 - 1);
    minutes.forEach(function (m, i) {
      [["sent", m.sent, 0], ["received", m.received, bar]].forEach(function (b) {
        if (!b[1]) { return; }
        var r = document.createElementNS(NS, "rect"), height = (h - 2 * pad) * b[1] / max;
        r.setAttribute("x", pad + i * step + b[2]); r.setAttribute("y", h - pad - height);
        r.setAttribute("width", bar); r.setAttribute("height", height); r.setAttribute("class", b[0]);
        var t = document.createElementNS(NS, "title");
        t.textContent = b[0] + ": " + b[1] + " at " + new Date(m.minute * 1000).toLocaleTimeString();
        r.appendChild(t); svg.appendChild(r);
      });
    });
    var axis = document.createElementNS(NS, "line");
    axis.setAttribute("x1", pad); axis.setAttribute("x2", w - pad); axis.setAttribute("y1", h - pad);
    axis.setAttribute("y2", h - pad); axis.setAttribute("class", "axis"); svg.appendChild(axis);
    [["sent", "sent", w - 150], ["received", "received", w - 90]].forEach(function (l) {
      var sw = document.createElementNS(NS, "rect");
      sw.setAttribute("x", l[2]); sw.setAttribute("y", 2); sw.setAttribute("width", 8); sw.setAttribute("height", 8);
      sw.setAttribute("class", l[1]); svg.appendChild(sw);
      var tx = document.createElementNS(NS, "text");
      tx.setAttribute("x", l[2] + 11); tx.setAttribute("y", 10); tx.setAttribute("class", "legend");
      tx.textContent = l[0]; svg.appendChild(tx);
    });
    var top = document.createElementNS(NS, "text");
    top.setAttribute("x", 0); top.setAttribute("y", 10); top.setAttribute("class", "legend");
    top.textContent = "max " + max + "/min"; svg.appendChild(top);
    box.textContent = "";
    box.appendChild(svg);
  }

  // ---- a company's page ------------------------------------------------------------------

  var loading = false, again = false;
  function loadCompany(id, quiet) {
    if (loading) { again = true; return; }
    loading = true;
    var path = "/api/whatsapp/sessions/" + encodeURIComponent(id);
    api("GET", path).then(function (r) {
      if (!r.ok) { $("c-message").textContent = r.data.error || ("HTTP " + r.status); return null; }
      renderCompany(r.data);
      if (r.data.status === "qr") { return api("GET", path + "/qr"); }
      return null;
    }).then(function (q) {
      var box = $("qr-box");
      if (q && q.ok && q.data.qrDataUrl) {
        var img = box.querySelector("img") || el("img");
        img.alt = "QR code to scan with WhatsApp";
        img.src = q.data.qrDataUrl;
        if (!img.parentNode) { box.textContent = ""; box.appendChild(img);
          box.appendChild(el("p", "WhatsApp → Settings → Linked devices → Link a device", "hint")); }
      } else if (!q) {
        box.textContent = "";
        box.appendChild(el("p", $("c-status").textContent === "connected" ? "Linked." : "No QR code right now.", "hint"));
      }
    }).then(function () {
      loading = false;
      if (again) { again = false; loadCompany(id, true); }
    }, function () { loading = false; });
    if (!quiet) { loadLog($("c-events"), id); loadCompanyChart(id); loadWebhook(id); }
  }

  function renderCompany(d) {
    $("c-id").textContent = d.companyId;
    $("c-status").textContent = d.status;
    $("c-status").className = "badge " + d.status;
    var facts = $("c-facts"); facts.textContent = "";
    [["Phone", d.phoneNumber], ["Connected at", d.connectedAt], ["Last error", d.lastError],
     ["Reconnect attempts", d.reconnectAttempts], ["Next retry", d.nextRetryAt], ["Queued", d.queued],
     ["Sent / received", (d.messagesSent || 0) + " / " + (d.messagesReceived || 0)], ["Transport", d.transport]]
      .forEach(function (f) { facts.appendChild(el("dt", f[0])); facts.appendChild(el("dd", f[1] === null || f[1] === undefined ? "–" : f[1])); });
  }

  function loadCompanyChart(id) {
    api("GET", "/api/dashboard/activity?company=" + encodeURIComponent(id)).then(function (r) {
      if (r.ok) { drawChart($("c-chart"), r.data.minutes); }
    });
  }

  document.querySelectorAll("[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var action = button.getAttribute("data-action"), id = current, path = "/api/whatsapp/sessions/" + encodeURIComponent(id);
      var call;
      if (action === "delete") {
        var typed = window.prompt("This logs the phone out and deletes the session's files. Type the company id to confirm:");
        if (typed !== id) { $("c-message").textContent = "Not deleted."; return; }
        call = api("DELETE", path);
      } else {
        call = api("POST", path + "/" + action, {});
      }
      $("c-message").textContent = action + "…";
      call.then(function (r) {
        $("c-message").textContent = r.ok ? action + ": done" : (r.data.error || ("HTTP " + r.status));
        if (action === "delete" && r.ok) { location.hash = "#/"; } else { loadCompany(id, true); }
      });
    });
  });

  $("pair-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    $("pair-result").textContent = "…";
    api("POST", "/api/whatsapp/sessions/" + encodeURIComponent(current) + "/pairing-code", { phone: $("pair-phone").value })
      .then(function (r) {
        $("pair-result").textContent = r.ok ? r.data.code : "";
        $("c-message").textContent = r.ok ? r.data.hint : (r.data.error || ("HTTP " + r.status));
      });
  });

  // The webhook settings exist only where the gateway has the webhook endpoints.
  function loadWebhook(id) {
    api("GET", "/api/whatsapp/sessions/" + encodeURIComponent(id) + "/webhook").then(function (r) {
      var known = r.ok || (r.status === 404 && !/no such endpoint/.test(r.data.error || ""));
      $("webhook").hidden = !known;
      var w = (r.ok && (r.data.webhook || r.data)) || {};
      $("wh-url").value = w.url || "";
      $("wh-events").value = Array.isArray(w.events) ? w.events.join(",") : (w.events || "");
      $("wh-secret").value = "";
      $("wh-state").textContent = r.ok && w.url ? "Delivering to " + w.url : "No webhook for this company.";
    });
  }

  $("webhook-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = { url: $("wh-url").value.trim() };
    if ($("wh-secret").value) { body.secret = $("wh-secret").value; }
    var events = $("wh-events").value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    if (events.length) { body.events = events; }
    api("PUT", "/api/whatsapp/sessions/" + encodeURIComponent(current) + "/webhook", body).then(function (r) {
      $("wh-state").textContent = r.ok ? "Saved." : (r.data.error || ("HTTP " + r.status));
      if (r.ok) { loadWebhook(current); }
    });
  });

  $("wh-delete").addEventListener("click", function () {
    api("DELETE", "/api/whatsapp/sessions/" + encodeURIComponent(current) + "/webhook").then(function (r) {
      $("wh-state").textContent = r.ok ? "Removed." : (r.data.error || ("HTTP " + r.status));
      if (r.ok) { loadWebhook(current); }
    });
  });

  // ---- routing: #/ and #/company/<id> ------------------------------------------------

  function route() {
    if (!who) { show("signin"); return; }
    var m = /^#\/company\/(.+)$/.exec(location.hash);
    if (m) {
      current = decodeURIComponent(m[1]);
      show("company");
      $("qr-box").textContent = "";
      $("c-message").textContent = ""; $("pair-result").textContent = "";
      loadCompany(current, false);
    } else {
      current = null;
      show("overview");
      loadSessions(); loadActivity(); loadLog($("events"), null);
    }
  }

  window.addEventListener("hashchange", route);
  setInterval(function () { if (who) { loadActivity(); } }, 60000);
  boot();
})();

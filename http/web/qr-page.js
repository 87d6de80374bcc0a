// The QR page for the person linking a phone: fetch this page again every few seconds and
// swap its content, so the code follows its rotation. If the gateway does not answer (a
// restart), keep the page, say so in words, and carry on when it is back. No JSON is shown.
(function () {
  "use strict";
  var every = (parseInt(document.body.getAttribute("data-refresh"), 10) || 3) * 1000;
  function done() { return document.body.getAttribute("data-done") === "1"; }
  function tick() {
    if (done()) { return; }
    // a request that gets no answer (a half-open connection to a gateway that went away) is
    // given up after a few seconds, so the page never hangs on it
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, Math.max(5000, 2 * every));
    fetch(location.href, { cache: "no-store", credentials: "same-origin", headers: { "Accept": "text/html" },
                           signal: controller.signal })
      .then(function (answer) {
        var type = answer.headers.get("Content-Type") || "";
        if (type.indexOf("text/html") !== 0) { throw new Error("not a page"); }
        return answer.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var content = fresh.getElementById("content");
        if (!content) { throw new Error("not this page"); }
        document.getElementById("content").replaceWith(content);
        document.body.setAttribute("data-done", fresh.body.getAttribute("data-done") || "0");
        document.title = fresh.title;
        document.body.classList.remove("offline");
      })
      .catch(function () { document.body.classList.add("offline"); })
      .then(function () { clearTimeout(timer); setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();

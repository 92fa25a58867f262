// Caroni management sites: live regions and small form conveniences. No library.
//
// A live region ([data-live]) asks its own page for news once a second: the
// server answers 204 when nothing changed since the stamp we hold, or the
// region's new HTML with its new stamp. Polling (rather than a push channel)
// keeps working through proxies, restarts of the node and sleeping laptops.
(function () {
  "use strict";

  var INTERVAL = 1000;
  var MAX_BACKOFF = 15000;

  function startLive(region) {
    var stamp = region.getAttribute("data-stamp") || "";
    var delay = INTERVAL;
    var status = document.querySelector("[data-live-status]");
    var statusText = status && status.querySelector("[data-live-text]");

    function say(text, stale) {
      if (!status) return;
      status.classList.toggle("stale", !!stale);
      if (statusText && statusText.textContent !== text) statusText.textContent = text;
    }

    function poll() {
      if (document.hidden) { return schedule(); }
      var url = new URL(window.location.href);
      url.searchParams.delete("notice");
      url.searchParams.set("fragment", "1");
      url.searchParams.set("since", stamp);
      url.hash = "";
      fetch(url.toString(), {
        headers: { "X-Caroni-Live": "1" },
        credentials: "same-origin",
        cache: "no-store"
      }).then(function (response) {
        if (response.status === 401) {
          window.location.reload();  // the session ended: the reload shows the login page
          return null;
        }
        if (response.status === 200) {
          var next = response.headers.get("X-Caroni-Stamp") || "";
          return response.text().then(function (html) {
            var focused = document.activeElement && document.activeElement.id;
            region.innerHTML = html;
            stamp = next;
            region.setAttribute("data-stamp", stamp);
            if (focused) {
              var again = document.getElementById(focused);
              if (again) again.focus();
            }
            say("Live: updated at " + new Date().toLocaleTimeString() + ".", false);
          });
        }
        if (response.status !== 204) throw new Error("HTTP " + response.status);
        say("Live: this page updates by itself.", false);
        return null;
      }).then(function () {
        delay = INTERVAL;
        schedule();
      }, function () {
        delay = Math.min(delay * 2, MAX_BACKOFF);
        say("Cannot reach the node; trying again…", true);
        schedule();
      });
    }

    function schedule() { window.setTimeout(poll, delay); }
    schedule();
  }

  document.querySelectorAll("[data-live]").forEach(startLive);

  // Elapsed times count on by themselves, in the server's clock (the browser's
  // may be off): the offset is taken once, from the page's render time.
  var serverNow = parseFloat(document.body.getAttribute("data-server-now") || "0");
  var skew = serverNow ? serverNow - Date.now() / 1000 : 0;

  function duration(seconds) {
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var whole = Math.floor(seconds);
    var minutes = Math.floor(whole / 60);
    if (minutes < 60) return minutes + " min " + (whole % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  window.setInterval(function () {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("time[data-since]").forEach(function (element) {
      var since = parseFloat(element.getAttribute("data-since"));
      var text = duration(Math.max(now - since, 0)) + (element.getAttribute("data-suffix") || "");
      if (element.textContent !== text) element.textContent = text;
    });
  }, 1000);

  // A select that changes what the page shows submits its form at once.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) select.form.submit();
    });
  });
})();

// The live parts of a page (elements with an id and data-live="SECONDS"): every
// few seconds the page is fetched again (marked as a live update, so it takes no
// notice and the access log can hide it) and each part is replaced by its fresh
// copy, unless the user is typing in it; open <details> stay open. The line
// "Drawn at ..." says when the last update came. Without script the page stays
// as drawn and that line says when.
(function () {
  "use strict";
  var stamp = document.getElementById("drawn-at");
  var MIN_SECONDS = 1;
  var MAX_SECONDS = 60;
  var MAX_BACKOFF = 12;
  var failures = 0;

  function parts() { return document.querySelectorAll("[data-live][id]"); }
  if (!parts().length || !window.fetch || !window.DOMParser) { return; }

  function period() {
    var seconds = MAX_SECONDS;
    Array.prototype.forEach.call(parts(), function (part) {
      var asked = parseInt(part.getAttribute("data-live"), 10);
      if (asked > 0 && asked < seconds) { seconds = asked; }
    });
    return Math.max(MIN_SECONDS, seconds);
  }

  function clock() {
    var now = new Date();
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(now.getHours()) + ":" + two(now.getMinutes()) + ":" + two(now.getSeconds());
  }

  function say(text) { if (stamp) { stamp.textContent = text; } }

  function busy(part) {
    var active = document.activeElement;
    return active && active !== document.body && part.contains(active) &&
      /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function replace(fresh) {
    Array.prototype.forEach.call(parts(), function (part) {
      var next = fresh.getElementById(part.id);
      if (!next || busy(part)) { return; }
      var opened = Array.prototype.map.call(part.querySelectorAll("details"), function (d) { return d.open; });
      var copy = document.importNode(next, true);
      Array.prototype.forEach.call(copy.querySelectorAll("details"), function (d, i) {
        if (i < opened.length) { d.open = opened[i]; }
      });
      part.parentNode.replaceChild(copy, part);
    });
  }

  function update() {
    if (document.hidden) { schedule(); return; }
    fetch(window.location.pathname + window.location.search,
          {cache: "no-store", credentials: "same-origin", headers: {"X-Cmegw-Live": "1"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        replace(new DOMParser().parseFromString(html, "text/html"));
        failures = 0;
        say("Live: updated at " + clock() + ", every " + period() + " s.");
      })
      .catch(function (error) {
        failures = Math.min(failures + 1, MAX_BACKOFF);
        say("Not updating (" + error.message + ", tried at " + clock() + "); trying again.");
      })
      .then(schedule);
  }

  function schedule() { window.setTimeout(update, period() * 1000 * (failures + 1)); }

  say("Live: updated every " + period() + " s.");
  schedule();
}());

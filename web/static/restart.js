// After a restart, software update or factory reset: ask /api/status until the
// gateway answers with a new boot id, then go to the Status page. A failed
// update sends the browser to the System page, which says why.
(function () {
  "use strict";
  var box = document.getElementById("restart");
  if (!box) { return; }
  var boot = box.getAttribute("data-boot");
  var limit = parseInt(box.getAttribute("data-limit") || "180", 10);
  var progress = document.getElementById("restart-progress");
  var tries = 0;
  var sawFailure = false;

  function go(url) { window.location.replace(url); }

  function again() {
    tries += 1;
    if (tries > limit) {
      if (progress) {
        progress.textContent = "The gateway has not answered yet. Reload the Status page by hand.";
      }
      return;
    }
    if (progress) { progress.setAttribute("data-tries", String(tries)); }
    window.setTimeout(poll, 1000);
  }

  function poll() {
    fetch("/api/status", {cache: "no-store", credentials: "same-origin"}).then(function (response) {
      if (!response.ok) {
        if (sawFailure) { go("/status"); return; }
        again();
        return;
      }
      return response.json().then(function (status) {
        if (status.boot && status.boot !== boot) { go("/status"); return; }
        if (status.update && status.update.phase === "failed") { go("/system#update"); return; }
        again();
      });
    }).catch(function () {
      sawFailure = true;
      again();
    });
  }

  again();
}());

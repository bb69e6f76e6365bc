// The trace page's live view: asks the trace for what is new every second and
// appends it (chunks as hex, telegrams with their labels). Without script the
// page shows what was there when it was loaded.
(function () {
  "use strict";
  var box = document.getElementById("trace-live");
  if (!box) { return; }
  var source = box.getAttribute("data-source");
  var since = parseInt(box.getAttribute("data-since") || "0", 10);
  var framesAfter = parseInt(box.getAttribute("data-frames-after") || "0", 10);
  var keep = parseInt(box.getAttribute("data-keep") || "500", 10);
  var state = document.getElementById("trace-state");
  var PERIOD = 1000;

  function add(text, kind) {
    var row = document.createElement("div");
    row.className = "trace-" + kind;
    row.textContent = text;
    box.appendChild(row);
  }

  function time(at) { return at.replace("T", " ").replace("+00:00", "Z"); }

  function show(data) {
    var events = [];
    data.chunks_list.forEach(function (c) { events.push([c.seq, 0, c]); });
    data.frames.forEach(function (f) { events.push([f.seq, 1, f]); });
    events.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    events.forEach(function (e) {
      var item = e[2];
      if (e[1] === 0) {
        var peer = item.peer ? (item.direction === "rx" ? " to " : " from ") + item.peer : "";
        add(time(item.at) + " " + item.direction + peer + " " + item.length + " bytes: " + item.hex +
            (item.note ? " [" + item.note + "]" : ""), item.direction);
      } else {
        add(time(item.at) + " " + item.direction + " # " + item.summary, "frame");
        (item.records || []).forEach(function (r) {
          add("    " + r.quantity + " = " + (r.value === null ? "invalid" : r.value) + " " + r.unit +
              " (" + r["function"] + ")", "record");
        });
      }
    });
    while (box.childNodes.length > keep) { box.removeChild(box.firstChild); }
    if (events.length) { box.scrollTop = box.scrollHeight; }
    since = data.last_seq;
    framesAfter = data.last_frame;
    if (state) {
      state.textContent = (data.enabled ? "on" : "off") + ", " + data.chunks + " chunks, " + data.bytes +
        " bytes held" + (data.dropped ? ", " + data.dropped + " older chunks dropped" : "");
    }
  }

  function poll() {
    fetch(source + "?since=" + since + "&frames_after=" + framesAfter,
          {cache: "no-store", credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(show)
      .catch(function (error) {
        if (state) { state.textContent = "not updating (" + error.message + "), trying again"; }
      })
      .then(function () { window.setTimeout(poll, PERIOD); });
  }

  window.setTimeout(poll, PERIOD);
})();

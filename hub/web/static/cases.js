// Case page: while the F2 search runs, poll its progress (JSON) and reload the page when it is done.
// Without JavaScript the page says to reload it; the Content-Security-Policy forbids inline scripts.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("f2-progress");
  if (!box || !box.dataset.url) { return; }
  var state = box.dataset.state;
  if (state !== "pending" && state !== "running") { return; }
  var bar = document.getElementById("f2-bar");
  var text = document.getElementById("f2-text");
  var delay = 1000;

  function show(data) {
    if (bar) { bar.value = data.progress; }
    if (text) { text.textContent = data.text; }
    box.dataset.state = data.state;
  }

  function poll() {
    fetch(box.dataset.url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("progress answered " + response.status); }
        return response.json();
      })
      .then(function (data) {
        show(data);
        if (data.state === "done" || data.state === "failed") {
          window.location.reload();
          return;
        }
        delay = 1000;
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        // The hub may be restarting: try again, less often.
        delay = Math.min(delay * 2, 15000);
        window.setTimeout(poll, delay);
      });
  }

  window.setTimeout(poll, delay);
});

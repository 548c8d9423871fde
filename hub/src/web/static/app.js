// Refreshes the live part of a page (#live) from `?fragment=1` without a full reload, keeps
// keyboard focus on the same link, and announces state changes (data-announce) to screen readers.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var every = (parseInt(live.getAttribute("data-refresh"), 10) || 5) * 1000;
  var announce = document.getElementById("announce");
  var said = announced();

  function announced() {
    var a = live.querySelector("[data-announce]");
    return a ? a.getAttribute("data-announce") : "";
  }

  function refresh() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.status === 401) {
          window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname);
          throw new Error("signed out");
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        var focused = live.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
        live.innerHTML = html;
        live.removeAttribute("data-error");
        if (focused) {
          var same = live.querySelector('a[href="' + focused.replace(/"/g, '\\"') + '"]');
          if (same) same.focus();
        }
        var now = announced();
        if (announce && now !== said) announce.textContent = now;
        said = now;
      })
      .catch(function () { live.setAttribute("data-error", ""); })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();

// tierflow console: ticks countdowns and asks before leaving for a confirmation page. Every page
// reads and works without it.
(function () {
  function fmt(ms) {
    var neg = ms < 0, s = Math.round(Math.abs(ms) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, r = s % 60;
    var t = d > 0 ? d + "d " + h + "h" : h > 0 ? h + "h " + m + "m" : m + "m " + r + "s";
    return neg ? t + " ago" : "in " + t;
  }
  function tick() {
    var els = document.querySelectorAll("[data-countdown]");
    for (var i = 0; i < els.length; i++) {
      els[i].textContent = fmt(Number(els[i].getAttribute("data-countdown")) - Date.now());
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
  });
})();

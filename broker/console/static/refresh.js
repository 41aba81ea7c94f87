// Reloads a console page every data-refresh seconds while the box is ticked; the only script
// of the console, and every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  var box = document.getElementById("auto-refresh");
  if (!seconds || !box) { return; }
  box.parentElement.hidden = false;
  box.checked = sessionStorage.getItem("mint-console-refresh") !== "off";
  box.addEventListener("change", function () {
    sessionStorage.setItem("mint-console-refresh", box.checked ? "on" : "off");
  });
  setInterval(function () {
    if (box.checked && !document.hidden) { window.location.reload(); }
  }, seconds * 1000);
});

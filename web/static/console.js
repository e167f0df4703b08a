// Confirmation for consequential buttons, and "select all" for bulk
// approval. No inline script anywhere: the CSP forbids it.
document.addEventListener("submit", function (e) {
  var msg = e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) { e.preventDefault(); }
});
document.addEventListener("change", function (e) {
  if (e.target.id === "select-all") {
    document.querySelectorAll("input[name=id]").forEach(function (c) { c.checked = e.target.checked; });
  }
});

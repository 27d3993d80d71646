// The footer's language picker submits on change. A file, not an onchange attribute:
// the Content-Security-Policy runs no inline script (docs/security.md).
document.addEventListener("DOMContentLoaded", () => {
  const select = document.getElementById("lang");
  if (select) select.addEventListener("change", () => select.form.submit());
});

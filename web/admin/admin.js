// kefu admin pages: small conveniences; every page works without them.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch {
    document.execCommand("copy");
  }
});

// A file picked for an import is read into the form's text field, so the form posts its text.
document.addEventListener("change", async (event) => {
  const input = event.target.closest("input[type=file][data-fill]");
  if (!input || !input.files[0]) return;
  document.getElementById(input.dataset.fill).value = await input.files[0].text();
});

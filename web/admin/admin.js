// kefu admin pages: small conveniences; every page works without them.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = button.dataset.copied || button.textContent;
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

// The reports page's "today" card reads its figures again every 30 seconds.
const today = document.getElementById("today");
if (today && today.dataset.url) {
  const refresh = async () => {
    try {
      const response = await fetch(today.dataset.url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (!response.ok) return;
      const figures = await response.json();
      for (const field of today.querySelectorAll("[data-today]")) {
        const value = figures[field.dataset.today];
        if (value !== undefined && value !== null) field.textContent = String(value);
      }
    } catch {
      // Offline for a moment: the next round tries again.
    }
  };
  setInterval(refresh, 30_000);
}

// The "Copy" button beside a secret shown once (a new API token). Without
// scripts the field is still there to select and copy by hand; with them
// the button copies it, and says so.
document.querySelectorAll('[data-copy]').forEach((button) => {
  const field = document.getElementById(button.dataset.copy);
  const said = button.parentElement.querySelector('[data-copied]');
  if (!field || !navigator.clipboard) return;
  button.hidden = false;
  field.addEventListener('focus', () => field.select());
  button.addEventListener('click', async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      if (said) said.hidden = false;
    } catch {
      // The field stays selected: copying by hand still works.
    }
  });
});

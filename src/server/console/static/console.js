// medv console: the one script of our own (no inline script anywhere; the CSP forbids it).
// Forms and buttons with data-confirm ask before they submit.
'use strict';
document.addEventListener('submit', (ev) => {
  const form = ev.target;
  const text = form instanceof HTMLFormElement ? (ev.submitter?.dataset.confirm ?? form.dataset.confirm) : undefined;
  if (text && !window.confirm(text)) ev.preventDefault();
}, true);

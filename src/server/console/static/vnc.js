// medv console: the image test's live view. noVNC (served from the console's fixed asset table, beside
// this file) speaks RFB over the console's WebSocket, which the server joins to the test VM's VNC
// unix socket; the socket itself never leaves the server.
import RFB from './novnc/core/rfb.js';

const screen = document.getElementById('vnc-screen');
const status = document.getElementById('vnc-status');
if (screen && screen.dataset.ws) {
  const url = new URL(screen.dataset.ws, window.location.href);
  url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  const rfb = new RFB(screen, url.href, { shared: true });
  rfb.scaleViewport = true;
  rfb.viewOnly = screen.dataset.viewOnly === 'true';
  rfb.addEventListener('connect', () => {
    screen.dataset.connected = 'true';
    if (status) status.textContent = 'Live view connected.';
  });
  rfb.addEventListener('disconnect', (ev) => {
    screen.dataset.connected = 'false';
    if (status) status.textContent = ev.detail.clean ? 'The test VM has stopped: the live view is closed.' : 'The live view was lost.';
  });
}

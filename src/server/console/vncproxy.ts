/**
 * The image test's live view: a WebSocket from the browser (noVNC) joined to the test VM's VNC
 * unix socket on the server. Bytes pass through unchanged in both directions (RFB in binary
 * frames); the socket itself is never exposed. The gate in module.ts decides who may connect
 * (session, administrator, same origin, the session's token); here:
 *   - at most MAX_VIEWS views at once; frames of at most 1 MiB; text frames close the view;
 *   - back-pressure both ways: the VNC socket is paused while more than 4 MiB wait to reach the
 *     browser, the WebSocket while the VNC socket's buffer is full;
 *   - either side closing closes the other; close() ends every view (server shutdown).
 */
import type { IncomingMessage } from 'node:http';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

export const MAX_VIEWS = 4;
const HIGH = 4 << 20;
const LOW = 1 << 20;

export class VncProxy {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20, perMessageDeflate: false, handleProtocols: (p) => (p.has('binary') ? 'binary' : false) });
  private readonly views = new Set<WebSocket>();

  get count(): number {
    return this.views.size;
  }

  /** Refuse an upgrade with a plain HTTP status. */
  static refuse(socket: Duplex, status: number, text: string): void {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text) + 1}\r\n\r\n${text}\n`);
  }

  /** Complete the WebSocket handshake and join it to the VNC socket at `vncSocket`. */
  join(req: IncomingMessage, socket: Duplex, head: Buffer, vncSocket: string): void {
    if (this.views.size >= MAX_VIEWS) return VncProxy.refuse(socket, 503, 'Service Unavailable');
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.views.add(ws);
      const vnc = net.createConnection(vncSocket);
      let waiting = 0;
      const end = () => {
        this.views.delete(ws);
        vnc.destroy();
        if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000, 'closed');
      };
      vnc.on('data', (d: Buffer) => {
        waiting += d.length;
        if (waiting > HIGH) vnc.pause();
        ws.send(d, { binary: true }, () => {
          waiting -= d.length;
          if (waiting < LOW && vnc.isPaused()) vnc.resume();
        });
      });
      vnc.on('error', end);
      vnc.on('close', end);
      ws.on('message', (data, binary) => {
        if (!binary) { ws.close(1003, 'binary frames only'); return; }
        const chunk = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (!vnc.write(chunk)) {
          ws.pause();
          vnc.once('drain', () => ws.resume());
        }
      });
      ws.on('close', end);
      ws.on('error', end);
    });
  }

  close(): void {
    for (const ws of this.views) ws.terminate();
    this.views.clear();
    this.wss.close();
  }
}

/**
 * The host service's event log (src/host/service/events.ts) behind its real HTTP server
 * (src/host/service/http.ts, the /v1/events route) on a real unix socket: a reader that does not
 * read is cut off once events it was not sent yet fall out of the ring, while a reader that keeps
 * up gets every event in order; `since` replays what the ring holds and says what it lost.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { checkAnswer } from '../helpers/hostapi.js';
import { EventLog, MAX_EVENTS } from '../../src/host/service/events.js';
import { createHostHttp } from '../../src/host/service/http.js';
import { hostRoutes, type RouteDeps } from '../../src/host/service/routes.js';

/** A slow reader: a raw GET /v1/events whose socket is never read. */
function slowReader(sock: string): { socket: Socket; closed: Promise<void> } {
  const socket = connect(sock);
  socket.on('error', () => undefined);
  socket.pause();
  socket.write('GET /v1/events HTTP/1.1\r\nhost: medv\r\n\r\n');
  return { socket, closed: new Promise((r) => socket.once('close', () => r())) };
}

/** A reader that keeps up (Node's HTTP client): its JSON lines, and a wait for the n-th. */
function reader(sock: string, query: string): { lines: string[]; until(n: number): Promise<void>; close(): void } {
  const lines: string[] = [];
  let partial = '';
  let waiter: { n: number; done: () => void } | undefined;
  const req = request({ socketPath: sock, path: `/v1/events${query}` }, (res) => {
    res.setEncoding('latin1');
    res.on('data', (d: string) => {
      partial += d;
      const cut = partial.lastIndexOf('\n');
      if (cut < 0) return;
      lines.push(...partial.slice(0, cut).split('\n'));
      partial = partial.slice(cut + 1);
      if (waiter && lines.length >= waiter.n) waiter.done();
    });
  });
  req.on('error', () => undefined);
  req.end();
  return {
    lines,
    until: (n) => new Promise((done) => { if (lines.length >= n) done(); else waiter = { n, done }; }),
    close: () => req.destroy(),
  };
}

describe('host service: the event stream (real HTTP server, real sockets)', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let events: EventLog;
  let http: ReturnType<typeof createHostHttp>;
  let sock: string;

  beforeEach(async () => {
    dir = tempDir('host-events');
    sock = join(dir.path, 'host.sock');
    events = new EventLog(3);
    http = createHostHttp(hostRoutes({ events } as unknown as RouteDeps), { log: () => undefined });
    await new Promise<void>((r) => http.server.listen(sock, () => r()));
  });
  afterEach(async () => {
    http.closeAll();
    await new Promise<void>((r) => http.server.close(() => r()));
    await dir.cleanup();
  });

  it('a reader that does not read is cut off; one that keeps up gets every event, in order; memory stays bounded', async () => {
    const slow = slowReader(sock);
    const fast = reader(sock, '');
    for (let i = 0; i < 1000 && events.subscriberCount < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(events.subscriberCount, 2);
    const line = 'x'.repeat(300);
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 3 * MAX_EVENTS; i++) {
      events.emit('serial', { vm: 'v', line });
      if (i % 500 === 0) await new Promise((r) => setImmediate(r)); // let the fast reader read
    }
    for (let i = 0; i < 1000 && events.subscriberCount > 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(events.subscriberCount, 1, 'the slow reader is gone, the fast one stays');
    // What it was sent before, then the end of its connection.
    slow.socket.resume();
    await slow.closed;
    const grown = (process.memoryUsage().rss - before) / 1048576;
    assert.ok(grown < 64, `memory grew by ${grown.toFixed(0)} MiB`);
    await fast.until(3 * MAX_EVENTS);
    const cursors = fast.lines.map((l) => JSON.parse(l).cursor);
    assert.equal(cursors.length, 3 * MAX_EVENTS, 'the fast reader got every event');
    assert.ok(cursors.every((c, i) => i === 0 || c === cursors[i - 1] + 1), 'in order, none missing');
    fast.close();
  });

  it('?since= replays what the ring holds; older events are reported lost', async () => {
    for (let i = 0; i < MAX_EVENTS + 10; i++) events.emit('state', { vm: 'v', state: i % 2 ? 'paused' : 'running' });
    const oldest = events.cursor - MAX_EVENTS + 1;
    const r = reader(sock, `?since=${3 * 2 ** 32}`);
    await r.until(MAX_EVENTS + 1);
    r.close();
    const got = r.lines.map((l) => JSON.parse(l));
    assert.equal(got[0].type, 'lost');
    assert.equal(got[0].until, oldest - 1);
    assert.equal(got[1].cursor, oldest);
    assert.equal(got.length, MAX_EVENTS + 1);
    for (const l of r.lines.slice(0, 5)) checkAnswer('GET', '/v1/events', 200, 'application/x-ndjson', Buffer.from(`${l}\n`));
  });
});

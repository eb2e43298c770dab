/** TCP peers for tests of HTTP clients: a listener that only counts, a proxy that cuts a connection. */
import * as net from 'node:net';

/** A TCP listener that only counts connections and bytes (nothing is answered). */
export async function listener(host: string): Promise<{ port: number; connections: () => number; bytes: () => number; close: () => Promise<void> }> {
  let connections = 0;
  let bytes = 0;
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => { connections++; socks.add(s); s.on('data', (d) => { bytes += d.length; }); s.on('error', () => undefined); });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    port: (server.address() as net.AddressInfo).port, connections: () => connections, bytes: () => bytes,
    close: () => new Promise((r) => { for (const s of socks) s.destroy(); server.close(() => r()); }),
  };
}

/**
 * A TCP proxy on 127.0.0.1 to `port` that forwards both ways untouched, except once: when `cutAt`
 * bytes have gone from clients to the server in all, that connection is cut on both sides (the
 * server gets exactly `cutAt` bytes before it closes). `cut()` tells whether it happened.
 */
export async function cuttingProxy(port: number, cutAt: number): Promise<{ url: string; cut: () => boolean; close: () => Promise<void> }> {
  let forwarded = 0;
  let cut = false;
  const socks = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const s = net.connect(port, '127.0.0.1');
    for (const x of [c, s]) { socks.add(x); x.on('error', () => undefined); x.on('close', () => { c.destroy(); s.destroy(); }); }
    s.on('data', (d) => c.write(d));
    c.on('data', (d) => {
      if (cut || forwarded + d.length < cutAt) { forwarded += d.length; s.write(d); return; }
      cut = true;
      c.destroy();
      s.end(d.subarray(0, cutAt - forwarded), () => s.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, cut: () => cut,
    close: () => new Promise((r) => { for (const x of socks) x.destroy(); server.close(() => r()); }),
  };
}

/**
 * A TCP proxy on 127.0.0.1 to `port` that forwards both ways untouched and records the request
 * lines clients sent (`GET /images/x_1.ckm.index`): what a server was asked, whatever it answered.
 */
export async function recordingProxy(port: number): Promise<{ url: string; requests: () => string[]; reset: () => void; close: () => Promise<void> }> {
  let requests: string[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const s = net.connect(port, '127.0.0.1');
    let pending = '';
    for (const x of [c, s]) { socks.add(x); x.on('error', () => undefined); x.on('close', () => { c.destroy(); s.destroy(); }); }
    s.on('data', (d) => c.write(d));
    c.on('data', (d: Buffer) => {
      // a request line starts the stream or follows a line end; one split across chunks is seen whole once the rest comes
      pending += d.toString('latin1');
      let end = 0;
      for (const m of pending.matchAll(/(?:^|\r\n)([A-Z]+ \S+) HTTP\/1\.[01]\r\n/g)) { requests.push(m[1]); end = m.index + m[0].length; }
      pending = pending.slice(end).slice(-8192);
      s.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests: () => [...requests],
    reset: () => { requests = []; },
    close: () => new Promise((r) => { for (const x of socks) x.destroy(); server.close(() => r()); }),
  };
}

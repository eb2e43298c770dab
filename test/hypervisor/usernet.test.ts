/**
 * The NAT network's frame filter, with the real passt behind it: frames a hostile guest writes
 * itself (a SYN addressed to 127.0.0.1, or to the gateway on a port nobody allowed) never reach a
 * service on the host's loopback, while ordinary outbound connections and allowed host ports do.
 * Measured first without the filter: passt 0.0~git20230309 connects a SYN to 127.0.0.1 to the
 * host's loopback even with --no-map-gw (src/hypervisor/usernet.ts).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { guestFrameAllowed, startUserNet, type UserNet } from '../../src/hypervisor/usernet.js';
import { tempDir } from '../helpers/cli.js';

function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i += 2) sum += (buf[i] << 8) + (buf[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

const ip4 = (a: string) => Buffer.from(a.split('.').map(Number));

/** An Ethernet frame with an IPv4 TCP SYN from the guest (10.0.2.15) to dst:port. */
function syn(dst: string, port: number, opts: { fragment?: boolean } = {}): Buffer {
  const src = ip4('10.0.2.15');
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(40000 + Math.floor(Math.random() * 20000), 0);
  tcp.writeUInt16BE(port, 2);
  tcp.writeUInt32BE(1, 4);
  tcp[12] = 5 << 4;
  tcp[13] = 0x02;
  tcp.writeUInt16BE(64240, 14);
  tcp.writeUInt16BE(checksum(Buffer.concat([src, ip4(dst), Buffer.from([0, 6, 0, 20]), tcp])), 16);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(40, 2);
  if (opts.fragment) ip.writeUInt16BE(0x2000, 6); // more fragments follow
  ip[8] = 64;
  ip[9] = 6;
  src.copy(ip, 12);
  ip4(dst).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  const eth = Buffer.from([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00]);
  return Buffer.concat([eth, ip, tcp]);
}

/** An IPv6 frame header (no payload needed for the filter) to `dst` (16 bytes). */
function ipv6(dst: Buffer): Buffer {
  const f = Buffer.alloc(14 + 40 + 20);
  f.writeUInt16BE(0x86dd, 12);
  f[14] = 0x60;
  f[14 + 6] = 6;
  dst.copy(f, 14 + 24);
  return f;
}

/** The host's first non-loopback IPv4 address (reached through passt as any outside host). */
function hostAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

/** A TCP server counting connections. */
async function counter(host: string): Promise<{ server: Server; port: number; hits: number; next: () => Promise<void> }> {
  const state = { hits: 0, waiters: [] as Array<() => void> };
  const server = createServer((s) => { state.hits++; s.destroy(); for (const w of state.waiters.splice(0)) w(); });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as { port: number }).port,
    get hits() { return state.hits; },
    next: () => new Promise<void>((r) => state.waiters.push(r)),
  };
}

describe('hypervisor/usernet: the guest\'s frames on their way to passt', function () {
  this.timeout(60_000);

  it('guestFrameAllowed: loopback and unspecified destinations never, the mapped gateway only on allowed ports', () => {
    const open = { gatewayMapped: false, allowed: new Set<number>() };
    const mapped = { gatewayMapped: true, allowed: new Set([8080]) };
    assert.equal(guestFrameAllowed(syn('192.0.2.9', 80), open), true);
    assert.equal(guestFrameAllowed(syn('127.0.0.1', 80), open), false);
    assert.equal(guestFrameAllowed(syn('127.1.2.3', 80), open), false);
    assert.equal(guestFrameAllowed(syn('0.0.0.0', 80), open), false);
    assert.equal(guestFrameAllowed(syn('10.0.2.2', 80), open), true, 'not mapped: the gateway is no host address');
    assert.equal(guestFrameAllowed(syn('10.0.2.2', 8080), mapped), true);
    assert.equal(guestFrameAllowed(syn('10.0.2.2', 8081), mapped), false);
    assert.equal(guestFrameAllowed(syn('10.0.2.2', 8080, { fragment: true }), mapped), false);
    assert.equal(guestFrameAllowed(syn('127.0.0.1', 8080), mapped), false);
    const v6 = (hex: string) => ipv6(Buffer.from(hex, 'hex'));
    assert.equal(guestFrameAllowed(v6('00000000000000000000000000000001'), open), false, '::1');
    assert.equal(guestFrameAllowed(v6('00000000000000000000ffff7f000001'), open), false, '::ffff:127.0.0.1');
    assert.equal(guestFrameAllowed(v6('0000000000000000000000007f000001'), open), false, '::127.0.0.1');
    assert.equal(guestFrameAllowed(v6('fd000000000000000000000000000009'), open), true);
    assert.equal(guestFrameAllowed(v6('fd000000000000000000000000000009'), mapped), false, 'IPv4 only when the gateway is mapped');
    assert.equal(guestFrameAllowed(Buffer.from([0, 1, 2]), open), false);
    const vlan = syn('192.0.2.9', 80);
    vlan.writeUInt16BE(0x8100, 12);
    assert.equal(guestFrameAllowed(vlan, open), false);
  });

  for (const allowed of [[], ['allowed']] as const) {
    it(`real passt${allowed.length ? ', one host port allowed' : ''}: a SYN to the host's loopback is dropped; an outbound one goes through`, async function () {
      const outside = hostAddress();
      if (!outside) this.skip();
      const dir = tempDir('usernet');
      const loop = await counter('127.0.0.1');
      const permitted = await counter('127.0.0.1');
      const out = await counter(outside);
      const sock = join(dir.path, 'q.sock');
      const pair = createServer();
      pair.listen(sock);
      await once(pair, 'listening');
      const accepted = once(pair, 'connection') as Promise<[Socket]>;
      const guest = connect(sock);
      const [qemuEnd] = await accepted;
      let net: UserNet | undefined;
      try {
        net = startUserNet({ allowHostPorts: allowed.length ? [permitted.port] : [] });
        net.attach(qemuEnd);
        const send = (frame: Buffer) => {
          const len = Buffer.alloc(4);
          len.writeUInt32BE(frame.length);
          guest.write(Buffer.concat([len, frame]));
        };
        send(syn('127.0.0.1', loop.port));
        send(syn('10.0.2.2', loop.port));
        if (allowed.length) {
          const got = permitted.next();
          send(syn('10.0.2.2', permitted.port));
          await got;
          assert.equal(permitted.hits, 1, 'the allowed host port is reached at the gateway');
        }
        // Frames are handled in order: by the time this one connects, the ones before it were too.
        const reached = out.next();
        send(syn(outside, out.port));
        await reached;
        assert.equal(out.hits, 1, 'an outbound connection goes through');
        assert.equal(loop.hits, 0, 'nothing reached the service on the host\'s loopback');
      } finally {
        net?.close();
        guest.destroy();
        pair.close();
        for (const c of [loop, permitted, out]) c.server.close();
        await dir.cleanup();
      }
    });
  }
});

/**
 * Who is on the other end of a request: the client's address and whether the request came over
 * TLS, decided once, at the edge (http.ts), when the request arrives, and never read from the
 * socket again (a socket can be gone by the time a handler finishes: reading it then crashed the
 * server, issue 18 item 11).
 *
 * Behind a reverse proxy every connection comes from the proxy, so the proxy's own address says
 * nothing about the client. `--trust-proxy CIDR` names the proxies: only when the TCP peer is one
 * of them is `X-Forwarded-For` read, from the right (the entry the nearest proxy appended) to the
 * left, skipping addresses that are themselves trusted proxies; the first untrusted address is the
 * client. Everything left of it was written by the client and is ignored, so a client cannot
 * choose its own address by sending the header. An entry that is not an IP address ends the walk:
 * the client is then the last trusted hop (a misconfigured proxy makes its clients share its
 * address, it never lets one of them pick another's). `X-Forwarded-Proto: https` from a trusted
 * proxy counts as TLS (the proxy terminated it).
 */
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { MedvError } from '../core/errors.js';

export interface Peer {
  /** The client's address: the TCP peer, or the one X-Forwarded-For names through trusted proxies. */
  address: string;
  /** The TCP peer (a proxy, when there is one). */
  via: string;
  /** TLS to this server, or to a trusted proxy that said so. */
  secure: boolean;
}

/** `::ffff:1.2.3.4` is 1.2.3.4; anything else as it is. */
export function normalizeAddress(a: string): string {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(a);
  return m ? m[1] : a;
}

export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  const a = normalizeAddress(addr);
  return a === '::1' || /^127\./.test(a);
}

/** The set of trusted proxies, from `--trust-proxy` CIDRs (an address alone is a /32 or /128). */
export class TrustedProxies {
  private list = new BlockList();
  readonly cidrs: string[];

  constructor(cidrs: string[] = []) {
    this.cidrs = [];
    for (const c of cidrs) {
      const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(c.trim());
      const addr = m ? normalizeAddress(m[1]) : '';
      const family = isIP(addr);
      const bits = m?.[2] === undefined ? (family === 6 ? 128 : 32) : Number(m[2]);
      if (!m || family === 0 || bits > (family === 6 ? 128 : 32)) {
        throw new MedvError('EINVAL_ARG', `--trust-proxy must be an IP address or a CIDR such as 10.0.0.0/8 or fd00::/8, not ${JSON.stringify(c).slice(0, 80)}`);
      }
      this.list.addSubnet(addr, bits, family === 6 ? 'ipv6' : 'ipv4');
      this.cidrs.push(`${addr}/${bits}`);
    }
  }

  get empty(): boolean {
    return this.cidrs.length === 0;
  }

  has(address: string): boolean {
    if (this.empty) return false;
    const a = normalizeAddress(address);
    const family = isIP(a);
    if (family === 0) return false;
    try { return this.list.check(a, family === 6 ? 'ipv6' : 'ipv4'); } catch { return false; }
  }

  /** The client of a request whose TCP peer is `via`, as described at the top of this file. */
  clientAddress(via: string, forwardedFor: string | string[] | undefined): string {
    let client = normalizeAddress(via);
    if (!this.has(client) || forwardedFor === undefined) return client;
    const text = Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor;
    if (text.length > 4096) return client;
    const hops = text.split(',').map((h) => normalizeAddress(h.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      if (isIP(hops[i]) === 0) return client;
      client = hops[i];
      if (!this.has(client)) return client;
    }
    return client;
  }

  peer(via: string, req: IncomingMessage, tls: boolean): Peer {
    const trusted = this.has(via);
    const proto = req.headers['x-forwarded-proto'];
    return {
      address: this.clientAddress(via, req.headers['x-forwarded-for']),
      via: normalizeAddress(via),
      secure: tls || (trusted && typeof proto === 'string' && proto.trim().toLowerCase() === 'https'),
    };
  }
}

const PEERS = new WeakMap<IncomingMessage, Peer>();

export function setPeer(req: IncomingMessage, peer: Peer): void {
  PEERS.set(req, peer);
}

/** The peer the edge recorded for `req` (every request that reaches a module has one). */
export function peerOf(req: IncomingMessage): Peer {
  const p = PEERS.get(req);
  if (!p) throw new MedvError('EINTERNAL', 'a request without a recorded peer');
  return p;
}

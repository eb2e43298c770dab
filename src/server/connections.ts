/**
 * What one peer may hold of the server's connections (issue 18 item 14: 300 connections sending a
 * byte every 10 s used to take every slot, and nobody else was served).
 *
 * - At most `perAddress` open connections from one address (trusted proxies excepted: their
 *   connections carry many clients). Past it, the address's oldest idle keep-alive connection
 *   makes room; when it has none, the new connection is closed at once.
 * - At most `total` open connections. When a new one arrives at the cap, the server makes room:
 *   it closes a connection that is not being answered (waiting for a request head, idle between
 *   requests, or still receiving a body), taken from the address that holds the most connections
 *   (of its connections, an idle one, then one waiting for a head, then one receiving a body;
 *   the oldest first). Only when every
 *   connection is being answered is the newcomer closed. So a flood from many addresses costs each
 *   of them its slowest connections, and a client that arrives is let in.
 * Deadlines (http.ts) make sure a connection that sends nothing useful does not keep a slot long.
 *
 * A connection is known by its remote address and port, captured when it is accepted (the same
 * for the TCP socket and the TLS socket over it; a destroyed socket no longer says).
 */
import type { Socket } from 'node:net';
import type { TrustedProxies } from './peer.js';
import { normalizeAddress } from './peer.js';

/** idle: between requests (keep-alive); head: waiting for a request head; body: receiving a body; answer: being answered. */
export type Phase = 'idle' | 'head' | 'body' | 'answer';

interface Conn {
  key: string;
  socket: Socket;
  address: string;
  since: number;
  phase: Phase;
}

export interface ConnectionLimits {
  total: number;
  perAddress: number;
}

export class Connections {
  private byKey = new Map<string, Conn>();
  private byAddress = new Map<string, Set<Conn>>();
  /** Connections refused or evicted since start (for the log and tests). */
  refused = 0;
  evicted = 0;

  constructor(readonly limits: ConnectionLimits, readonly trusted: TrustedProxies) {}

  get size(): number {
    return this.byKey.size;
  }

  private static key(address: string | undefined, port: number | undefined): string {
    return `${address ?? ''}|${port ?? ''}`;
  }

  /** A new TCP connection: admitted (true) or closed (false). */
  admit(socket: Socket): boolean {
    const address = normalizeAddress(socket.remoteAddress ?? '');
    const key = Connections.key(socket.remoteAddress, socket.remotePort);
    if (!socket.remoteAddress || this.byKey.has(key)) {
      socket.destroy();
      this.refused++;
      return false;
    }
    const mine = this.byAddress.get(address);
    if (!this.trusted.has(address) && mine && mine.size >= this.limits.perAddress) {
      const idle = [...mine].filter((c) => c.phase === 'idle').sort((a, b) => a.since - b.since)[0];
      if (!idle) {
        socket.destroy();
        this.refused++;
        return false;
      }
      this.drop(idle);
    }
    if (this.byKey.size >= this.limits.total && !this.evictOne()) {
      socket.destroy();
      this.refused++;
      return false;
    }
    const c: Conn = { key, socket, address, since: Date.now(), phase: 'head' };
    this.byKey.set(key, c);
    if (mine) mine.add(c); else this.byAddress.set(address, new Set([c]));
    socket.once('close', () => this.forget(c));
    return true;
  }

  private forget(c: Conn): void {
    if (this.byKey.get(c.key) === c) this.byKey.delete(c.key);
    const set = this.byAddress.get(c.address);
    set?.delete(c);
    if (set && set.size === 0) this.byAddress.delete(c.address);
  }

  /** The phase of the connection a request arrived on (`socket` may be the TLS socket over it). */
  setPhase(socket: Socket | null | undefined, phase: Phase): void {
    if (!socket) return;
    const c = this.byKey.get(Connections.key(socket.remoteAddress, socket.remotePort));
    if (c) c.phase = phase;
  }

  private drop(c: Conn): void {
    c.socket.destroy();
    this.evicted++;
    // 'close' comes later: forget it now so the newcomer fits
    this.forget(c);
  }

  private evictOne(): boolean {
    const rank = (p: Phase) => (p === 'idle' ? 0 : p === 'head' ? 1 : 2);
    let best: Conn | undefined;
    let bestCount = -1;
    for (const [addr, set] of this.byAddress) {
      if (this.trusted.has(addr) && this.byAddress.size > 1) continue;
      for (const c of set) {
        if (c.phase === 'answer') continue;
        // the address holding the most connections first; then idle, then waiting for a head, then receiving a body; then the oldest
        const better = !best
          || set.size > bestCount
          || (set.size === bestCount && (rank(c.phase) < rank(best.phase) || (rank(c.phase) === rank(best.phase) && c.since < best.since)));
        if (better) { best = c; bestCount = set.size; }
      }
    }
    if (!best) return false;
    this.drop(best);
    return true;
  }
}

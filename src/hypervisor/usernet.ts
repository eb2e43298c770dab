/**
 * The guest's NAT network without the host's loopback. QEMU's own user-mode network (`-netdev
 * user`, slirp) maps the gateway 10.0.2.2 to the host's 127.0.0.1, so a guest reaches every
 * service bound there (FACTS.md); `restrict=on` cuts the guest off entirely. Instead the frames
 * go to passt (Debian's `passt`, user-mode NAT over plain sockets), and QEMU 7.2 reaches us with
 * `-netdev stream` over an inherited socket pair: no socket file, nothing to connect to by name.
 *
 * passt alone is not enough: with `--no-map-gw` it no longer maps the gateway to the host, but it
 * still connects wherever a guest frame says, and a guest that writes its own packets (root in the
 * guest) reaches 127.0.0.1 by addressing it (measured: a SYN to 127.0.0.1 sent through passt
 * 0.0~git20230309 connects to the host's loopback). So every frame from the guest passes our
 * filter (`guestFrameAllowed`) on its way to passt; frames from passt go to the guest as they are.
 *
 * - Default: passt runs with `--no-map-gw` (10.0.2.2 is not the host); frames to loopback or
 *   unspecified addresses (127.0.0.0/8, 0.0.0.0/8, ::1, ::, IPv4-mapped and -compatible IPv6)
 *   are dropped. The guest reaches what any other machine on the host's network reaches (other
 *   hosts, the host's own non-loopback addresses), never a service bound to the host's loopback.
 * - With allowed host ports (`allowHostPorts`): passt maps 10.0.2.2 to the host's loopback, IPv4
 *   only (`-4`), and a frame to 10.0.2.2 passes only as an unfragmented TCP or UDP packet to an
 *   allowed port (other ports, ICMP and fragments to the gateway are dropped).
 * Anything that is neither ARP, IPv4 nor IPv6 (VLAN tags, short or malformed frames) is dropped.
 *
 * The guest's addresses are QEMU's usual ones (10.0.2.15/24, gateway 10.0.2.2), given by passt's
 * DHCP; DNS servers are the host's from /etc/resolv.conf (a resolver on the host's loopback is not
 * offered). passt runs under `setpriv --pdeathsig` (it dies with the supervisor), with a minimal
 * environment, and exits when its end of the stream closes; started as root it drops to `nobody`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { minimalEnv } from '../core/env.js';
import { MedvError } from '../core/errors.js';

export const GUEST_ADDRESS = '10.0.2.15';
export const GATEWAY = '10.0.2.2';
/** Largest frame on the stream (passt's MTU 65520 plus the Ethernet header, with room). */
const MAX_FRAME = 65_536 + 64;

/** Where an executable is on PATH, or undefined. */
export function findExecutable(name: string, path = process.env.PATH ?? '/usr/bin:/bin'): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const file = join(dir, name);
    try { accessSync(file, constants.X_OK); return file; } catch { /* next */ }
  }
  return undefined;
}

export interface UserNet {
  /** Once QEMU is spawned: relay between its end of the network stream (its fd 4) and passt. */
  attach(qemuEnd: Duplex): void;
  readonly passt: ChildProcess;
  close(): void;
}

/**
 * Start passt for one QEMU. `log` gets passt's messages (its syslog noise dropped). EUNSUPPORTED
 * when passt is not installed: a NAT guest is never silently given the host's loopback instead.
 */
export function startUserNet(opts: { allowHostPorts?: readonly number[]; log?: (line: string) => void }): UserNet {
  const binary = findExecutable('passt');
  if (!binary) throw new MedvError('EUNSUPPORTED', 'a NAT network needs passt (apt-get install passt): QEMU\'s own user network would let the guest reach the host\'s loopback');
  const ports = [...new Set(opts.allowHostPorts ?? [])];
  for (const p of ports) if (!Number.isSafeInteger(p) || p < 1 || p > 65535) throw new MedvError('EINVAL_ARG', `invalid host port ${p}`);
  const args = ['-f', '-q', '-F', '3', '-a', GUEST_ADDRESS, '-n', '24', '-g', GATEWAY];
  if (ports.length) args.push('-4');
  else args.push('--no-map-gw');
  const wrapper = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--'] : [];
  const argv = [...wrapper, binary, ...args];
  const passt = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], env: minimalEnv() });
  passt.on('error', () => undefined); // seen as its exit; QEMU then loses its network, the VM goes on
  passt.stderr!.setEncoding('utf8');
  let partial = '';
  passt.stderr!.on('data', (d: string) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) if (l.trim() && !/to syslog$/.test(l)) opts.log?.(`passt: ${l}`);
  });
  const passtEnd = passt.stdio[3] as Duplex;
  passtEnd.on('error', () => undefined);
  const rule: FrameRule = { gatewayMapped: ports.length > 0, allowed: new Set(ports) };
  return {
    passt,
    attach(qemuEnd) { relay(qemuEnd, passtEnd, rule); },
    close() {
      passtEnd.destroy();
      if (passt.exitCode === null && passt.signalCode === null) passt.kill('SIGTERM');
    },
  };
}

/** passt's and QEMU's stream framing: a 32-bit big-endian length, then the Ethernet frame. */
function relay(guest: Duplex, passt: Duplex, rule: FrameRule): void {
  guest.on('error', () => undefined);
  // passt -> guest: as it comes.
  passt.pipe(guest);
  // guest -> passt: frame by frame, filtered.
  let buf: Buffer = Buffer.alloc(0);
  guest.on('data', (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    let off = 0;
    const out: Buffer[] = [];
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (len > MAX_FRAME) { guest.destroy(); passt.destroy(); return; }
      if (buf.length - off - 4 < len) break;
      const frame = buf.subarray(off + 4, off + 4 + len);
      if (guestFrameAllowed(frame, rule)) out.push(buf.subarray(off, off + 4 + len));
      off += 4 + len;
    }
    buf = off === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(off));
    if (out.length && !passt.write(out.length === 1 ? out[0] : Buffer.concat(out))) {
      guest.pause();
      passt.once('drain', () => guest.resume());
    }
  });
  guest.once('close', () => passt.destroy());
  passt.once('close', () => guest.destroy());
}

const GATEWAY_BYTES = Buffer.from(GATEWAY.split('.').map(Number));

/** What passes: whether passt maps the gateway to the host's loopback, and the ports allowed there. */
export interface FrameRule { gatewayMapped: boolean; allowed: ReadonlySet<number> }

/**
 * May this Ethernet frame from the guest go to passt? See the file comment: ARP yes; IPv4 and
 * IPv6 unless addressed to a loopback or unspecified address; to a gateway passt maps to the host,
 * only an unfragmented TCP or UDP packet to an allowed port; anything else no.
 */
export function guestFrameAllowed(frame: Buffer, rule: FrameRule): boolean {
  if (frame.length < 14) return false;
  const type = frame.readUInt16BE(12);
  if (type === 0x0806) return true; // ARP
  if (type === 0x86dd) return !rule.gatewayMapped && ipv6Allowed(frame);
  if (type !== 0x0800) return false;
  const ip = 14;
  if (frame.length < ip + 20 || frame[ip] >> 4 !== 4) return false;
  const ihl = (frame[ip] & 0x0f) * 4;
  if (ihl < 20 || frame.length < ip + ihl) return false;
  const dst = frame.subarray(ip + 16, ip + 20);
  if (dst[0] === 127 || dst[0] === 0) return false; // the host's loopback, "this host"
  if (!rule.gatewayMapped || !dst.equals(GATEWAY_BYTES)) return true;
  if ((frame.readUInt16BE(ip + 6) & 0x3fff) !== 0) return false; // a fragment (MF set or an offset): no port to judge
  const proto = frame[ip + 9];
  if ((proto !== 6 && proto !== 17) || frame.length < ip + ihl + 4) return false;
  return rule.allowed.has(frame.readUInt16BE(ip + ihl + 2));
}

/** IPv6: not to ::1, ::, nor an IPv4-mapped (::ffff:a.b.c.d) or -compatible (::a.b.c.d) address. */
function ipv6Allowed(frame: Buffer): boolean {
  const ip = 14;
  if (frame.length < ip + 40 || frame[ip] >> 4 !== 6) return false;
  const dst = frame.subarray(ip + 24, ip + 40);
  const zeros80 = dst.subarray(0, 10).every((b) => b === 0);
  if (!zeros80) return true;
  const w5 = dst.readUInt16BE(10);
  if (w5 === 0xffff) return false; // IPv4-mapped
  if (w5 === 0) return false; // ::, ::1 and IPv4-compatible
  return true;
}

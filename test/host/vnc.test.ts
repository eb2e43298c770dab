/**
 * `--display vnc-tcp`: VNC for people on 127.0.0.1 with a generated password (QEMU `password=on`,
 * the password set over QMP), through the real CLI and real QEMU: `vm status` shows the address
 * and the password; nothing else does (not `vm list`, QEMU's command line, the logs or the events);
 * it listens on the loopback only; a VNC client (the RFB handshake, DES by `openssl`) gets in with
 * the password and not without it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { runMedv, waitForFileText } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';

/** VNC authentication's response: DES-ECB of the challenge, the key the password with each byte's bits reversed. */
function vncResponse(password: string, challenge: Buffer): Buffer {
  const key = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(key, 0, 0, 8);
  for (let i = 0; i < 8; i++) { let b = key[i], r = 0; for (let j = 0; j < 8; j++) { r = (r << 1) | (b & 1); b >>= 1; } key[i] = r; }
  return execFileSync('openssl', ['enc', '-des-ecb', '-nopad', '-K', key.toString('hex'), '-provider', 'legacy', '-provider', 'default'], { input: challenge });
}

/** RFB 3.8 with VNC authentication: 'ok' and the screen size, or 'refused'. */
function rfbLogin(port: number, password: string): Promise<{ result: 'ok' | 'refused'; width?: number; height?: number }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let step = 0;
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (step === 0 && buf.length >= 12) { buf = buf.subarray(12); s.write('RFB 003.008\n'); step = 1; }
      if (step === 1 && buf.length >= 1 && buf.length >= 1 + buf[0]) {
        const types = [...buf.subarray(1, 1 + buf[0])];
        buf = buf.subarray(1 + buf[0]);
        if (!types.includes(2)) { reject(new Error(`no VNC authentication offered: ${types}`)); return; }
        s.write(Buffer.from([2]));
        step = 2;
      }
      if (step === 2 && buf.length >= 16) { s.write(vncResponse(password, buf.subarray(0, 16))); buf = buf.subarray(16); step = 3; }
      if (step === 3 && buf.length >= 4) {
        if (buf.readUInt32BE(0) !== 0) { s.destroy(); resolve({ result: 'refused' }); return; }
        buf = buf.subarray(4);
        s.write(Buffer.from([1])); // ClientInit, shared
        step = 4;
      }
      if (step === 4 && buf.length >= 4) { const width = buf.readUInt16BE(0), height = buf.readUInt16BE(2); s.destroy(); resolve({ result: 'ok', width, height }); }
    });
  });
}

describe('host: --display vnc-tcp (real CLI, real QEMU)', function () {
  this.timeout(120_000);
  const host = vmHost('host-vnc');

  it('127.0.0.1 with a generated password: shown by vm status only; a VNC client gets in with it and not without', async () => {
    const s = host.json(['start', freshGuestImage(host.path), '--name', 'v', '--memory', '32', '--display', 'vnc-tcp']);
    await waitForFileText(host.serialOf('v'), GUEST.serial.ready, 60_000);
    assert.equal(s.display.kind, 'vnc-tcp');
    const status = host.json(['status', 'v']);
    const m = /^127\.0\.0\.1:(\d+)$/.exec(status.display.vncAddress);
    assert.ok(m, status.display.vncAddress);
    const port = Number(m[1]);
    const password: string = status.display.vncPassword;
    assert.match(password, /^[A-Za-z0-9]{8}$/);
    assert.match(host.vm(['status', 'v']).stdout, new RegExp(`display: +vnc-tcp 127\\.0\\.0\\.1:${port}, password ${password}`));
    // Nowhere else.
    const listed = host.json(['list'])[0];
    assert.equal(listed.display.vncPassword, undefined, 'vm list leaves it out');
    assert.ok(!readFileSync(`/proc/${s.qemuPid}/cmdline`, 'latin1').includes(password), 'not on QEMU\'s command line');
    for (const f of ['supervisor.log', 'serial.log']) assert.ok(!readFileSync(join(host.env.MEDV_RUN_DIR, 'v', f), 'latin1').includes(password), `not in ${f}`);
    assert.ok(!readFileSync(join(host.env.MEDV_RUN_DIR, 'host.log'), 'latin1').includes(password), 'not in the service\'s log');
    const events = runMedv(['vm', 'events', '--since', '0', '--json', '--vm', 'v'], host.env, { timeoutMs: 3000 });
    assert.match(events.stdout, /"state":"running"/);
    assert.ok(!events.stdout.includes(password), 'not in the events');
    // The loopback only: its listening socket is 127.0.0.1's (/proc/net/tcp, state 0A).
    const listening = readFileSync('/proc/net/tcp', 'latin1').split('\n').filter((l) => l.includes(`:${port.toString(16).toUpperCase().padStart(4, '0')} `) && / 0A /.test(l));
    assert.ok(listening.length > 0 && listening.every((l) => l.trim().split(/\s+/)[1].startsWith('0100007F:')), listening.join('\n'));
    assert.equal((await rfbLogin(port, 'wrong-pw')).result, 'refused');
    const ok = await rfbLogin(port, password);
    assert.equal(ok.result, 'ok');
    assert.ok((ok.width ?? 0) >= 640, `a screen: ${ok.width}x${ok.height}`);
    assert.equal(host.json(['stop', 'v']).exitReason, 'poweroff');
  });
});

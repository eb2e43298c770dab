/**
 * The supervisor and the processes it starts, through the real CLI with real QEMU (the nasm
 * guest): no secret of the command's environment lives on in the supervisor, QEMU or passt, and
 * QEMU gets a minimal environment (issue 18, item 8); a run folder whose path holds `+`, `%`,
 * `#` or `,` reaches QEMU unchanged (item 7).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { TEST_PASSPHRASE, runMedv, waitForFileText } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';

/** A process's environment as the kernel shows it. */
function environOf(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) out[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return out;
}

/** The children of process `pid` (from /proc/<n>/stat's parent field). */
function childrenOf(pid: number): Array<{ pid: number; comm: string }> {
  const out: Array<{ pid: number; comm: string }> = [];
  for (const n of readdirSync('/proc').filter((f) => /^\d+$/.test(f))) {
    let stat: string;
    try { stat = readFileSync(`/proc/${n}/stat`, 'latin1'); } catch { continue; }
    const close = stat.lastIndexOf(')');
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (ppid === pid) out.push({ pid: Number(n), comm: stat.slice(stat.indexOf('(') + 1, close) });
  }
  return out;
}

describe('host: the supervisor\'s children and run folder (real CLI, real QEMU)', function () {
  this.timeout(120_000);
  const host = vmHost('host-supervisor');
  const { json } = host;

  it('no passphrase or token in the environment of the supervisor, QEMU or passt; QEMU gets only PATH and the locale', async () => {
    const disk = join(host.path, 'e.evhd');
    assert.equal(runMedv(['disk', 'convert', freshGuestImage(host.path), disk], host.env).code, 0);
    const secrets = { MEDV_ADMIN_TOKEN: 'admin-token-not-for-children', MEDV_DB: 'postgres://u:dbpass@h/db', SOME_API_KEY: 'api-key-not-for-children', APP_DATABASE_URL: 'postgres://app:urlpass@db/x', https_proxy: 'http://me:proxypass@proxy:3128' };
    const s = json(['start', disk, '--name', 'e', '--memory', '32', '--network', 'nat'], secrets);
    await waitForFileText(host.serialOf('e'), GUEST.serial.ready, 60_000);
    const passt = childrenOf(s.pid).filter((c) => c.comm.startsWith('passt'));
    for (const [who, pid] of [['supervisor', s.pid], ['QEMU', s.qemuPid], ...passt.map((p) => ['passt', p.pid] as const)] as const) {
      const e = environOf(pid);
      const text = Object.entries(e).map(([k, v]) => `${k}=${v}`).join('\n');
      assert.ok(!text.includes(TEST_PASSPHRASE), `the passphrase is in ${who}'s environment`);
      for (const [k, v] of Object.entries(secrets)) {
        assert.ok(!(k in e) && !text.includes(v), `${k} is in ${who}'s environment`);
      }
      assert.ok(!('MEDV_PASSPHRASE' in e), `MEDV_PASSPHRASE is in ${who}'s environment`);
      if (who !== 'supervisor') {
        assert.deepEqual(Object.keys(e).filter((k) => !['PATH', 'LANG', 'LC_ALL'].includes(k)), [], `${who} gets only PATH and the locale`);
      }
    }
    assert.equal(passt.length, 1, `one passt runs for the NAT guest: ${JSON.stringify(childrenOf(s.pid))}`);
    // The supervisor still has what it needs (the run folder it was told about).
    assert.equal(environOf(s.pid).MEDV_RUN_DIR, host.env.MEDV_RUN_DIR);
    json(['stop', 'e']);
  });

  it('a run folder whose path holds +, %, # and , works: QEMU reaches the right NBD, QMP and VNC sockets', async () => {
    const img = freshGuestImage(host.path);
    // What a URL would re-read: '+' (a space in a query), '%41' (an 'A'), '#' (the end of it).
    host.env = { MEDV_RUN_DIR: join(host.path, 'r+u%41n#x') };
    json(['start', img, '--name', 'url', '--memory', '32']);
    await waitForFileText(host.serialOf('url'), GUEST.serial.ready, 60_000);
    assert.equal(json(['stop', 'url']).exitReason, 'poweroff');
    // What QEMU's option syntax would re-read: a comma.
    host.env = { MEDV_RUN_DIR: join(host.path, 'r+u%41n#x,server=off') };
    const s = json(['start', img, '--name', 'odd', '--memory', '32', '--display', 'vnc']);
    assert.equal(s.state, 'running');
    assert.equal(s.display.vncSocket, join(host.env.MEDV_RUN_DIR, 'odd', 'vnc.sock'));
    await waitForFileText(host.serialOf('odd'), GUEST.serial.ready, 60_000);
    assert.match(readFileSync(host.serialOf('odd'), 'latin1'), /MEDV-GUEST boot=2\r?\n/, 'the guest read and wrote its disk over NBD');
    assert.equal(json(['pause', 'odd']).state, 'paused', 'QMP answers');
    assert.equal(json(['resume', 'odd']).state, 'running');
    assert.equal(json(['stop', 'odd']).exitReason, 'poweroff');
  });
});

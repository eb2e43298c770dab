/**
 * What `medv serve` creates has the modes it chose, whatever the umask (issue 18 item 13: under
 * umask 000 the repository was world-writable): a real server started under umask 000 takes a
 * real upload, then every folder and file under its root is checked.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMedv, tempDir } from '../helpers/cli.js';
import { runMedvAsync, startServe, type ServeProcess } from './helpers.js';

/** Every path under `dir` with its mode (lstat: links are not followed). */
function modes(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      out.set(p.slice(dir.length + 1), st.mode & 0o7777);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

describe('server: modes under umask 000', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let srv: ServeProcess | undefined;
  before(() => { dir = tempDir('serve-modes'); });
  after(async () => { await srv?.stop(); await dir.cleanup(); });

  it('the root, images/, .uploads/, published packs and indexes, the database, the token and the key get their own modes', async () => {
    const hostKey = join(dir.path, 'host.key');
    writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
    const disk = join(dir.path, 'd.raw');
    writeFileSync(disk, Buffer.concat([randomBytes(128 * 1024), Buffer.alloc(384 * 1024)]));
    const packed = join(dir.path, 'packed');
    assert.equal(runMedv(['image', 'pack', disk, '--name', 'm', '--version', '1', '--out', packed, '--keys', join(dir.path, 'keys'), '--host-key', hostKey], { MEDV_PASSPHRASE: '' }).code, 0);
    const root = join(dir.path, 'a', 'root');
    const old = process.umask(0o000); // the server inherits it
    try {
      srv = await startServe(root);
    } finally {
      process.umask(old);
    }
    // an upload in progress (a file and its .json in .uploads), then two published files
    const s = srv;
    const stalled = await runMedvAsync(['image', 'upload', join(packed, 'm_1.ckm'), '--server', srv.url, '--token-file', srv.adminTokenFile, '--state-dir', join(dir.path, 'state'), '--chunk-size', '4096'], (c) => {
      void s.waitForLog((e) => e.method === 'PATCH' && e.status === 204).then(() => c.kill('SIGKILL'));
    });
    assert.equal(stalled.signal, 'SIGKILL', 'the upload was cut while in progress');
    const up = await runMedvAsync(['image', 'upload', join(packed, 'm_1.ckm'), join(packed, 'm_1.ckm.index'), '--server', srv.url, '--token-file', srv.adminTokenFile, '--state-dir', join(dir.path, 'state2')]);
    assert.equal(up.code, 0, up.stderr);
    const seen = modes(root);
    assert.ok([...seen.keys()].some((p) => /^\.uploads\/[0-9a-f]{32}\.json$/.test(p)), 'an unfinished upload is there');
    const expect: Record<string, number> = {
      images: 0o755, '.uploads': 0o700, 'images/m_1.ckm': 0o644, 'images/m_1.ckm.index': 0o644,
      'admin.token': 0o600, 'server.key': 0o600, 'medv.db': 0o600,
    };
    for (const [p, m] of Object.entries(expect)) assert.equal(seen.get(p)?.toString(8), m.toString(8), p);
    assert.equal((lstatSync(root).mode & 0o777).toString(8), '755', 'the root');
    for (const [p, m] of seen) {
      assert.equal(m & 0o022, 0, `${p} is writable by group or others (${m.toString(8)})`);
      if (p.startsWith('.uploads/') || p.startsWith('medv.db') || p.endsWith('.token') || p.endsWith('.key')) assert.equal(m & 0o077, 0, `${p} is reachable by group or others (${m.toString(8)})`);
    }
    console.log(`      ${[...seen].map(([p, m]) => `${p} ${m.toString(8)}`).join(', ')}`);
  });

  it('a root, images/ or .uploads/ that others may write into is refused, with the chmod that fixes it', async () => {
    for (const sub of ['', 'images', '.uploads']) {
      const root = join(dir.path, `open-${sub || 'root'}`);
      mkdirSync(join(root, sub), { recursive: true });
      chmodSync(join(root, sub), 0o777);
      const r = runMedv(['serve', '--root', root, '--port', '0']);
      assert.equal(r.code, 4, `${sub}: ${r.stderr}`);
      assert.match(r.stderr, sub === '.uploads' ? /is accessible to group or others \(mode 0777\); chmod 700 it.*\[EUNSAFE\]\n$/ : /can be written by group or others \(mode 0777\); chmod 755 it.*\[EUNSAFE\]\n$/);
      assert.equal(r.stderr.split('\n').length, 2, 'one line');
    }
  });
});

/**
 * The client's host key is bound to the machine and the user: kept wrapped in the client root
 * under a wrap key outside it ($XDG_CONFIG_HOME/medv/host-wrap.key), upgraded in place from an
 * earlier medv's raw key, and a copied root opens under no other account (through the real CLI).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { runMedv, tempDir } from '../helpers/cli.js';
import { clientHostKey, openClientRoot, readSealed, writeSealed } from '../../src/repo/index.js';
import { DataKey, createHostKey, isWrappedHostKey, loadHostKey, readKeyFile, unwrapHostKey, wrapHostKey, writeKeyFileAt } from '../../src/crypto/index.js';
import { secureAlloc, secureFree } from '../../src/crypto/secure.js';
import { MedvError } from '../../src/core/errors.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
const bound = (e: unknown) => code('EBADKEY')(e) && (e as MedvError).data.reason === 'bound' && /bound to another machine or user/.test((e as Error).message);

/** Run `f` with XDG_CONFIG_HOME set to `dir` (the wrap key's home), restored after. */
async function withConfig<T>(dir: string, f: () => Promise<T>): Promise<T> {
  const saved = process.env.XDG_CONFIG_HOME;
  process.env.XDG_CONFIG_HOME = dir;
  try { return await f(); } finally {
    if (saved === undefined) delete process.env.XDG_CONFIG_HOME; else process.env.XDG_CONFIG_HOME = saved;
  }
}

describe('repo: the host key, bound to the machine and the user', function () {
  this.timeout(60_000);
  const t = tempDir('repo-hostkey');
  const p = (...x: string[]) => join(t.path, ...x);
  after(() => t.cleanup());

  it('a new client root keeps its host key only wrapped; the wrap key is 0600 outside the root', async () => {
    await withConfig(p('home-a'), async () => {
      const c = openClientRoot(p('root-new'));
      const kek = await clientHostKey(c);
      assert.equal(kek.wrapKeyFile, p('home-a', 'medv', 'host-wrap.key'));
      const file = fs.readFileSync(kek.keyFile);
      assert.ok(isWrappedHostKey(file), 'host.key is wrapped');
      assert.equal(fs.statSync(kek.keyFile).mode & 0o777, 0o600);
      assert.equal(fs.statSync(kek.wrapKeyFile!).mode & 0o777, 0o600);
      assert.equal(fs.statSync(kek.wrapKeyFile!).size, 32);
      const key = await loadHostKey(kek);
      try {
        assert.equal(key.length, 32);
        assert.equal(file.indexOf(Buffer.from(key)), -1, 'the key is not in the file in the clear');
      } finally {
        secureFree(key);
      }
      await writeSealed(c, 'data/Local/Config/probe.dat', 'probe', { ok: 1 });
      assert.deepEqual(await readSealed(c, 'data/Local/Config/probe.dat', 'probe'), { ok: 1 });
    });
  });

  it('an earlier medv\'s raw host key is wrapped in place on first use; what it wrapped before still opens', async () => {
    const c = openClientRoot(p('root-old'));
    const keyFile = join(c.local, 'host.key');
    await createHostKey(keyFile); // the raw 32 bytes an earlier medv wrote
    const enc = join(c.root, 'images', 'disk.enc');
    const dk = DataKey.generate();
    await writeKeyFileAt(enc, dk, { kind: 'hostkey', keyFile });
    await withConfig(p('home-a'), async () => {
      const r = runMedv(['logs', '--client-root', c.root], { XDG_CONFIG_HOME: p('home-a') });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(isWrappedHostKey(fs.readFileSync(keyFile)), 'host.key was wrapped in place');
      const kek = await clientHostKey(c);
      const back = await readKeyFile(enc, kek);
      try { assert.ok(back.keyId.equals(dk.keyId) && back.key.equals(dk.key)); } finally { back.dispose(); dk.dispose(); }
    });
    // and from now on the root opens only with that wrap key
    const other = runMedv(['logs', '--client-root', c.root], { XDG_CONFIG_HOME: p('home-b') });
    assert.equal(other.code, 4, other.stderr);
    assert.match(other.stderr, /bound to another machine or user .*host-wrap\.key does not exist here.*\[EBADKEY\]/);
  });

  it('a client root copied to another account (another wrap key) does not open; the original keeps working', async () => {
    const src = p('root-new');
    const copy = p('root-copied');
    assert.equal(spawnSync('cp', ['-a', src, copy]).status, 0);
    // another account: its own wrap key, made by its own medv
    await withConfig(p('home-thief'), async () => { await clientHostKey(openClientRoot(p('root-thief'))); });
    for (const home of ['home-thief', 'home-nobody']) {
      const r = runMedv(['logs', '--client-root', copy], { XDG_CONFIG_HOME: p(home) });
      assert.equal(r.code, 4, `${home}: ${r.stderr}`);
      assert.match(r.stderr, /^medv: the host key .* is bound to another machine or user/);
      assert.ok(!fs.existsSync(p('home-nobody', 'medv', 'host-wrap.key')), 'no wrap key is made for a root bound elsewhere');
    }
    await withConfig(p('home-thief'), async () => {
      await assert.rejects(readSealed(openClientRoot(copy), 'data/Local/Config/probe.dat', 'probe'), bound);
    });
    // the same user on the same machine: both the original and its copy open
    assert.equal(runMedv(['logs', '--client-root', src], { XDG_CONFIG_HOME: p('home-a') }).code, 0);
    assert.equal(runMedv(['logs', '--client-root', copy], { XDG_CONFIG_HOME: p('home-a') }).code, 0);
  });

  it('a wrap key inside the client root is refused (the root would be the whole secret again)', async () => {
    const c = openClientRoot(p('root-in'));
    await withConfig(join(c.root, 'data'), async () => {
      await assert.rejects(clientHostKey(c), code('EUNSAFE'));
    });
  });

  it('a wrap key in a folder of the root whose name starts with two dots (root/..cfg) is refused too, through the CLI', () => {
    const root = p('root-dots');
    const r = runMedv(['logs', '--client-root', root], { XDG_CONFIG_HOME: join(root, '..cfg') });
    assert.notEqual(r.code, 0, 'medv logs must refuse');
    assert.match(r.stderr, /would be inside the client root .*\[EUNSAFE\]/);
    assert.equal(fs.existsSync(join(root, '..cfg', 'medv', 'host-wrap.key')), false, 'no wrap key written inside the root');
  });

  it('a wrap key whose XDG_CONFIG_HOME is a link into the root (its medv folder not made yet) is refused before any key is written', () => {
    const root = p('root-linked');
    fs.mkdirSync(join(root, 'x'), { recursive: true, mode: 0o700 });
    fs.symlinkSync(join(root, 'x'), p('cfg-link'));
    const r = runMedv(['logs', '--client-root', root], { XDG_CONFIG_HOME: p('cfg-link') });
    assert.notEqual(r.code, 0, 'medv logs must refuse');
    assert.match(r.stderr, /would be inside the client root .*\[EUNSAFE\]/);
    assert.equal(fs.existsSync(join(root, 'x', 'medv', 'host-wrap.key')), false, 'no wrap key written inside the root');
    assert.equal(fs.existsSync(join(root, 'data', 'Local', 'host.key')), false, 'no host key made');
  });

  it('wrapping: another wrap key, a changed header or payload is EBADKEY "bound"; through systemd-creds too (root only, its host secret)', async function () {
    const hk = secureAlloc(32);
    const wk = secureAlloc(32);
    const other = secureAlloc(32);
    try {
      for (const b of [hk, wk, other]) b.set(Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256))));
      fs.writeFileSync(p('wk'), wk, { mode: 0o600 });
      fs.writeFileSync(p('other'), other, { mode: 0o600 });
      const w = wrapHostKey(hk, wk);
      const out = unwrapHostKey(w, 'host.key', p('wk'));
      assert.ok(out.equals(hk));
      secureFree(out);
      assert.throws(() => unwrapHostKey(w, 'host.key', p('other')), bound);
      assert.throws(() => unwrapHostKey(w, 'host.key', p('missing')), bound);
      for (const at of [3, 20, w.length - 1]) {
        const bad = Buffer.from(w);
        bad[at] ^= 1;
        assert.throws(() => unwrapHostKey(bad, 'host.key', p('wk')), (e: unknown) => e instanceof MedvError, `byte ${at}`);
      }
      if (process.getuid?.() !== 0 || spawnSync('systemd-creds', ['--version']).status !== 0) this.skip();
      const sealed = wrapHostKey(hk, wk, 'host');
      assert.ok(sealed.length > w.length);
      const back = unwrapHostKey(sealed, p('sealed.key'), p('wk'));
      assert.ok(back.equals(hk));
      secureFree(back);
      const torn = Buffer.from(sealed);
      torn[torn.length - 10] ^= 1;
      assert.throws(() => unwrapHostKey(torn, p('torn.key'), p('wk')), bound);
    } finally {
      for (const b of [hk, wk, other]) secureFree(b);
    }
  });
});

import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { run, runMedv, sha256File, tempDir } from '../helpers/cli.js';

function assertOneLineError(r: { code: number | null; stderr: string }, re: RegExp): void {
  assert.notEqual(r.code, 0, 'exit status is non-zero');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line of error, got: ${r.stderr}`);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

describe('cli: medv disk', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('cli'); });
  afterEach(() => dir.cleanup());

  it('create, info --json and check a dynamic VHD', () => {
    const p = join(dir.path, 'a.vhd');
    assert.equal(runMedv(['disk', 'create', p, '--size', '64M']).code, 0);
    const info = JSON.parse(runMedv(['disk', 'info', p, '--json']).stdout);
    assert.equal(info.type, 'dynamic');
    assert.equal(info.format, 'vhd');
    assert.equal(info.encrypted, false);
    assert.equal(info.creator.application, 'medv');
    assert.ok(info.virtualSize >= 64 * 1024 * 1024);
    const qemu = JSON.parse(run('qemu-img', ['info', '--output=json', p]));
    assert.equal(qemu['virtual-size'], info.virtualSize, 'qemu-img sees the same virtual size');
    const check = runMedv(['disk', 'check', p]);
    assert.equal(check.code, 0, check.stderr);
  });

  it('create --encrypt, convert round trip raw -> evhd -> vhd -> raw', () => {
    const raw = join(dir.path, 'data.raw');
    const data = randomBytes(3 * 1024 * 1024 + 4096);
    writeFileSync(raw, data);
    const e = join(dir.path, 'data.evhd');
    let r = runMedv(['disk', 'convert', raw, e]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(dir.path, 'data.enc')));
    assert.equal(JSON.parse(runMedv(['disk', 'info', e, '--json']).stdout).encrypted, true);
    const v = join(dir.path, 'data.vhd');
    r = runMedv(['disk', 'convert', e, v]);
    assert.equal(r.code, 0, r.stderr);
    const back = join(dir.path, 'back.raw');
    assert.equal(runMedv(['disk', 'convert', v, back, '--to', 'raw']).code, 0);
    assert.ok(readFileSync(back).subarray(0, data.length).equals(data));
    const created = join(dir.path, 'new.evhd');
    assert.equal(runMedv(['disk', 'create', created, '--size', '8M', '--type', 'fixed', '--encrypt']).code, 0);
    assert.equal(runMedv(['disk', 'check', created]).code, 0);
  });

  it('a wrong passphrase gives a one-line error and changes no file', () => {
    const e = join(dir.path, 'w.evhd');
    assert.equal(runMedv(['disk', 'create', e, '--size', '8M']).code, 0);
    const before = [sha256File(e), sha256File(join(dir.path, 'w.enc'))];
    for (const args of [['disk', 'info', e], ['disk', 'check', e], ['disk', 'serve', e, '--socket', join(dir.path, 's')],
      ['disk', 'convert', e, join(dir.path, 'out.raw')], ['disk', 'undo', 'create', join(dir.path, 'u.evhd'), '--parent', e]]) {
      const r = runMedv(args, { MEDV_PASSPHRASE: 'wrong passphrase' });
      assertOneLineError(r, /passphrase|key/i);
    }
    assert.deepEqual([sha256File(e), sha256File(join(dir.path, 'w.enc'))], before);
    assert.equal(existsSync(join(dir.path, 'out.raw')), false, 'no partial output left behind');
    assert.equal(existsSync(join(dir.path, 'u.evhd')), false);
  });

  it('bad input gives a one-line typed error, never a stack trace', () => {
    const junk = join(dir.path, 'junk.vhd');
    writeFileSync(junk, Buffer.concat([randomBytes(4096), Buffer.from('conectix'), randomBytes(504)]));
    assertOneLineError(runMedv(['disk', 'info', junk]), /medv: /);
    const check = runMedv(['disk', 'check', junk]);
    assert.equal(check.code, 8, 'check reports damage with exit status 8');
    assert.match(check.stdout, /error: .*checksum/i);
    assert.doesNotMatch(check.stdout + check.stderr, /\n\s+at /);
    assertOneLineError(runMedv(['disk', 'create', join(dir.path, 'x.vhd'), '--size', 'ten']), /invalid size/);
    assertOneLineError(runMedv(['disk', 'info', join(dir.path, 'missing.vhd')]), /no such/);
    assertOneLineError(runMedv(['disk', 'create', join(dir.path, 'p.evhd'), '--size', '1M'], { MEDV_PASSPHRASE: undefined }), /MEDV_PASSPHRASE/);
    const existing = join(dir.path, 'e.vhd');
    assert.equal(runMedv(['disk', 'create', existing, '--size', '1M']).code, 0);
    const h = sha256File(existing);
    assertOneLineError(runMedv(['disk', 'create', existing, '--size', '1M']), /exists/);
    assert.equal(sha256File(existing), h);
  });

  it('a Virtual PC undo disk (.vud) is a VHD by its name: no guess, no warning', () => {
    const base = join(dir.path, 'base.vhd');
    assert.equal(runMedv(['disk', 'create', base, '--size', '16M']).code, 0);
    const vud = join(dir.path, 'base.vud');
    assert.equal(runMedv(['disk', 'undo', 'create', vud, '--parent', base]).code, 0);
    const r = runMedv(['disk', 'info', vud, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'the format was not guessed');
    const info = JSON.parse(r.stdout);
    assert.equal(info.format, 'vhd');
    assert.equal(info.type, 'differencing');
  });

  it('a FIFO is refused at once, whatever its name says (never an open that waits for a writer)', () => {
    const fifo = join(dir.path, 'pipe.img');
    run('mkfifo', [fifo]);
    for (const args of [['disk', 'info', fifo], ['disk', 'check', fifo], ['disk', 'convert', fifo, join(dir.path, 'out.vhd')]]) {
      const r = runMedv(args, {}, { timeoutMs: 60_000 });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.code} ${r.stderr}`);
      assertOneLineError(r, /not a regular file or block device/);
    }
    assert.equal(existsSync(join(dir.path, 'out.vhd')), false);
  });

  it('--help teaches the commands', () => {
    const r = runMedv(['disk', '--help']);
    assert.equal(r.code, 0);
    for (const c of ['create', 'info', 'check', 'convert', 'undo', 'serve']) assert.match(r.stdout, new RegExp(c));
  });
});

/**
 * Key material on the host as a user handles it: a passphrase file that group or others can
 * access is used with one warning line; a host key file like that is refused (as ssh refuses a
 * private key), with one error line and nothing created.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMedv, tempDir } from '../helpers/cli.js';

describe('cli: key file permissions', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('keyperm'); });
  afterEach(() => dir.cleanup());

  it('a passphrase file open to group/other works, with exactly one warning line; a 0600 one is silent', () => {
    const pf = join(dir.path, 'pass');
    writeFileSync(pf, 'a passphrase from a file\n', { mode: 0o600 });
    chmodSync(pf, 0o600);
    const env = { MEDV_PASSPHRASE: undefined };
    let r = runMedv(['disk', 'create', join(dir.path, 'a.evhd'), '--size', '8M', '--passphrase-file', pf], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    for (const mode of [0o640, 0o604, 0o660]) {
      chmodSync(pf, mode);
      r = runMedv(['disk', 'info', join(dir.path, 'a.evhd'), '--passphrase-file', pf], env);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], new RegExp(`^medv: warning: passphrase file permissions ${mode.toString(8)} are too open: it must not be accessible by group or others \\(chmod 600 .*pass\\)$`));
    }
  });

  it('a host key file readable or writable by group/other is refused with one line [EINSECURE] (exit 4)', () => {
    const hk = join(dir.path, 'host.key');
    writeFileSync(hk, randomBytes(32), { mode: 0o600 });
    chmodSync(hk, 0o600);
    const env = { MEDV_PASSPHRASE: undefined };
    const disk = join(dir.path, 'h.evhd');
    let r = runMedv(['disk', 'create', disk, '--size', '8M', '--host-key', hk], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(runMedv(['disk', 'check', disk, '--host-key', hk], env).code, 0);
    for (const mode of [0o644, 0o640, 0o604, 0o620]) {
      chmodSync(hk, mode);
      for (const args of [['disk', 'info', disk], ['disk', 'create', join(dir.path, 'n.evhd'), '--size', '8M']]) {
        r = runMedv([...args, '--host-key', hk], env);
        assert.equal(r.code, 4, `${mode.toString(8)} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0], /host key file permissions \d{3} are too open.*\[EINSECURE\]/);
      }
      assert.equal(existsSync(join(dir.path, 'n.evhd')), false);
      assert.equal(existsSync(join(dir.path, 'n.enc')), false);
    }
    assert.deepEqual(readdirSync(dir.path).sort(), ['h.enc', 'h.evhd', 'host.key'], 'no temporaries left');
    chmodSync(hk, 0o400);
    assert.equal(runMedv(['disk', 'info', disk, '--host-key', hk], env).code, 0);
  });
});

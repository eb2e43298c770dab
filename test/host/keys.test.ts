/**
 * Keys in the host service (`medv host unlock|lock`, src/host/service/keys.ts), through the real
 * CLI, service and QEMU: while unlocked, an encrypted VM starts, suspends and resumes with no
 * passphrase given, and the resume needs no new Argon2id (the saved state's key file is wrapped
 * under the KEK derived at unlock); locked, it is refused. And the crypto rule underneath: a key
 * file opens with a KEK derived already, without the passphrase being run through Argon2id.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { TEST_PASSPHRASE, runMedv, waitForFileText } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';
import { DataKey, unwrapDataKey, wrapDataKey } from '../../src/crypto/index.js';
import { passphraseKek } from '../../src/crypto/kek.js';
import { secureAlloc } from '../../src/crypto/secure.js';

describe('crypto: KEKs derived already (the host service\'s key cache)', () => {
  it('a key file wrapped under a derived KEK opens with it, whatever the passphrase text, and with the passphrase alone', async () => {
    const salt = Buffer.alloc(16, 7);
    const [opslimit, memlimit] = [1, 8192];
    const key = await passphraseKek(TEST_PASSPHRASE, salt, opslimit, memlimit);
    const derived = { salt, opslimit, memlimit, key };
    const dk = DataKey.generate();
    const bytes = await wrapDataKey(dk, { kind: 'passphrase', passphrase: Buffer.from(TEST_PASSPHRASE), wrapWith: derived });
    // The file records the derived KEK's salt and cost, so the passphrase alone opens it too.
    assert.ok(bytes.includes(salt), 'the salt of the derived KEK is in the file');
    const viaPassphrase = await unwrapDataKey(bytes, { kind: 'passphrase', passphrase: TEST_PASSPHRASE });
    assert.ok(viaPassphrase.keyId.equals(dk.keyId));
    // With the derived KEK the passphrase is never used: a wrong one does not matter.
    const wrong = secureAlloc(5);
    wrong.write('wrong');
    const viaCache = await unwrapDataKey(bytes, { kind: 'passphrase', passphrase: wrong, derived: [derived] });
    assert.ok(viaCache.keyId.equals(dk.keyId));
    await assert.rejects(unwrapDataKey(bytes, { kind: 'passphrase', passphrase: wrong }), /EBADKEY|wrong passphrase/);
  });
});

describe('host: medv host unlock and lock (real CLI, real QEMU)', function () {
  this.timeout(180_000);
  const host = vmHost('host-keys');

  it('unlocked: an encrypted VM starts, suspends and resumes with no passphrase, without new Argon2id; locked: refused', async () => {
    const disk = join(host.path, 'k.evhd');
    assert.equal(runMedv(['disk', 'convert', freshGuestImage(host.path), disk], host.env).code, 0);
    const noKey = { ...host.env, MEDV_PASSPHRASE: undefined };
    const unlock = runMedv(['host', 'unlock', '--for', '5m', '--json'], host.env);
    assert.equal(unlock.code, 0, unlock.stderr);
    assert.equal(JSON.parse(unlock.stdout).unlocked, true);
    const derived = () => JSON.parse(runMedv(['host', 'status', '--json'], host.env).stdout).keys.derived;
    assert.equal(derived(), 1, 'Argon2id once, at unlock');
    const started = runMedv(['vm', 'start', disk, '--name', 'k', '--memory', '32', '--json'], noKey);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stderr, '', 'no warning: the VM holds the cached key');
    assert.equal(JSON.parse(started.stdout).key, 'passphrase');
    assert.equal(derived(), 2, 'and once for the disk\'s key file');
    await waitForFileText(host.serialOf('k'), GUEST.serial.ready, 60_000);
    assert.equal(runMedv(['vm', 'suspend', 'k', '--json'], noKey).code, 0);
    const resumed = runMedv(['vm', 'start', disk, '--name', 'k', '--json'], noKey);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(JSON.parse(resumed.stdout).resumed, true);
    assert.equal(derived(), 2, 'the resume needed no new Argon2id: the saved state\'s key is wrapped under the unlock\'s KEK');
    // Never written anywhere: not in the run root, its logs, nor the service's environment.
    for (const f of readdirSync(host.env.MEDV_RUN_DIR, { recursive: true, withFileTypes: true })) {
      if (!f.isFile()) continue;
      assert.ok(!readFileSync(join(f.parentPath ?? f.path, f.name)).includes(TEST_PASSPHRASE), `the passphrase is in ${f.name}`);
    }
    const pid = JSON.parse(runMedv(['host', 'status', '--json'], host.env).stdout).pid;
    assert.ok(!readFileSync(`/proc/${pid}/environ`, 'latin1').includes(TEST_PASSPHRASE), 'not in the service\'s environment');
    assert.equal(runMedv(['vm', 'suspend', 'k'], noKey).code, 0);
    assert.equal(JSON.parse(runMedv(['host', 'lock', '--json'], host.env).stdout).unlocked, false);
    const refused = runMedv(['vm', 'start', disk, '--name', 'k'], noKey);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /passphrase or host key/);
    // With the passphrase given, the saved state (wrapped under the unlock's salt) still opens.
    const withKey = runMedv(['vm', 'start', disk, '--name', 'k', '--json'], host.env);
    assert.equal(withKey.code, 0, withKey.stderr);
    assert.equal(JSON.parse(withKey.stdout).resumed, true);
    host.json(['stop', 'k']);
  });
});

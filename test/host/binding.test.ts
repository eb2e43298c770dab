/**
 * A saved state belongs to its VM, through the real CLI with real QEMU (the nasm guest): two VMs
 * whose disks share a stem never share a saved state; a .vmc naming another VM's .vsv is refused;
 * a suspended VM whose parent disk changed does not resume; `vm discard-state` removes only a
 * complete saved state of that VM under its key, with its own key file (issue 18, items 2, 3, 10).
 * Every refusal deletes nothing.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { runMedv, sha256File, waitForFileText } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';
import { writeVmc } from '../helpers/vmc.js';

describe('host: a saved state is bound to its VM (real CLI, real QEMU)', function () {
  this.timeout(120_000);
  const host = vmHost('host-binding');
  const { vm, json, serialOf } = host;
  const dir = { get path() { return host.path; } };
  /** Start, wait for the guest, suspend: returns where the VM's saved state was written. */
  const suspended = async (target: string, name: string): Promise<string> => {
    json(['start', target, '--name', name, '--memory', '32']);
    await waitForFileText(serialOf(name), GUEST.serial.ready, 60_000);
    const s = json(['suspend', name]);
    assert.equal(s.state, 'suspended');
    assert.ok(existsSync(s.savedState), `the saved state is at ${s.savedState}`);
    return s.savedState;
  };
  const convert = (to: string, img = freshGuestImage(dir.path)) => assert.equal(runMedv(['disk', 'convert', img, to], host.env).code, 0);

  it('x.vhd and x.evhd in one folder are two VMs: the plain one boots afresh and the encrypted one\'s saved state stays, then resumes', async () => {
    const enc = join(dir.path, 'x.evhd');
    const plain = join(dir.path, 'x.vhd');
    convert(enc);
    convert(plain);
    const vsv = await suspended(enc, 'enc');
    const bytes = sha256File(vsv);
    const p = json(['start', plain, '--name', 'plain', '--memory', '32']);
    assert.equal(p.resumed, false, 'the plain disk\'s VM did not resume the encrypted VM\'s RAM');
    await waitForFileText(serialOf('plain'), /MEDV-GUEST boot=1\r?\n/, 60_000);
    json(['stop', 'plain']);
    assert.ok(existsSync(vsv), 'the encrypted VM\'s saved state is still there');
    assert.equal(sha256File(vsv), bytes, 'the encrypted VM\'s saved state is untouched');
    assert.equal(json(['start', enc, '--name', 'enc']).resumed, true);
    json(['stop', 'enc']);
  });

  it('a .vmc naming another VM\'s .vsv is refused before anything runs; that VM then resumes', async () => {
    const a = join(dir.path, 'a.vhd');
    convert(a);
    const vsv = await suspended(a, 'a');
    const before = { vsv: sha256File(vsv), key: sha256File(`${vsv}.enc`), disk: sha256File(a) };
    convert(join(dir.path, 'b.vhd'));
    writeVmc(join(dir.path, 'b.vmc'), { drives: [{ path: 'b.vhd' }], savedState: `.\\${basename(vsv)}` });
    const r = vm(['start', join(dir.path, 'b.vmc')]);
    assert.equal(r.code, 11, r.stderr);
    assert.match(r.stderr, /^medv: saved state .* does not belong to this VM .*\[ESAVEDSTATE\]$/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual({ vsv: sha256File(vsv), key: sha256File(`${vsv}.enc`), disk: sha256File(a) }, before, 'nothing was deleted or written');
    // Nor does discard-state of that .vmc remove the other VM's saved state.
    const d = JSON.parse(vm(['discard-state', join(dir.path, 'b.vmc'), '--json']).stdout);
    assert.deepEqual(d.removed, []);
    assert.match(d.kept[0].reason, /does not belong to this VM/);
    assert.ok(existsSync(vsv) && existsSync(`${vsv}.enc`));
    assert.equal(json(['start', a, '--name', 'a']).resumed, true);
    json(['stop', 'a']);
  });

  it('a suspended VM whose parent (or grandparent) disk changed is not resumed, and its saved state is kept', async () => {
    const base = join(dir.path, 'base.vhd');
    const mid = join(dir.path, 'mid.vhd');
    const top = join(dir.path, 'top.vhd');
    convert(base);
    assert.equal(runMedv(['disk', 'undo', 'create', mid, '--parent', base], host.env).code, 0);
    assert.equal(runMedv(['disk', 'undo', 'create', top, '--parent', mid], host.env).code, 0);
    const vsv = await suspended(top, 'chain');
    const kept = sha256File(vsv);
    // Another program writes into the grandparent while the VM is suspended (a byte of its data, not its metadata).
    const fd = openSync(base, 'r+');
    writeSync(fd, Buffer.from([0x5a]), 0, 1, 4096);
    closeSync(fd);
    const r = vm(['start', top, '--name', 'chain']);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /^medv: .*base\.vhd changed since the VM was suspended.*\[ECORRUPT\]$/m);
    assert.equal(sha256File(vsv), kept);
    assert.ok(existsSync(`${vsv}.enc`));
    assert.equal(JSON.parse(vm(['status', 'chain', '--json']).stdout).state, 'failed');
  });

  it('vm discard-state removes only an authenticated saved state with its own key file: a saved_state named .\\work beside work.evhd leaves work.enc alone', async () => {
    const disk = join(dir.path, 'work.evhd');
    convert(disk);
    const key = join(dir.path, 'work.enc');
    const keyBytes = sha256File(key);
    // A file that looks like a medv saved state (its magic, even its header) but is not one under this key.
    const fake = join(dir.path, 'work');
    const header = Buffer.alloc(4096);
    Buffer.from('MEDVVSV\0', 'latin1').copy(header);
    header.writeUInt16LE(2, 8);
    readFileSync(key).subarray(16, 32).copy(header, 12); // the disk key file's key id (offset 16 of a .enc)
    header.writeUInt32LE(32, 52);
    writeFileSync(fake, header);
    const vmc = join(dir.path, 'work.vmc');
    writeVmc(vmc, { drives: [{ path: 'work.evhd' }], savedState: '.\\work' });
    const r = vm(['discard-state', vmc, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.removed, []);
    assert.equal(out.kept.length, 1);
    assert.equal(out.kept[0].path, fake);
    assert.ok(existsSync(key), 'the disk\'s only key file is still there');
    assert.equal(sha256File(key), keyBytes);
    assert.ok(existsSync(fake));
    // The disk still opens with its key.
    assert.equal(runMedv(['disk', 'check', disk], host.env).code, 0);
    // A real saved state of that VM is removed, with its key file and nothing else.
    writeFileSync(fake, '');
    const name = 'work';
    writeVmc(vmc, { drives: [{ path: 'work.evhd' }] });
    const vsv = await suspended(vmc, name);
    assert.equal(vsv, join(dir.path, 'work.vsv'));
    assert.ok(statSync(vsv).size > 0);
    const done = JSON.parse(vm(['discard-state', vmc, '--json']).stdout);
    assert.deepEqual(done.removed, [vsv, `${vsv}.enc`]);
    assert.deepEqual(done.cleared, [disk]);
    assert.ok(existsSync(key) && existsSync(fake));
  });
});

/**
 * The index of an update: a client one version behind rebuilds the changed run records from the
 * signed index delta (`lab_2.ckm.index-from-1`) instead of downloading them; a delta that cannot be
 * trusted or used (another signer, damaged, truncated, for other versions, out-of-range fields, an
 * edit that does not rebuild the signed record) is refused with a typed reason on stderr and the
 * records are fetched instead: the disk is right either way, judged by `qemu-img compare`, and the
 * bytes by nginx's access log.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type KekSource } from '../../src/crypto/index.js';
import { DELTA_HEADER_BYTES, DELTA_SIGNED_BYTES, deltaFileName } from '../../src/formats/ckm/index.js';
import { openImageKeys, signSodium } from '../../src/pack/keys.js';
import { tempDir } from '../helpers/cli.js';
import { type Nginx, startNginx } from '../helpers/nginx.js';
import { forgeDelta } from '../pack/helpers.js';
import { type Repo, makeRepo, medvAsync } from './fixture.js';

describe('transfer: the index delta of an update', function () {
  this.timeout(180_000);
  const t = tempDir('fetch-delta');
  let r: Repo;
  let nginx: Nginx;
  const cases = () => join(t.path, 'cases');
  const delta = deltaFileName('lab', 1, 2);
  let n = 0;
  let sign: (m: Buffer) => Buffer;
  let signer: Buffer;
  let dispose: () => void;

  /** A copy of the repository in cases/NAME, with `edit` applied to its delta. */
  const makeCase = async (name: string, edit: (deltaPath: string, indexPath: string) => void): Promise<string> => {
    const dir = join(cases(), name);
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(r.repo)) if (f.startsWith('lab_')) copyFileSync(join(r.repo, f), join(dir, f));
    edit(join(dir, delta), join(dir, 'lab_2.ckm.index'));
    return nginx.url(`${name}/lab_2.ckm.index`);
  };

  /** `medv image fetch` of v2 with v1 as the seed, in a folder of its own: the result, stderr and the bytes nginx sent for the index (its delta included). */
  const update = async (url: string) => {
    const dir = join(t.path, `upd-${n++}`);
    mkdirSync(dir);
    const out = join(dir, 'v2.evhd');
    nginx.resetLog();
    const res = await medvAsync(r, ['image', 'fetch', url, '--out', out, '--seed', join(t.path, 'v1.evhd'), '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.doesNotMatch(res.stderr, /\n\s+at /);
    assert.ok(r.sameAs(out, r.v2), 'the updated disk differs from v2');
    return { j: JSON.parse(res.stdout), stderr: res.stderr, indexBytes: nginx.bytes((u) => u.includes('.ckm.index')), deltaRequests: nginx.log().filter((l) => l.uri.endsWith(delta)).length };
  };

  before(async () => {
    r = makeRepo(t.path, 48, 0.5, 71);
    assert.ok(existsSync(join(r.repo, delta)), 'pack wrote no index delta');
    mkdirSync(cases());
    nginx = await startNginx(join(t.path, 'nginx'), cases());
    mkdirSync(join(cases(), 'real'));
    for (const f of readdirSync(r.repo)) if (f.startsWith('lab_')) copyFileSync(join(r.repo, f), join(cases(), 'real', f));
    const v1 = await medvAsync(r, ['image', 'fetch', nginx.url('real/lab_1.ckm.index'), '--out', join(t.path, 'v1.evhd'), '--keys', r.keys]);
    assert.equal(v1.code, 0, v1.stderr);
    const kek = (): KekSource => ({ kind: 'hostkey', keyFile: r.hostKey });
    const keys = await openImageKeys(r.keys, 'lab', kek, { sign: true });
    sign = (m) => keys.sign(m);
    signer = keys.signPublic;
    dispose = () => keys.dispose();
  });
  after(async () => {
    dispose?.();
    await nginx?.stop();
    await t.cleanup();
  });

  let withDelta = 0;

  it('one version behind: the changed run records are rebuilt from the signed delta, not downloaded', async () => {
    const u = await update(nginx.url('real/lab_2.ckm.index'));
    const indexSize = statSync(join(r.repo, 'lab_2.ckm.index')).size;
    console.log(`      index ${indexSize} B, delta ${statSync(join(r.repo, delta)).size} B; fetched for the index: ${u.indexBytes} B; records: ${u.j.indexRecordsFromDelta} rebuilt, ${u.j.indexRecordsFetched} fetched, ${u.j.indexRecordsReused} reused`);
    assert.match(u.j.indexDelta, /^used: lab_2\.ckm\.index-from-1$/);
    assert.ok(u.j.indexRecordsFromDelta > 10, JSON.stringify(u.j));
    assert.ok(u.indexBytes < 0.25 * indexSize, `${u.indexBytes} bytes for an index of ${indexSize}`);
    withDelta = u.indexBytes;
  });

  it('a repository without the delta: the records are fetched, without a warning', async () => {
    const u = await update(await makeCase('none', (d) => unlinkSync(d)));
    assert.match(u.j.indexDelta, /^none: the repository has no lab_2\.ckm\.index-from-1$/);
    assert.equal(u.j.indexRecordsFromDelta, 0);
    assert.doesNotMatch(u.stderr, /warning/);
    assert.ok(u.indexBytes > 3 * withDelta, `${u.indexBytes} bytes without the delta, ${withDelta} with it`);
  });

  /** The update with a damaged delta succeeds, says why the delta was not used, and fetches the records instead. */
  const refused = (name: string, reason: RegExp, errorCode: string, edit: (deltaPath: string, indexPath: string) => void, rebuiltBefore = false) => async () => {
    const u = await update(await makeCase(name, edit));
    assert.match(u.stderr, new RegExp(`^medv: warning: index delta not used: .*${reason.source}.* \\[${errorCode}\\]; fetching the run records instead\\n$`));
    assert.match(u.j.indexDelta, new RegExp(`^not used: .*\\[${errorCode}\\]$`));
    if (!rebuiltBefore) assert.equal(u.j.indexRecordsFromDelta, 0);
    assert.ok(u.j.indexRecordsFetched >= 1);
  };

  it('signed by a key that is not trusted: ESIGNATURE, the records are fetched', refused('untrusted', /not a trusted key/, 'ESIGNATURE', (d, i) => {
    const pk = Buffer.alloc(32);
    const sk = Buffer.alloc(64);
    signSodium.crypto_sign_keypair(pk, sk);
    forgeDelta(d, i, (m) => { const s = Buffer.alloc(64); signSodium.crypto_sign_detached(s, m, sk); return s; }, pk, () => undefined);
  }));

  it('a signature that does not verify: ESIGNATURE', refused('badsig', /signature does not verify/, 'ESIGNATURE', (d) => {
    const b = readFileSync(d);
    b[DELTA_SIGNED_BYTES + 5] ^= 1;
    writeFileSync(d, b);
  }));

  it('a flipped byte in the body: ECHECKSUM (the signed body hash)', refused('body', /body does not match the hash its signed header gives/, 'ECHECKSUM', (d) => {
    const b = readFileSync(d);
    b[DELTA_HEADER_BYTES + 40] ^= 0x10;
    writeFileSync(d, b);
  }));

  it('truncated: ETRUNCATED', refused('trunc', /is \d+ bytes, its header says \d+/, 'ETRUNCATED', (d) => truncateSync(d, statSync(d).size - 100)));

  it('the delta of another pair of versions (another base root hash, signed): ECORRUPT', refused('other', /is not the delta between these two indexes/, 'ECORRUPT', (d, i) => {
    forgeDelta(d, i, sign, signer, (h) => { h.fromRoot = Buffer.alloc(32, 7); });
  }));

  it('an out-of-range field, signed: EFORMAT', refused('range', /changes \d+ of \d+ runs/, 'EFORMAT', (d) => {
    const b = readFileSync(d);
    b.writeUInt32LE(b.readUInt32LE(132) + 1, 136); // more changed runs than runs
    sign(b.subarray(0, DELTA_SIGNED_BYTES)).copy(b, DELTA_SIGNED_BYTES);
    writeFileSync(d, b);
  }));

  it('a block placed past its pack, signed: ECORRUPT', refused('place', /past the end of pack 2/, 'ECORRUPT', (d, i) => {
    forgeDelta(d, i, sign, signer, (_h, runs) => {
      const e = runs[0].edits.find((x) => x.entry)!.entry!;
      e.place = { ...e.place, offset: 1 << 30 };
    });
  }));

  it('an edit that does not rebuild the signed record (another id, signed): ECHECKSUM, and the record is fetched', refused('edit', /run \d+ rebuilt from the delta does not match its hash in the index/, 'ECHECKSUM', (d, i) => {
    forgeDelta(d, i, sign, signer, (_h, runs) => {
      const e = runs[runs.length - 1].edits.find((x) => x.entry)!.entry!;
      e.id = Buffer.alloc(16, 0xee);
    });
  }, true));
});

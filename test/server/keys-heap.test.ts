/**
 * Image keys never become JavaScript strings in the server (issue 18 item 17). The server runs in
 * this process (the real module, on a real socket, real SQLite); the keys are published by a
 * separate `medv admin image-keys publish` process and released by grants over HTTP. Two checks:
 * - a heap snapshot of this process (v8.getHeapSnapshot) holds no base64 or hex text of the keys
 *   (the needles are built byte by byte, api/bytes.ts, so the test itself makes no such string);
 * - no string made from bytes while the server publishes and grants holds that text. A snapshot
 *   collects garbage first and cannot see a string made and dropped within a request (the old
 *   server parsed the body with JSON.parse: such strings lived until the next GC, and their bytes
 *   until overwritten); this check fails on that server and passes now.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { getHeapSnapshot } from 'node:v8';
import { base64EncodeInto, base64Length, hexEncodeInto } from '../../src/api/bytes.js';
import { generateClientKeyPair } from '../../src/api/keyrelease.js';
import { requestGrant } from '../../src/client/api.js';
import { openImageKeys } from '../../src/pack/index.js';
import { type Serving, serveRepository } from '../../src/server/index.js';
import { runMedvAsync } from './helpers.js';
import { api, password, unique } from './accounts-helpers.js';
import { tempDir } from '../helpers/cli.js';

/** base64, lowercase and uppercase hex of `key`, and of each half, as bytes. */
function needles(key: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (const k of [key, key.subarray(0, 32), key.subarray(32)]) {
    const b64 = Buffer.alloc(base64Length(k.length));
    base64EncodeInto(k, b64);
    const hex = Buffer.alloc(2 * k.length);
    hexEncodeInto(k, hex);
    const upper = Buffer.from(hex.map((c) => (c >= 0x61 ? c - 0x20 : c)));
    out.push(b64, hex, upper);
  }
  return out;
}

/** Which needles a heap snapshot of this process holds (searched as bytes, chunk by chunk). */
async function inHeapSnapshot(find: Buffer[]): Promise<number[]> {
  const longest = Math.max(...find.map((n) => n.length));
  const hits = new Set<number>();
  let tail = Buffer.alloc(0);
  for await (const chunk of getHeapSnapshot()) {
    const data = Buffer.concat([tail, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array)]);
    find.forEach((n, i) => { if (data.includes(n)) hits.add(i); });
    tail = data.subarray(Math.max(0, data.length - longest));
  }
  return [...hits];
}

/**
 * Record every string the process makes from bytes (Buffer#toString and the per-encoding slices
 * it calls) that holds one of `texts`, while `f` runs. A heap snapshot collects garbage first, so
 * it cannot see a key string that was made and dropped during a request: this can.
 */
async function stringsMadeDuring(texts: string[], f: () => Promise<void>): Promise<string[]> {
  const proto = Buffer.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const names = ['toString', 'utf8Slice', 'latin1Slice', 'asciiSlice', 'base64Slice', 'base64urlSlice', 'hexSlice', 'ucs2Slice'].filter((n) => typeof proto[n] === 'function');
  const saved = names.map((n) => proto[n]);
  const found: string[] = [];
  names.forEach((n, i) => {
    proto[n] = function (this: Buffer, ...a: unknown[]) {
      const out = saved[i].apply(this, a);
      if (typeof out === 'string' && out.length >= 32) for (const t of texts) if (out.includes(t)) found.push(`${n}: ${t.length} characters of key text`);
      return out;
    };
  });
  try {
    await f();
  } finally {
    names.forEach((n, i) => { proto[n] = saved[i]; });
  }
  return found;
}

/** A console key folder with image `lab` (made here; its key text never made here). */
async function consoleKeys(dir: string): Promise<{ keyDir: string; hostKey: string; find: Buffer[] }> {
  mkdirSync(dir, { recursive: true });
  const hostKey = join(dir, 'console.hostkey');
  writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
  const keyDir = join(dir, 'keys');
  const made = await openImageKeys(keyDir, 'lab', () => ({ kind: 'hostkey' as const, keyFile: hostKey }), { create: true, sign: true });
  const find = [...needles(Buffer.from(made.dataKeys.content.key)), ...needles(Buffer.from(made.dataKeys.repository.key))];
  made.dispose();
  return { keyDir, hostKey, find };
}

/** Publish the keys twice with the real CLI, then three grants of an entitled user. */
async function publishAndGrant(url: string, adminTokenFile: string, keyDir: string, hostKey: string): Promise<void> {
  for (let i = 0; i < 2; i++) {
    const pub = await runMedvAsync(['admin', 'image-keys', 'publish', 'lab', '--keys', keyDir, '--host-key', hostKey, '--server', url, '--token-file', adminTokenFile]);
    assert.equal(pub.code, 0, pub.stderr);
  }
  const admin = readFileSync(adminTokenFile, 'utf8').trim();
  const user = unique('hana');
  const pw = password();
  assert.equal((await api(url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pw } })).status, 201);
  assert.equal((await api(url, 'POST', '/api/admin/policies', { token: admin, body: { name: unique('p'), users: [user], workspaces: [{ name: 'desk', image: 'lab' }] } })).status, 201);
  const token = (await api(url, 'POST', '/api/login', { body: { user, password: pw } })).body.token as string;
  for (let i = 0; i < 3; i++) {
    const pair = generateClientKeyPair();
    try {
      assert.equal((await requestGrant(url, token, { workspace: 'desk', client: `pc-${i}`, clientKey: pair.publicKey })).image, 'lab');
    } finally {
      pair.dispose();
    }
  }
}

describe('server: image keys are never strings in the server\'s heap', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let s: Serving;

  before(async () => {
    dir = tempDir('keys-heap');
    mkdirSync(join(dir.path, 'root'), { recursive: true });
    s = await serveRepository({ root: join(dir.path, 'root'), port: 0 });
  });
  after(async () => {
    await s?.close();
    await dir?.cleanup();
  });

  it('in-process: after publishing and grants, no base64 or hex of the content or repository key is in a heap snapshot', async () => {
    const { keyDir, hostKey, find } = await consoleKeys(join(dir.path, 'a'));
    await publishAndGrant(s.url, s.adminTokenFile, keyDir, hostKey);
    // the check can see a key string: one made here on purpose is found
    const probe = randomBytes(64);
    const probeText = probe.toString('base64');
    const probeNeedle = Buffer.alloc(base64Length(64));
    base64EncodeInto(probe, probeNeedle);
    const hits = await inHeapSnapshot([...find, probeNeedle]);
    assert.ok(hits.includes(find.length), `the snapshot holds a live string (${probeText.length} characters)`);
    assert.deepEqual(hits.filter((i) => i < find.length), [], 'key text in the heap');
  });

  it('in-process: while the keys are published and granted, the server makes no string that holds their base64 or hex', async () => {
    const { keyDir, hostKey, find } = await consoleKeys(join(dir.path, 'b'));
    // (this test's own needle strings are made before the recording starts)
    const texts = find.map((n) => n.toString('latin1'));
    const made = await stringsMadeDuring(texts, () => publishAndGrant(s.url, s.adminTokenFile, keyDir, hostKey));
    assert.deepEqual(made, []);
  });
});

/**
 * Key release against real `medv serve` processes on SQLite and on a real PostgreSQL: the console
 * packs an image and publishes its keys with `medv admin image-keys publish`; an entitled user's
 * grant opens, with the client's own key pair, to the console's key bytes, and the key folder
 * written from it verifies the packed image; everyone else gets the same 403 with no key material;
 * hostile bodies are 400; client reports keep the latest; the database holds the keys only wrapped;
 * the server key file is refused when it is not private.
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isMedvError } from '../../src/core/errors.js';
import type { KekSource } from '../../src/crypto/index.js';
import { openImageKeys as openConsoleKeys, verifyPack } from '../../src/pack/index.js';
import { inspect } from 'node:util';
import { sodium } from '../../src/core/sodium.js';
import { generateClientKeyPair, clientKeyPairFrom, openReleasedKeys, sealImageKeys, MAX_SEALED } from '../../src/api/keyrelease.js';
import { writeKeyFolder } from '../../src/client/keyfolder.js';
import { listClients, requestGrant, sendReports, publishImageKeys } from '../../src/client/api.js';
import { Store } from '../../src/server/store/index.js';
import { runMedv, tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';
import { BACKENDS, api, dbArgs, password, scan, stopPostgres, unique } from './accounts-helpers.js';

after(() => stopPostgres());

/** Every way a key's bytes could show up in text: raw, hex, base64, base64url. */
function encodings(keys: Buffer[]): Buffer[] {
  return keys.flatMap((k) => [k, Buffer.from(k.toString('hex')), Buffer.from(k.toString('hex').toUpperCase()), Buffer.from(k.toString('base64')), Buffer.from(k.toString('base64url')),
    // and any 16-byte window of them (a key split or re-encoded in part)
    Buffer.from(k.subarray(0, 16).toString('hex')), Buffer.from(k.subarray(0, 24).toString('base64').slice(0, 24))]);
}

function containsAny(hay: Buffer | string, needles: Buffer[]): boolean {
  const h = Buffer.isBuffer(hay) ? hay : Buffer.from(hay);
  return needles.some((n) => h.includes(n));
}

interface Console {
  dir: ReturnType<typeof tempDir>;
  keyDir: string;
  hostKey: string;
  kek: () => KekSource;
  packDir: string;
  contentKey: Buffer;
  repositoryKey: Buffer;
  imageId: Buffer;
  signers: Buffer[];
}

/** A key folder and a packed image `lab` v1 made by `medv image pack`. */
function makeConsole(): Console {
  const dir = tempDir('keys-console');
  const hostKey = join(dir.path, 'console.hostkey');
  writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
  const disk = join(dir.path, 'disk.raw');
  writeFileSync(disk, Buffer.concat([randomBytes(256 * 1024), Buffer.alloc(256 * 1024, 7)]));
  truncateSync(disk, 2 * 1048576);
  const keyDir = join(dir.path, 'keys');
  const packDir = join(dir.path, 'packed');
  const r = runMedv(['image', 'pack', disk, '--name', 'lab', '--version', '1', '--out', packDir, '--keys', keyDir, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
  assert.equal(r.code, 0, r.stderr);
  return { dir, keyDir, hostKey, kek: () => ({ kind: 'hostkey', keyFile: hostKey }), packDir, contentKey: Buffer.alloc(0), repositoryKey: Buffer.alloc(0), imageId: Buffer.alloc(0), signers: [] };
}

async function loadConsoleKeys(c: Console): Promise<void> {
  const k = await openConsoleKeys(c.keyDir, 'lab', c.kek);
  try {
    c.contentKey = Buffer.from(k.dataKeys.content.key);
    c.repositoryKey = Buffer.from(k.dataKeys.repository.key);
    c.imageId = Buffer.from(k.imageId);
    c.signers = k.trusted.map((s) => Buffer.from(s));
  } finally {
    k.dispose();
  }
}

for (const backend of BACKENDS) {
  describe(`key release and client reports on ${backend}`, function () {
    this.timeout(120_000);
    let c: Console;
    let root: ReturnType<typeof tempDir>;
    let srv: ServeProcess;
    let admin: string;
    let db: Awaited<ReturnType<typeof dbArgs>>;
    const alice = unique('alice');
    const bob = unique('bob');
    let aliceToken: string;
    let bobToken: string;
    const policyName = unique('fin');
    const ledger = { name: 'ledger', image: 'lab', mode: 'revertible', memory: 1024, devices: { usb: false, clipboard: true }, offlineDays: 3 };
    const nokeys = { name: 'scratch', image: 'other', memory: 512 };

    before(async () => {
      c = makeConsole();
      await loadConsoleKeys(c);
      root = tempDir(`keys-root-${backend}`);
      mkdirSync(join(root.path, 'images'), { recursive: true });
      // the packed image is published in the repository (as medv image upload would)
      for (const f of ['lab_1.ckm', 'lab_1.ckm.index']) writeFileSync(join(root.path, 'images', f), readFileSync(join(c.packDir, f)));
      db = await dbArgs(backend, 'keys');
      srv = await startServe(root.path, db.args);
      admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      for (const [user, groups] of [[alice, ['fin']], [bob, ['lab']]] as const) {
        const pw = password();
        assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pw, groups } })).status, 201);
        const l = await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } });
        if (user === alice) aliceToken = l.body.token; else bobToken = l.body.token;
      }
      const p = await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: { name: policyName, groups: ['fin'], workspaces: [ledger, nokeys] } });
      assert.equal(p.status, 201, p.text);
    });
    after(async () => {
      await srv?.stop();
      await root?.cleanup();
      await c?.dir.cleanup();
    });

    it('the server key is made on first start: DIR/server.key, 32 bytes, 0600', () => {
      const st = lstatSync(join(root.path, 'server.key'));
      assert.ok(st.isFile());
      assert.equal(st.size, 32);
      assert.equal(st.mode & 0o777, 0o600);
    });

    it('medv admin image-keys publish sends the console keys; again, they are replaced', () => {
      const args = ['admin', 'image-keys', 'publish', 'lab', '--keys', c.keyDir, '--host-key', c.hostKey, '--server', srv.url, '--token-file', srv.adminTokenFile, '--json'];
      const r = runMedv(args, { MEDV_PASSPHRASE: '' });
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.deepEqual(out, { image: 'lab', imageId: c.imageId.toString('hex'), signers: c.signers.map((s) => s.toString('hex')), replaced: false });
      assert.ok(!containsAny(r.stdout + r.stderr, encodings([c.contentKey, c.repositoryKey])));
      const again = runMedv(args, { MEDV_PASSPHRASE: '' });
      assert.equal(again.code, 0, again.stderr);
      assert.equal(JSON.parse(again.stdout).replaced, true);
    });

    it('an entitled user\'s grant opens with the client key pair to the console\'s key bytes; the key folder made from it verifies the packed image', async () => {
      const pair = generateClientKeyPair();
      try {
        const g = await requestGrant(srv.url, aliceToken, { workspace: 'ledger', client: 'pc-1.example', clientKey: pair.publicKey });
        assert.equal(g.workspace, 'ledger');
        assert.equal(g.image, 'lab');
        assert.deepEqual(g.policy, { name: policyName, version: 1 });
        assert.deepEqual(g.settings, ledger);
        assert.equal(g.latestVersion, 1);
        assert.ok(g.sealed.length <= MAX_SEALED);
        const keys = openReleasedKeys(g.sealed, pair);
        try {
          assert.equal(keys.image, 'lab');
          assert.ok(Buffer.from(keys.content.key).equals(c.contentKey), 'content key bytes');
          assert.ok(keys.content.keyId.equals(c.imageId), 'content key id = image id');
          assert.ok(Buffer.from(keys.repository.key).equals(c.repositoryKey), 'repository key bytes');
          assert.deepEqual(keys.signers.map((s) => s.toString('hex')), c.signers.map((s) => s.toString('hex')));

          const clientHostKey = join(c.dir.path, `${unique('client')}.hostkey`);
          writeFileSync(clientHostKey, randomBytes(32), { mode: 0o600 });
          const folder = join(c.dir.path, unique('client-keys'));
          const kek: KekSource = { kind: 'hostkey', keyFile: clientHostKey };
          await writeKeyFolder(folder, keys, kek);
          await writeKeyFolder(folder, keys, kek); // a second grant replaces the files
          for (const d of ['', 'images', 'trusted']) assert.equal(statSync(join(folder, d)).mode & 0o777, 0o700, `folder ${d || '.'}`);
          assert.equal(statSync(join(folder, 'images', 'lab.key.enc')).mode & 0o777, 0o600);
          assert.equal(readFileSync(join(folder, 'trusted', `${c.signers[0].toString('hex').slice(0, 16)}.pub`), 'utf8'), `${c.signers[0].toString('hex')}\n`);
          const v = await verifyPack(join(root.path, 'images', 'lab_1.ckm.index'), { keyDir: folder, kek: () => kek });
          assert.equal(v.name, 'lab');
          assert.ok(v.checkedBlocks > 0);
          assert.equal(scan([folder], [c.contentKey, c.repositoryKey]).size, 0, 'the folder holds the keys only wrapped');
        } finally {
          keys.dispose();
        }
        // the same secret rebuilt from its bytes opens it; another client's pair does not
        const again = clientKeyPairFrom(Buffer.from(pair.secretKey));
        try {
          assert.ok(again.publicKey.equals(pair.publicKey));
          openReleasedKeys(g.sealed, again).dispose();
        } finally {
          again.dispose();
        }
        const other = generateClientKeyPair();
        try {
          assert.throws(() => openReleasedKeys(g.sealed, other), (e: unknown) => isMedvError(e, 'EBADREPLY'));
          const cut = g.sealed.subarray(0, g.sealed.length - 1);
          assert.throws(() => openReleasedKeys(cut, pair), (e: unknown) => isMedvError(e, 'EBADREPLY'));
          assert.throws(() => openReleasedKeys(Buffer.alloc(MAX_SEALED + 1), pair), (e: unknown) => isMedvError(e, 'EBADREPLY'));
        } finally {
          other.dispose();
        }
      } finally {
        pair.dispose();
      }
    });

    it('a user who is not entitled gets 403 with no key material, the same whether or not the workspace exists', async () => {
      const clientKey = generateClientKeyPair();
      const ask = (token: string, workspace: string) => fetch(`${srv.url}/api/workspaces/grant`, {
        method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ workspace, client: 'pc-2', clientKey: clientKey.publicKey.toString('base64') }),
      }).then(async (r) => ({ status: r.status, raw: Buffer.from(await r.arrayBuffer()), type: r.headers.get('content-type') }));
      try {
        const denied = await ask(bobToken, 'ledger');
        assert.equal(denied.status, 403);
        assert.deepEqual(JSON.parse(denied.raw.toString()), { error: { code: 'EFORBIDDEN', message: `user ${bob} is not entitled to workspace ledger` } });
        assert.ok(!containsAny(denied.raw, encodings([c.contentKey, c.repositoryKey])), 'no key bytes in any encoding');
        assert.ok(!denied.raw.includes('sealed'));
        const missing = await ask(bobToken, 'ledgex');
        assert.equal(missing.status, 403);
        assert.equal(missing.raw.toString().replace('ledgex', 'ledger'), denied.raw.toString(), 'same answer for a workspace that does not exist');
        assert.equal(missing.raw.length, denied.raw.length);
        const aliceMissing = await ask(aliceToken, 'ledgex');
        assert.equal(aliceMissing.status, 403);
        assert.equal(JSON.parse(aliceMissing.raw.toString()).error.message, `user ${alice} is not entitled to workspace ledgex`);
        // through the client library: EFORBIDDEN with status 403
        await assert.rejects(requestGrant(srv.url, bobToken, { workspace: 'ledger', client: 'pc-2', clientKey: clientKey.publicKey }), (e: unknown) => isMedvError(e, 'EFORBIDDEN') && e.data.status === 403);
        // no token at all: 401
        assert.equal((await ask('x'.repeat(43), 'ledger')).status, 401);
      } finally {
        clientKey.dispose();
      }
    });

    it('a workspace whose image has no keys published: 409 ENOKEY naming the image and the command', async () => {
      const pair = generateClientKeyPair();
      try {
        const r = await api(srv.url, 'POST', '/api/workspaces/grant', { token: aliceToken, body: { workspace: 'scratch', client: 'pc-1', clientKey: pair.publicKey.toString('base64') } });
        assert.equal(r.status, 409);
        assert.deepEqual(r.body, { error: { code: 'ENOKEY', message: 'no keys published for image other (medv admin image-keys publish)' } });
        await assert.rejects(requestGrant(srv.url, aliceToken, { workspace: 'scratch', client: 'pc-1', clientKey: pair.publicKey }), (e: unknown) => isMedvError(e, 'ENOKEY'));
      } finally {
        pair.dispose();
      }
    });

    it('hostile bodies are 400 EINVAL_ARG with a message naming the field', async () => {
      const pk = generateClientKeyPair();
      const good = { workspace: 'ledger', client: 'pc-1', clientKey: pk.publicKey.toString('base64') };
      pk.dispose();
      const grants: [Record<string, unknown>, RegExp][] = [
        [{ ...good, clientKey: 'not base64!' }, /clientKey must be base64 of 32 bytes/],
        [{ ...good, clientKey: randomBytes(31).toString('base64') }, /clientKey must be base64 of 32 bytes/],
        [{ ...good, clientKey: randomBytes(33).toString('base64') }, /clientKey must be base64 of 32 bytes/],
        [{ ...good, clientKey: Buffer.alloc(32).toString('base64') }, /clientKey is not a usable X25519 public key/],
        [{ ...good, clientKey: 12 }, /clientKey must be base64/],
        [{ ...good, workspace: 'w'.repeat(65) }, /workspace must be 1 to 64/],
        [{ ...good, client: 'pc/1' }, /client must be 1 to 64/],
        [{ ...good, client: 'c'.repeat(65) }, /client must be 1 to 64/],
        [{ workspace: 'ledger', clientKey: good.clientKey }, /client is missing/],
      ];
      for (const [body, msg] of grants) {
        const r = await api(srv.url, 'POST', '/api/workspaces/grant', { token: aliceToken, body });
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.equal(r.body.error.code, 'EINVAL_ARG');
        assert.match(r.body.error.message, msg);
      }
      const key = { id: randomBytes(16).toString('hex'), key: randomBytes(64).toString('base64') };
      const pub = { image: 'x1', content: key, repository: key, signers: [randomBytes(32).toString('hex')] };
      const publishes: [Record<string, unknown>, RegExp][] = [
        [{ ...pub, image: '../etc' }, /image must be 1 to 64/],
        [{ ...pub, content: { ...key, key: randomBytes(63).toString('base64') } }, /content\.key must be base64 of 64 bytes/],
        [{ ...pub, content: { ...key, key: `${randomBytes(64).toString('base64').slice(0, 86)}!!` } }, /content\.key must be base64/],
        [{ ...pub, content: { ...key, id: 'zz'.repeat(16) } }, /content\.id must be 32 hex digits/],
        [{ ...pub, repository: { id: key.id } }, /repository\.key is missing/],
        [{ ...pub, repository: { id: key.id, key: Buffer.alloc(64, 1).toString('base64') } }, /equal halves/],
        [{ ...pub, signers: Array.from({ length: 17 }, () => randomBytes(32).toString('hex')) }, /at most 16/],
        [{ ...pub, signers: [randomBytes(31).toString('hex')] }, /signers\[0\] must be 64 hex digits/],
      ];
      for (const [body, msg] of publishes) {
        const r = await api(srv.url, 'POST', '/api/admin/image-keys', { token: admin, body });
        assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 200)}: ${r.text}`);
        assert.equal(r.body.error.code, 'EINVAL_ARG');
        assert.match(r.body.error.message, msg);
      }
      assert.equal((await api(srv.url, 'POST', '/api/admin/image-keys', { token: aliceToken, body: pub })).status, 403, 'a user token is not an administrator\'s');
      const rep = { workspace: 'ledger', version: 1, state: 'running', at: new Date().toISOString() };
      const reports: [Record<string, unknown>, RegExp][] = [
        [{ client: 'pc-1', reports: Array.from({ length: 65 }, () => rep) }, /1 to 64 reports/],
        [{ client: 'pc-1', reports: [] }, /1 to 64 reports/],
        [{ client: 'pc-1', reports: [{ ...rep, state: 'exploded' }] }, /reports\[0\]\.state must be one of running, stopped/],
        [{ client: 'pc-1', reports: [rep, { ...rep, lastError: 'e'.repeat(1025) }] }, /reports\[1\]\.lastError must be a string of at most 1024/],
        [{ client: 'pc-1', reports: [{ ...rep, workspace: 'w'.repeat(65) }] }, /reports\[0\]\.workspace must be 1 to 64/],
        [{ client: 'pc-1', reports: [{ ...rep, version: 0 }] }, /reports\[0\]\.version must be null or an integer/],
        [{ client: 'pc-1', reports: [{ ...rep, version: 1.5 }] }, /version must be null or an integer/],
        [{ client: 'pc-1', reports: [{ ...rep, at: 'yesterday' }] }, /reports\[0\]\.at must be an ISO 8601 time/],
        [{ client: 'pc-1', reports: [{ ...rep, at: '2026-13-45T99:00:00Z' }] }, /at must be an ISO 8601 time/],
        [{ client: 'pc-1', reports: [{ ...rep, extra: 1 }] }, /reports\[0\]\.extra is not a report field/],
        [{ client: 'pc-1', reports: [{ ...rep, at: new Date(Date.now() + 2 * 86400_000).toISOString() }] }, /reports\[0\]\.at is more than a day ahead/],
        [{ client: 'p'.repeat(65), reports: [rep] }, /client must be 1 to 64/],
      ];
      for (const [body, msg] of reports) {
        const r = await api(srv.url, 'POST', '/api/reports', { token: aliceToken, body });
        assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 200)}: ${r.text}`);
        assert.equal(r.body.error.code, 'EINVAL_ARG');
        assert.match(r.body.error.message, msg);
      }
      const notJson = await api(srv.url, 'POST', '/api/reports', { token: aliceToken, raw: '{"client":' });
      assert.equal(notJson.status, 400);
      // the largest valid body is accepted: 64 reports with 1024 characters of (escaped) error each
      // (from alice's client pc-1, registered by her grant; the workspaces w0… are not hers: refused one by one)
      const big = Array.from({ length: 64 }, (_, i) => ({ ...rep, workspace: i === 0 ? 'ledger' : `w${i}`, state: 'failed', lastError: '\u0001'.repeat(1024) }));
      const ok = await api(srv.url, 'POST', '/api/reports', { token: aliceToken, body: { client: 'pc-1.example', reports: big } });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.stored, 1);
      assert.deepEqual(ok.body.refused.map((r: { index: number }) => r.index), Array.from({ length: 63 }, (_, i) => i + 1));
      assert.deepEqual(ok.body.refused[0], { index: 1, workspace: 'w1', reason: 'not entitled' });
    });

    it('reports: only from a client the user was granted keys on; the latest per client, user and workspace wins, whatever order they arrive in; medv admin clients lists them', async () => {
      const pair = generateClientKeyPair();
      try {
        await requestGrant(srv.url, aliceToken, { workspace: 'ledger', client: 'pc-b', clientKey: pair.publicKey });
      } finally {
        pair.dispose();
      }
      const t0 = Date.now() - 3600_000;
      const at = (m: number) => new Date(t0 + m * 60_000).toISOString();
      assert.equal(await sendReports(srv.url, aliceToken, 'pc-b', [
        { workspace: 'ledger', version: 1, state: 'running', at: at(10) },
        { workspace: 'scratch', version: null, state: 'failed', lastError: 'no keys published', at: at(10) },
      ]), 2);
      // an older report arriving later does not overwrite
      assert.equal(await sendReports(srv.url, aliceToken, 'pc-b', [{ workspace: 'ledger', version: 1, state: 'stopped', at: at(5) }]), 1);
      // a newer one does
      assert.equal(await sendReports(srv.url, aliceToken, 'pc-b', [{ workspace: 'scratch', version: 1, state: 'suspended', at: at(20) }]), 1);
      // bob was never granted keys on pc-a, alice never on pc-a: refused, nothing stored
      for (const token of [bobToken, aliceToken]) {
        await assert.rejects(sendReports(srv.url, token, 'pc-a', [{ workspace: 'ledger', version: 3, state: 'offline', at: at(1) }]), (e: unknown) => isMedvError(e, 'EFORBIDDEN') && e.data.status === 403);
      }
      const list = await listClients(srv.url, admin);
      const mine = list.filter((x) => x.client === 'pc-a' || x.client === 'pc-b');
      assert.deepEqual(mine.map((x) => [x.client, x.user, x.workspace, x.version, x.state, x.at, x.lastError]), [
        ['pc-b', alice, 'ledger', 1, 'running', at(10), undefined],
        ['pc-b', alice, 'scratch', 1, 'suspended', at(20), undefined],
      ]);
      for (const x of mine) assert.ok(Math.abs(Date.parse(x.received) - Date.now()) < 60_000);
      const cli = runMedv(['admin', 'clients', '--server', srv.url, '--token-file', srv.adminTokenFile, '--json']);
      assert.equal(cli.code, 0, cli.stderr);
      assert.deepEqual(JSON.parse(cli.stdout).clients.filter((x: { client: string }) => x.client === 'pc-b').map((x: { state: string }) => x.state), ['running', 'suspended']);
      assert.equal((await api(srv.url, 'GET', '/api/admin/clients', { token: aliceToken })).status, 403, 'a user token on an admin route');
    });

    it('the database and the audit log hold no key in clear; publish, release and refusals are audited', async () => {
      const store = await Store.open(root.path, db.url);
      let wrapped: Buffer;
      try {
        const row = await store.db.selectFrom('image_keys').selectAll().where('image', '=', 'lab').executeTakeFirstOrThrow();
        wrapped = row.wrapped;
      } finally {
        await store.close();
      }
      const needles = encodings([c.contentKey, c.repositoryKey, c.contentKey.subarray(0, 32), c.repositoryKey.subarray(0, 32)]);
      assert.ok(Buffer.isBuffer(wrapped), 'the wrapped keys are stored as bytes');
      assert.ok(!containsAny(wrapped, needles));
      if (backend === 'sqlite') assert.equal(scan([root.path], needles).size, 0, 'no key bytes anywhere in the server root (database, WAL)');
      const audit = await api(srv.url, 'GET', '/api/admin/audit', { token: admin });
      const actions = audit.body.entries.map((e: { action: string }) => e.action);
      for (const a of ['keys.publish', 'keys.release', 'keys.deny']) assert.ok(actions.includes(a), a);
      assert.ok(!containsAny(audit.text, needles));
    });

    it('the client library: publishImageKeys, and an unreachable server is ENETWORK', async () => {
      const k = await openConsoleKeys(c.keyDir, 'lab', c.kek);
      try {
        const r = await publishImageKeys(srv.url, admin, { image: 'lab2', ...k.dataKeys, signers: k.trusted });
        assert.deepEqual(r, { replaced: false });
      } finally {
        k.dispose();
      }
      const pair = generateClientKeyPair();
      try {
        await assert.rejects(requestGrant('http://127.0.0.1:1', aliceToken, { workspace: 'ledger', client: 'pc-1', clientKey: pair.publicKey }), (e: unknown) => isMedvError(e, 'ENETWORK'));
        await assert.rejects(sendReports('http://127.0.0.1:1', aliceToken, 'pc-1', []), (e: unknown) => isMedvError(e, 'ENETWORK'));
      } finally {
        pair.dispose();
      }
    });
  });
}

describe('the server key file', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('server-key'); });
  afterEach(() => dir.cleanup());
  const serve = (key: string) => runMedv(['serve', '--root', join(dir.path, 'root'), '--port', '0', '--server-key', key]);

  it('is refused, in one line, when group or others can read it, when it is a symlink, not a file, or not 32 bytes', () => {
    const f = join(dir.path, 'server.key');
    writeFileSync(f, randomBytes(32), { mode: 0o644 });
    const open = serve(f);
    assert.equal(open.code, 4);
    assert.equal(open.stderr, `medv: server key file permissions 644 are too open: it must not be accessible by group or others (chmod 600 ${f}) (${f}) [EINSECURE]\n`);
    const link = join(dir.path, 'link.key');
    writeFileSync(join(dir.path, 'real.key'), randomBytes(32), { mode: 0o600 });
    symlinkSync(join(dir.path, 'real.key'), link);
    const l = serve(link);
    assert.equal(l.code, 4);
    assert.match(l.stderr, /^medv: server key file is a symbolic link.*\[EINSECURE\]\n$/);
    const short = join(dir.path, 'short.key');
    writeFileSync(short, randomBytes(31), { mode: 0o600 });
    const s = serve(short);
    assert.equal(s.code, 5);
    assert.match(s.stderr, /^medv: server key file is 31 bytes, expected 32.*\[EFORMAT\]\n$/);
    const d = serve(dir.path);
    assert.notEqual(d.code, 0);
    assert.equal(d.stderr.split('\n').length, 2, d.stderr);
    const missing = serve(join(dir.path, 'nope.key'));
    assert.equal(missing.code, 3, 'a named key file must exist');
  });
});

describe('two instances on one PostgreSQL share the server key file', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  const servers: ServeProcess[] = [];
  before(() => { dir = tempDir('keys-two'); });
  after(async () => {
    for (const s of servers) await s.stop();
    await dir.cleanup();
  });

  it('keys published through one are released by the other; an instance with another key cannot open them', async () => {
    const c = makeConsole();
    try {
      await loadConsoleKeys(c);
      const db = await dbArgs('postgres', 'twokeys');
      const key = join(dir.path, 'shared.key');
      writeFileSync(key, randomBytes(32), { mode: 0o600 });
      const a = await startServe(join(dir.path, 'a'), [...db.args, '--server-key', key]);
      servers.push(a);
      const b = await startServe(join(dir.path, 'b'), [...db.args, '--server-key', key, '--admin-token-file', a.adminTokenFile]);
      servers.push(b);
      const admin = readFileSync(a.adminTokenFile, 'utf8').trim();
      const user = unique('ann');
      const pw = password();
      assert.equal((await api(a.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pw } })).status, 201);
      assert.equal((await api(a.url, 'POST', '/api/admin/policies', { token: admin, body: { name: unique('p'), users: [user], workspaces: [{ name: 'ledger', image: 'lab' }] } })).status, 201);
      const pub = runMedv(['admin', 'image-keys', 'publish', 'lab', '--keys', c.keyDir, '--host-key', c.hostKey, '--server', a.url, '--token-file', a.adminTokenFile], { MEDV_PASSPHRASE: '' });
      assert.equal(pub.code, 0, pub.stderr);
      assert.match(pub.stdout, /^keys of image lab \(id [0-9a-f]{32}, 1 signer\) published\n$/);
      const token = (await api(b.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token;
      const pair = generateClientKeyPair();
      try {
        const g = await requestGrant(b.url, token, { workspace: 'ledger', client: 'pc-1', clientKey: pair.publicKey });
        assert.equal(g.latestVersion, null, 'no index in b\'s repository folder');
        const k = openReleasedKeys(g.sealed, pair);
        assert.ok(Buffer.from(k.content.key).equals(c.contentKey));
        k.dispose();
        const otherKey = join(dir.path, 'other.key');
        writeFileSync(otherKey, randomBytes(32), { mode: 0o600 });
        const other = await startServe(join(dir.path, 'c'), [...db.args, '--server-key', otherKey]);
        servers.push(other);
        const r = await api(other.url, 'POST', '/api/workspaces/grant', { token, body: { workspace: 'ledger', client: 'pc-1', clientKey: pair.publicKey.toString('base64') } });
        assert.equal(r.status, 500);
        assert.equal(r.body.error.code, 'ECRYPTO');
        assert.match(r.body.error.message, /instances sharing a database must share --server-key/);
      } finally {
        pair.dispose();
      }
    } finally {
      await c.dir.cleanup();
    }
  });
});

describe('key release over plain HTTP from another host', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let srv: ServeProcess | undefined;
  before(() => { dir = tempDir('keys-plain'); });
  after(async () => { await srv?.stop(); await dir.cleanup(); });

  it('is refused with 403 EINSECURE before the token or the body is looked at', async function () {
    const ext = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
    if (!ext) this.skip();
    srv = await startServe(join(dir.path, 'root'), ['--host', '0.0.0.0']);
    const url = `http://${ext!.address}:${new URL(srv.url).port}`;
    for (const path of ['/api/workspaces/grant', '/api/reports']) {
      const r = await api(url, 'POST', path, { token: 'x'.repeat(43), body: { workspace: 'ledger', client: 'pc', clientKey: randomBytes(32).toString('base64') } });
      assert.equal(r.status, 403, path);
      assert.equal(r.body.error.code, 'EINSECURE');
    }
    const admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
    for (const [method, path] of [['POST', '/api/admin/image-keys'], ['GET', '/api/admin/clients']]) {
      const r = await api(url, method, path, { token: admin, body: method === 'POST' ? {} : undefined });
      assert.equal(r.status, 403, path);
      assert.equal(r.body.error.code, 'EINSECURE');
    }
  });
});

describe('keyrelease: the sealed answer, as a client opens it', () => {
  const seal = (text: string | Buffer, pk: Buffer) => {
    const m = Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1');
    const out = Buffer.alloc(m.length + 48);
    (sodium as unknown as { crypto_box_seal(c: Buffer, m: Buffer, pk: Buffer): void }).crypto_box_seal(out, m, pk);
    return out;
  };
  const hex = (n: number) => randomBytes(n).toString('hex');
  const b64 = (b: Buffer) => b.toString('base64');
  const canonical = (o: { image?: string; ckey?: string; signers?: string[]; space?: string } = {}) =>
    `{"v":1,"image":"${o.image ?? 'lab'}","content":{"id":"${hex(16)}","key":"${o.ckey ?? b64(randomBytes(64))}"},${o.space ?? ''}"repository":{"id":"${hex(16)}","key":"${b64(randomBytes(64))}"},"signers":[${(o.signers ?? [hex(32)]).map((s) => `"${s}"`).join(',')}]}`;

  it('the canonical form opens; every other form is EBADREPLY', () => {
    const pair = generateClientKeyPair();
    try {
      const ok = openReleasedKeys(seal(canonical({ signers: [] }), pair.publicKey), pair);
      assert.deepEqual(ok.signers, []);
      ok.dispose();
      openReleasedKeys(seal(canonical({ signers: Array.from({ length: 16 }, () => hex(32)) }), pair.publicKey), pair).dispose();
      const bad = [
        canonical({ space: ' ' }),
        canonical({ image: '../x' }),
        canonical({ ckey: b64(randomBytes(63)) }),
        canonical({ ckey: b64(Buffer.alloc(64, 9)) }), // equal XTS halves
        canonical({ signers: [hex(31)] }),
        canonical({ signers: [hex(32).toUpperCase()] }),
        canonical().replace('"v":1', '"v":2'),
        `${canonical()} `,
        canonical().slice(0, -1),
      ];
      for (const text of bad) {
        assert.throws(() => openReleasedKeys(seal(text, pair.publicKey), pair), (e: unknown) => isMedvError(e, 'EBADREPLY'), text.slice(0, 80));
      }
      // 17 signers: longer than any valid answer, refused before it is opened
      const tooMany = seal(canonical({ signers: Array.from({ length: 17 }, () => hex(32)) }), pair.publicKey);
      assert.throws(() => openReleasedKeys(tooMany, pair), (e: unknown) => isMedvError(e, 'EBADREPLY'));
    } finally {
      pair.dispose();
    }
  });

  it('sealImageKeys writes exactly the canonical form openReleasedKeys reads; the key pair hides its secret from inspect', async () => {
    const { releasePlaintext } = await import('../../src/api/keyrelease.js');
    const { DataKey } = await import('../../src/crypto/index.js');
    const content = DataKey.generate();
    const repository = DataKey.generate();
    const pair = generateClientKeyPair();
    try {
      const signers = [randomBytes(32), randomBytes(32)];
      const plain = releasePlaintext({ image: 'win10', content, repository, signers });
      const text = Buffer.from(plain).toString('latin1');
      const parsed = JSON.parse(text);
      assert.deepEqual(parsed, {
        v: 1, image: 'win10',
        content: { id: content.keyId.toString('hex'), key: content.key.toString('base64') },
        repository: { id: repository.keyId.toString('hex'), key: repository.key.toString('base64') },
        signers: signers.map((s) => s.toString('hex')),
      });
      assert.equal(JSON.stringify(parsed), text, 'no whitespace, this field order');
      const back = openReleasedKeys(sealImageKeys({ image: 'win10', content, repository, signers }, pair.publicKey), pair);
      assert.ok(Buffer.from(back.repository.key).equals(repository.key));
      back.dispose();
      assert.ok(!inspect(pair).includes(Buffer.from(pair.secretKey).toString('hex')));
      assert.throws(() => sealImageKeys({ image: 'win10', content, repository, signers }, Buffer.alloc(32)), (e: unknown) => isMedvError(e, 'EINVAL_ARG'));
    } finally {
      content.dispose();
      repository.dispose();
      pair.dispose();
    }
  });
});

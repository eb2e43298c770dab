/**
 * Where a deployment's blocks come from (issue 22 parts 6 to 8), through the CLI: a real `medv
 * serve` behind a proxy that records what it was asked, and `medv workspace start`.
 * - Mirrors: real nginx mirrors serve the packs as static files (one hostile: its packs have every
 *   byte after the header flipped); the server must be asked only for /api/ and the signed index
 *   when a mirror serves the packs; a bad mirror costs one warning line and the pieces it did not
 *   deliver come from the next source.
 * - Pre-staging the newest version alone: its own pack serves all of its blocks, only the blocks of
 *   earlier packs it refers to are fetched; an image needing a newer engine is refused before any
 *   download.
 * - Host data seeds (`--seed DIR`): files holding blocks of the image cut what is fetched (nginx's
 *   log), a changed file is hashed again, links and FIFOs are not followed.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { GUEST } from '../helpers/qemu.js';
import { MEDV_BIN, runMedv, runMedvAsync, tempDir, type RunResult } from '../helpers/cli.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { recordingProxy } from '../helpers/net.js';
import { openClient } from '../../src/workspace/client.js';
import { clientRootLayout } from '../../src/repo/index.js';
import { openDisk } from '../../src/layers/open.js';
import { PACK_HEADER_SIZE } from '../../src/formats/ckm/index.js';

const IMAGE = 'img';
const IMAGE_BYTES = 16 << 20;

describe('where a deployment\'s blocks come from: mirrors (real nginx), pre-staged packs, medv serve', function () {
  this.timeout(600_000);
  const dir = tempDir('mirrors');
  const f = (...p: string[]) => join(dir.path, ...p);
  let serve: ChildProcess;
  let server: Awaited<ReturnType<typeof recordingProxy>>;
  let good: Nginx;
  let hostile: Nginx;
  const admin = (args: string[]) => runMedv([...args, '--server', serverUrl, '--token-file', f('server', 'admin.token')], { MEDV_STATE_DIR: f('state') });
  let serverUrl = '';
  const env = (who: string) => ({
    // client f2 shares client f's cache (its seed id cache): another root, the same user account
    MEDV_CLIENT_ROOT: f(`root-${who}`), MEDV_RUN_DIR: f(`run-${who}`), XDG_DATA_HOME: f(`xdg-${who}`), XDG_CACHE_HOME: f(`cache-${who === 'f2' ? 'f' : who}`),
    XDG_CONFIG_HOME: f(`config-${who}`), MEDV_TEST_ACCEL: undefined,
  });
  const client = (args: string[], who: string) => runMedvAsync(args, env(who));
  const ok = (r: RunResult) => { assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}${r.stdout}`); return r; };
  const raw = f('img-v1.raw');
  /** The raw image of a version: the previous version's (v1: the nasm guest, then 15 MiB of patterned data) with `changed` blocks made random. */
  const rawImage = (version: number, changed: number[]): string => {
    let buf = Buffer.alloc(IMAGE_BYTES);
    if (version > 1) buf = fs.readFileSync(f(`img-v${version - 1}.raw`));
    else {
      fs.readFileSync(GUEST.image).copy(buf, 0);
      for (let i = 1 << 20; i < IMAGE_BYTES; i += 32) buf.writeUInt32LE(i * 2654435761 >>> 0, i);
    }
    for (const b of changed) randomBytes(4096).copy(buf, (1 << 20) + b * 4096);
    fs.writeFileSync(f(`img-v${version}.raw`), buf);
    return f(`img-v${version}.raw`);
  };
  const publishVersion = (version: number, changed: number[]) => {
    ok(runMedv(['image', 'pack', rawImage(version, changed), '--name', IMAGE, '--version', String(version), '--out', f('packed'), '--keys', f('keys')], { MEDV_STATE_DIR: f('state') }));
    ok(admin(['image', 'upload', f('packed', `${IMAGE}_${version}.ckm`), f('packed', `${IMAGE}_${version}.ckm.index`)]));
  };

  /** The deployed disk's bytes, read with the client's host key (as the VM host would). */
  const deployedBytes = async (who: string, disk: string): Promise<Buffer> => {
    const saved = process.env.XDG_CONFIG_HOME;
    process.env.XDG_CONFIG_HOME = env(who).XDG_CONFIG_HOME;
    try {
      const ctx = await openClient(env(who).MEDV_CLIENT_ROOT);
      const d = await openDisk(disk, { readOnly: true, kek: () => ctx.kek });
      try { return Buffer.from(await d.device.read(0, IMAGE_BYTES)); } finally { await d.device.close(); }
    } finally {
      if (saved === undefined) delete process.env.XDG_CONFIG_HOME; else process.env.XDG_CONFIG_HOME = saved;
    }
  };
  const packRequests = () => server.requests().filter((r) => /^GET \/images\/[^ ]+\.ckm$/.test(r));

  before(async () => {
    fs.mkdirSync(f('server'));
    serve = spawn(process.execPath, [MEDV_BIN, 'serve', '--root', f('server'), '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const direct = await new Promise<string>((res, rej) => {
      let out = '';
      serve.stdout!.on('data', (d) => { out += d; const nl = out.indexOf('\n'); if (nl >= 0) res(JSON.parse(out.slice(0, nl)).url); });
      serve.once('exit', (c) => rej(new Error(`medv serve exited ${c}`)));
    });
    serverUrl = direct;
    server = await recordingProxy(Number(new URL(direct).port));
    publishVersion(1, []);
    ok(admin(['admin', 'image-keys', 'publish', IMAGE, '--keys', f('keys')]));
    fs.writeFileSync(f('alice.pw'), 'alice-password-alice', { mode: 0o600 });
    ok(admin(['admin', 'user', 'add', 'alice', '--password-file', f('alice.pw')]));

    // the good mirror serves the server's own published folder; the hostile one flipped copies
    // one range per request is enough of a mirror: nginx with max_ranges 1 answers 200 to more
    good = await startNginx(f('nginx-good'), f('server', 'images'), { maxRanges: 1 });
    fs.mkdirSync(f('flipped'));
    const pack = fs.readFileSync(f('packed', `${IMAGE}_1.ckm`));
    for (let i = PACK_HEADER_SIZE; i < pack.length; i++) pack[i] ^= 0xff;
    fs.writeFileSync(f('flipped', `${IMAGE}_1.ckm`), pack);
    hostile = await startNginx(f('nginx-hostile'), f('flipped'));
    const ws = (name: string, mirrors: string[]) => ({ name, image: IMAGE, mode: 'persistent', memory: 64, network: 'none', mirrors });
    fs.writeFileSync(f('policy.json'), JSON.stringify({
      name: 'branch', users: ['alice'],
      workspaces: [
        ws('near', [good.url('')]),
        ws('near2', [good.url('')]),
        ws('chain', [good.url('not-synced-yet/'), good.url('')]),
        ws('bad', [hostile.url('')]),
        { name: 'pre', image: IMAGE, mode: 'persistent', memory: 64, network: 'none' },
        ws('host', [good.url('')]),
        { name: 'future', image: IMAGE, mode: 'persistent', memory: 64, network: 'none', minEngine: '99.0' },
      ],
    }));
    ok(admin(['admin', 'policy', 'publish', f('policy.json')]));
  });

  after(async () => {
    for (const [who, w] of [['a', 'near'], ['a', 'near2'], ['b', 'chain'], ['c', 'bad'], ['d', 'pre'], ['g', 'host'], ['f', 'host'], ['f2', 'host']]) await client(['workspace', 'stop', w, '--force'], who);
    serve?.kill('SIGTERM');
    await good?.stop();
    await hostile?.stop();
    await server?.close();
    await dir.cleanup();
  });

  /** A fresh client root for `who`, logged in through the recording proxy; `workspace start NAME` there. */
  const startOn = async (who: string, name: string, args: string[] = [], afterLogin?: () => void) => {
    ok(await client(['login', '--server', server.url, '--user', 'alice', '--password-file', f('alice.pw')], who));
    afterLogin?.();
    server.reset();
    good.resetLog();
    hostile.resetLog();
    const r = await client(['workspace', 'start', name, '--json', '--accel', 'tcg', ...args], who);
    return { r, out: r.code === 0 ? JSON.parse(r.stdout) : undefined };
  };

  it('a policy mirror serves every pack byte: medv serve is asked only for /api/ and the signed index, and the disk is the image', async () => {
    const { r, out } = await startOn('a', 'near');
    ok(r);
    assert.deepEqual(packRequests(), [], `the server was asked for pack data: ${server.requests().join(', ')}`);
    assert.ok(server.requests().some((x) => x.startsWith(`GET /images/${IMAGE}_1.ckm.index`)), 'the index came from the server');
    assert.ok(server.requests().every((x) => /^\S+ \/(api\/|images\/[^ ]+\.ckm\.index)/.test(x)), server.requests().join(', '));
    const fromMirror = good.bytes((u) => u === `/${IMAGE}_1.ckm`);
    assert.ok(fromMirror > 100_000, `nginx sent ${fromMirror} bytes of the pack`);
    assert.equal(out.deployed.mirrorBytes > 0, true);
    assert.doesNotMatch(r.stderr, /warning/i);
    assert.ok((await deployedBytes('a', out.deployed.disk)).equals(fs.readFileSync(raw)), 'the deployed disk is the packed image');
    ok(await client(['workspace', 'stop', 'near', '--force'], 'a'));
  });

  it('a second workspace of the same image on that client: nginx\'s log shows no pack byte, the server none, and no second base is stored', async () => {
    const images = f('root-a', 'images');
    // du counts a file with several hard links once
    const bytesOnDisk = (d: string) => Number(spawnSync('du', ['-s', '-B1', d], { encoding: 'utf8' }).stdout.split('\t')[0]);
    const before = bytesOnDisk(images);
    const { r, out } = await startOn('a', 'near2');
    ok(r);
    assert.equal(out.deployed.shared, true, r.stdout);
    assert.equal(out.deployed.fetchedBytes, 0);
    assert.deepEqual(good.log().filter((l) => l.uri.endsWith('.ckm')), [], 'nginx served pack data to the second workspace');
    assert.deepEqual(packRequests(), []);
    ok(await client(['workspace', 'stop', 'near2', '--force'], 'a'));
    const base = fs.statSync(out.deployed.disk);
    assert.ok(base.nlink >= 3, `the deployed disk has ${base.nlink} links (the base and two workspaces expected)`);
    const grown = bytesOnDisk(images) - before;
    assert.ok(grown < base.blocks * 512 / 2, `the client's images grew by ${grown} B; the base takes ${base.blocks * 512} B`);
  });

  it('mirrors are tried in order: one without the pack (404) costs one warning line, the next serves it, the server still serves no pack byte', async () => {
    const { r, out } = await startOn('b', 'chain');
    ok(r);
    assert.deepEqual(packRequests(), []);
    const lines = r.stderr.split('\n').filter((l) => /mirror/.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /not-synced-yet\/.*not found \(HTTP 404\)/);
    assert.ok(good.log().some((l) => l.uri === `/not-synced-yet/${IMAGE}_1.ckm` && l.status === 404));
    assert.ok(good.bytes((u) => u === `/${IMAGE}_1.ckm`) > 100_000);
    assert.ok((await deployedBytes('b', out.deployed.disk)).equals(fs.readFileSync(raw)));
    ok(await client(['workspace', 'stop', 'chain', '--force'], 'b'));
  });

  it('a hostile mirror serving flipped bytes: one warning, the pack from the server, and the disk is the image', async () => {
    const { r, out } = await startOn('c', 'bad');
    ok(r);
    assert.ok(hostile.bytes((u) => u === `/${IMAGE}_1.ckm`) > 0, 'the hostile mirror was asked first');
    assert.ok(packRequests().length > 0, 'the server served the pack');
    const lines = r.stderr.split('\n').filter((l) => /mirror/.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /EBADBLOCK/);
    assert.ok((await deployedBytes('c', out.deployed.disk)).equals(fs.readFileSync(raw)), 'the deployed disk is the packed image, not the mirror\'s bytes');
    ok(await client(['workspace', 'stop', 'bad', '--force'], 'c'));
  });

  it('the newest version pre-staged alone: its pack serves all of its blocks, only blocks of the earlier packs it refers to are fetched, and the missing packs are named', async () => {
    publishVersion(2, [10, 11, 702]);
    publishVersion(3, [30, 31, 703]);
    ok(await client(['login', '--server', server.url, '--user', 'alice', '--password-file', f('alice.pw')], 'd'));
    const prestaged = join(f('root-d'), 'images', 'PrestagedImages');
    for (const n of [`${IMAGE}_3.ckm`, `${IMAGE}_3.ckm.index`]) fs.copyFileSync(f('packed', n), join(prestaged, n));
    const { r, out } = await startOn('d', 'pre');
    ok(r);
    assert.equal(out.version, 3);
    assert.match(r.stderr, new RegExp(`PrestagedImages/${IMAGE}_3\\.ckm\\.index: its index refers to packs not in its folder \\(${IMAGE}_1\\.ckm, ${IMAGE}_2\\.ckm\\)`));
    const asked = packRequests();
    assert.ok(!asked.some((x) => x.includes(`${IMAGE}_3.ckm`)), `the pre-staged pack was fetched: ${asked.join(', ')}`);
    for (const v of [1, 2]) assert.ok(asked.some((x) => x === `GET /images/${IMAGE}_${v}.ckm`), `pack ${v} was not fetched: ${asked.join(', ')}`);
    assert.equal(out.deployed.blocksFromSeeds, 3, 'the three blocks of version 3\'s own pack came from the pre-staged folder');
    assert.ok((await deployedBytes('d', out.deployed.disk)).equals(fs.readFileSync(f('img-v3.raw'))), 'the deployed disk is version 3');
    ok(await client(['workspace', 'stop', 'pre', '--force'], 'd'));
  });

  it('an image that needs a newer engine (minEngine) is refused before any download: not one /images/ request, nothing deployed', async () => {
    const { r } = await startOn('e', 'future');
    assert.equal(r.code, 12, r.stderr);
    assert.match(r.stderr, /needs medv engine 99\.0 or later .*nothing was downloaded/);
    assert.deepEqual(server.requests().filter((x) => x.includes('/images/')), []);
    assert.deepEqual(fs.readdirSync(join(f('root-e'), 'images')).sort(), ['PackedImages', 'PrestagedImages']);
  });

  it('host data seeds: files holding blocks of the image cut what a first download fetches; a changed file is hashed again; links and FIFOs are not followed', async () => {
    const v3 = fs.readFileSync(f('img-v3.raw'));
    const data = f('hostdata');
    fs.mkdirSync(join(data, 'sub'), { recursive: true });
    fs.writeFileSync(join(data, 'a.bin'), v3.subarray(2 << 20, (2 << 20) + (256 << 10))); // 64 blocks of the image
    fs.writeFileSync(join(data, 'sub', 'b.bin'), v3.subarray(5 << 20, (5 << 20) + (512 << 10))); // 128 more
    fs.writeFileSync(join(data, 'small.txt'), 'a note\n');
    fs.symlinkSync(f('img-v3.raw'), join(data, 'link.raw')); // the whole image, behind a link: never read
    assert.equal(spawnSync('mkfifo', [join(data, 'fifo')]).status, 0);
    const packBytes = () => good.bytes((u) => /^\/img_\d+\.ckm$/.test(u));
    const host = (out: { deployed: { seeds: Array<{ kind: string; files: number; hashedFiles: number; cachedFiles: number; skipped: number; blocks: number }> } }) => out.deployed.seeds.find((x) => x.kind === 'host')!;

    const plain = await startOn('g', 'host');
    ok(plain.r);
    const without = packBytes();
    ok(await client(['workspace', 'stop', 'host', '--force'], 'g'));

    const seeded = await startOn('f', 'host', ['--seed', data]);
    ok(seeded.r);
    const withSeed = packBytes();
    assert.equal(seeded.out.version, 3);
    assert.equal(seeded.out.deployed.blocksFromSeeds, 192, 'every block of a.bin and b.bin came from the host data');
    // the image's patterned data packs to ~640 bytes a block; from a one-range mirror, gaps of up
    // to 48 KiB between wanted blocks are fetched with them, so part of the saving goes back
    assert.ok(withSeed < without - 192 * 256, `pack bytes from nginx: ${withSeed} with the seed folder, ${without} without`);
    assert.deepEqual({ ...host(seeded.out), path: undefined }, { path: undefined, kind: 'host', blocks: 192, files: 3, hashedFiles: 3, cachedFiles: 0, skipped: 2 });
    assert.ok((await deployedBytes('f', seeded.out.deployed.disk)).equals(v3));
    ok(await client(['workspace', 'stop', 'host', '--force'], 'f'));

    // b.bin changes (same size, a new mtime, other bytes): hashed again; a.bin's ids come from the
    // cache. The folder is the client's setting this time (Client.json seedFolders), not --seed.
    fs.writeFileSync(join(data, 'sub', 'b.bin'), randomBytes(512 << 10));
    const again = await startOn('f2', 'host', [], () => {
      const cfg = join(clientRootLayout(f('root-f2')).config, 'Client.json');
      fs.writeFileSync(cfg, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfg, 'utf8')), seedFolders: [data] }));
    });
    ok(again.r);
    assert.deepEqual({ ...host(again.out), path: undefined }, { path: undefined, kind: 'host', blocks: 64, files: 3, hashedFiles: 2, cachedFiles: 1, skipped: 2 });
    assert.equal(again.out.deployed.blocksFromSeeds, 64);
    assert.ok((await deployedBytes('f2', again.out.deployed.disk)).equals(v3));
    ok(await client(['workspace', 'stop', 'host', '--force'], 'f2'));
  });

  it('mirror URLs are checked when the policy is published: no credentials, http(s) only, at most 8', () => {
    const publish = (mirrors: string[]) => {
      fs.writeFileSync(f('bad-policy.json'), JSON.stringify({ name: 'rejected', users: ['alice'], workspaces: [{ name: 'x', image: IMAGE, mirrors }] }));
      return admin(['admin', 'policy', 'publish', f('bad-policy.json')]);
    };
    for (const m of [['http://user:secret@mirror.example/images/'], ['ftp://mirror.example/images/'], ['https://mirror.example/images/?sig=abc'], ['file:///srv/images/'],
      Array.from({ length: 9 }, (_x, i) => `https://m${i}.example/`)]) {
      const r = publish(m);
      assert.equal(r.code, 5, `${m[0]}: ${r.stderr}`);
      assert.match(r.stderr, /\/workspaces\/0\/mirrors/);
      assert.doesNotMatch(r.stderr, /secret/);
    }
  });
});

/**
 * A hostile (or broken) repository: each case gives one clear line on stderr with its documented
 * exit status, and nothing under the output name (neither the .evhd nor its .enc).
 */
import assert from 'node:assert/strict';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { type RunEntry, parseIndexHeader } from '../../src/formats/ckm/index.js';
import { BlockCodec, openImageKeys } from '../../src/pack/index.js';
import { tempDir } from '../helpers/cli.js';
import { type Nginx, startNginx } from '../helpers/nginx.js';
import { forgeIndex } from '../pack/helpers.js';
import { type Repo, makeRepo, medvAsync } from './fixture.js';

describe('transfer: fetch from a hostile repository', function () {
  this.timeout(120_000);
  const t = tempDir('fetch-hostile');
  let r: Repo;
  let nginx: Nginx;
  const cases = () => join(t.path, 'cases');
  let n = 0;

  /** A copy of the repository's v1 files in cases/NAME, after `edit`. */
  const makeCase = (name: string, edit: (index: string, pack: string) => void | Promise<void>) => async () => {
    const dir = join(cases(), name);
    mkdirSync(dir, { recursive: true });
    const index = join(dir, 'lab_1.ckm.index');
    const pack = join(dir, 'lab_1.ckm');
    copyFileSync(join(r.repo, 'lab_1.ckm.index'), index);
    copyFileSync(join(r.repo, 'lab_1.ckm'), pack);
    await edit(index, pack);
    return `${name}/lab_1.ckm.index`;
  };

  const expectFailure = async (url: string, code: string, status: number, message: RegExp) => {
    const out = join(t.path, `out-${n++}.evhd`);
    const res = await medvAsync(r, ['image', 'fetch', url, '--out', out, '--keys', r.keys]);
    assert.equal(res.code, status, res.stderr);
    assert.match(res.stderr, new RegExp(`^medv: .*\\[${code}\\]\\n$`));
    assert.match(res.stderr, message);
    assert.doesNotMatch(res.stderr, /\n\s+at /);
    assert.ok(!existsSync(out), 'something is under the output name');
    assert.ok(!existsSync(out.replace(/\.evhd$/, '.enc')), 'a key file is under the output name');
    return out;
  };

  before(async () => {
    r = makeRepo(t.path, 16, 0.5, 61);
    mkdirSync(cases());
    nginx = await startNginx(join(t.path, 'nginx'), cases());
  });
  after(async () => {
    await nginx?.stop();
    await t.cleanup();
  });

  it('a flipped byte in a block: EBADBLOCK (5)', async () => {
    const url = await makeCase('flip', (_i, pack) => {
      const b = readFileSync(pack);
      b[Math.floor(b.length / 2)] ^= 0x40;
      writeFileSync(pack, b);
    })();
    await expectFailure(nginx.url(url), 'EBADBLOCK', 5, /does not authenticate/);
  });

  it('a truncated .ckm: ETRUNCATED (5)', async () => {
    const url = await makeCase('trunc', (_i, pack) => truncateSync(pack, statSync(pack).size - 1000))();
    await expectFailure(nginx.url(url), 'ETRUNCATED', 5, /lab_1\.ckm/);
  });

  it('an index with a bad signature: ESIGNATURE (5), nothing but its header asked for, nothing created', async () => {
    const url = await makeCase('sig', (index) => {
      const b = readFileSync(index);
      b[b.readUInt16LE(10) - 10] ^= 1;
      writeFileSync(index, b);
    })();
    nginx.resetLog();
    const out = await expectFailure(nginx.url(url), 'ESIGNATURE', 5, /signature/);
    const log = nginx.log();
    assert.equal(log.length, 1);
    assert.equal(log[0].uri, '/sig/lab_1.ckm.index');
    assert.ok(!existsSync(join(t.path, `.${out.split('/').pop()}.medv-fetch`)), 'a partial output was started for an untrusted index');
  });

  it('an index whose offsets point past the .ckm: ECORRUPT (5)', async () => {
    const url = await makeCase('past', async (index, pack) => {
      const keys = await openImageKeys(r.keys, 'lab', () => ({ kind: 'hostkey', keyFile: r.hostKey }), { sign: true });
      const size = statSync(pack).size;
      try {
        forgeIndex(index, keys, (run, rec) => { if (run === 0) rec.entries[0].place.offset = size + 4096; });
      } finally {
        keys.dispose();
      }
    })();
    await expectFailure(nginx.url(url), 'ECORRUPT', 5, /past the end of pack/);
  });

  it('a block that authenticates but is not the block its id names (sealed with the image key): EBADBLOCK before it is written, nothing published', async () => {
    const url = await makeCase('content', async (index, pack) => {
      const keys = await openImageKeys(r.keys, 'lab', () => ({ kind: 'hostkey', keyFile: r.hostKey }), { sign: true });
      try {
        const h = parseIndexHeader(readFileSync(index));
        let target: RunEntry | undefined;
        forgeIndex(index, keys, (run, rec) => {
          if (target || rec.entries.length === 0) return;
          const e = rec.entries.find((x) => x.kind !== 'delta')!;
          // what a hostile publisher holding the key could store: a valid frame of other content under e's id
          const codec = new BlockCodec(keys);
          const { kind, payload } = codec.compress(Buffer.alloc(4096, 0x33));
          const stored = codec.seal(payload, kind, e.id, h.packs[0].salt, e.place.offset);
          assert.ok(stored.length <= e.place.length);
          const b = readFileSync(pack);
          stored.copy(b, e.place.offset);
          writeFileSync(pack, b);
          e.kind = kind;
          e.place = { ...e.place, length: stored.length };
          target = e;
        });
        assert.ok(target);
      } finally {
        keys.dispose();
      }
    })();
    await expectFailure(nginx.url(url), 'EBADBLOCK', 5, /does not match its id/);
  });

  it('blocks of another image swapped in: EBADBLOCK (5)', async () => {
    const other = join(t.path, 'other');
    const p = r.medv(['image', 'pack', r.v1, '--name', 'lab9', '--version', '1', '--out', other, '--keys', r.keys]);
    assert.equal(p.code, 0, p.stderr);
    const url = await makeCase('swap', (_i, pack) => {
      const mine = readFileSync(pack);
      const theirs = readFileSync(join(other, 'lab9_1.ckm'));
      assert.equal(theirs.length, mine.length);
      theirs.copy(mine, 64, 64);
      writeFileSync(pack, mine);
    })();
    await expectFailure(nginx.url(url), 'EBADBLOCK', 5, /does not authenticate/);
  });

  it('a server that answers a pack range with the wrong Content-Range: EBADREPLY (5)', async () => {
    const server: Server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
      const file = join(r.repo, path);
      let size: number;
      try { size = statSync(file).size; } catch { res.writeHead(404).end(); return; }
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (!m) { res.writeHead(416).end(); return; }
      let start = Number(m[1]);
      let end = Math.min(Number(m[2]), size - 1);
      if (path.endsWith('.ckm')) { start += 1; end += 1; } // off by one, as a broken cache might
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
      createReadStream(file, { start, end }).pipe(res);
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    try {
      const port = (server.address() as { port: number }).port;
      await expectFailure(`http://127.0.0.1:${port}/lab_1.ckm.index`, 'EBADREPLY', 5, /wrong Content-Range/);
    } finally {
      await new Promise((res) => server.close(res));
    }
  });

  it('a pack that changes during the fetch (another ETag): ECHANGED (10), versions never mixed', async () => {
    let packRequests = 0;
    const server: Server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
      const file = join(r.repo, path);
      let size: number;
      try { size = statSync(file).size; } catch { res.writeHead(404).end(); return; }
      const etag = path.endsWith('.ckm') && packRequests++ >= 2 ? '"second"' : '"first"';
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (!m) { res.writeHead(416, { etag }).end(); return; }
      const start = Number(m[1]);
      const end = Math.min(Number(m[2]), size - 1);
      res.writeHead(206, { etag, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
      createReadStream(file, { start, end }).pipe(res);
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    try {
      const port = (server.address() as { port: number }).port;
      await expectFailure(`http://127.0.0.1:${port}/lab_1.ckm.index`, 'ECHANGED', 10, /changed during the transfer/);
    } finally {
      await new Promise((res) => server.close(res));
    }
  });

  it('a repository that is not there: EHTTP (10)', async () => {
    await expectFailure(nginx.url('nothing/lab_1.ckm.index'), 'EHTTP', 10, /not found/);
  });
});

/**
 * An interrupted fetch resumes: the `medv image fetch` process is SIGKILLed at several points
 * (chosen by what nginx's access log shows, never by sleeps) and nginx itself is stopped and
 * started again during a fetch. Each restart completes, the disk equals the source, nothing is
 * ever visible under the output name before the end, and all runs together move < 1.1x the bytes
 * of one uninterrupted fetch.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { type AccessLine, type Nginx, startNginx } from '../helpers/nginx.js';
import { type Repo, makeRepo, spawnFetch } from './fixture.js';

function finished(c: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  c.stdout!.on('data', (d) => { stdout += d; });
  c.stderr!.on('data', (d) => { stderr += d; });
  return new Promise((res) => c.once('close', (code, signal) => res({ code, signal, stdout, stderr })));
}

const packLines = (lines: AccessLine[]) => lines.filter((l) => l.uri === '/lab_1.ckm').length;

describe('transfer: an interrupted fetch resumes', function () {
  this.timeout(180_000);
  const t = tempDir('fetch-resume');
  let r: Repo;
  let nginx: Nginx;
  let uninterrupted = 0;
  let packRequests = 0;

  before(async () => {
    r = makeRepo(t.path, 48, 0.8, 51);
    nginx = await startNginx(join(t.path, 'nginx'), r.repo);
  });
  after(async () => {
    await nginx?.stop();
    await t.cleanup();
  });

  it('one uninterrupted fetch (the reference)', async () => {
    nginx.resetLog();
    const res = await finished(spawnFetch(r, [nginx.url('lab_1.ckm.index'), '--out', join(t.path, 'ref.evhd')]));
    assert.equal(res.code, 0, res.stderr);
    uninterrupted = nginx.bytes();
    packRequests = packLines(nginx.log());
    assert.ok(packRequests >= 20, `only ${packRequests} pack requests: the image is too small for this test`);
  });

  it('killed (SIGKILL) three times and nginx restarted once: completes, identical, < 1.1x the bytes', async () => {
    const out = join(t.path, 'v1.evhd');
    nginx.resetLog();
    const args = [nginx.url('lab_1.ckm.index'), '--out', out];
    // the points: while the index is fetched, early in the pack, past a third of it
    const points: Array<(l: AccessLine[]) => boolean> = [
      (l) => l.some((x) => x.uri === '/lab_1.ckm.index'),
      (l) => packLines(l) >= 3,
      (l) => packLines(l) >= Math.floor(packRequests / 3),
    ];
    for (const point of points) {
      const c = spawnFetch(r, args);
      const done = finished(c);
      await nginx.waitFor(point);
      c.kill('SIGKILL');
      const res = await done;
      assert.ok(res.signal === 'SIGKILL' || res.code === 0, `fetch ended with ${res.code}: ${res.stderr}`);
      if (res.code === 0) break;
      assert.ok(!existsSync(out), 'a killed fetch left a file under the output name');
    }
    if (!existsSync(out)) {
      // the last run: nginx is stopped (connections dropped) and started again during it
      const c = spawnFetch(r, args);
      const done = finished(c);
      const before = packLines(nginx.log());
      await nginx.waitFor((l) => packLines(l) >= before + 5);
      await nginx.stop();
      await nginx.start();
      const res = await done;
      assert.equal(res.code, 0, res.stderr);
      const j = JSON.parse(res.stdout);
      assert.ok(j.blocksResumed > 0, 'the last run resumed from what the killed ones wrote');
    }
    assert.ok(r.sameAs(out, r.v1), 'the resumed disk differs from the source');
    const total = nginx.bytes();
    console.log(`      interrupted runs together: ${total} B; one uninterrupted fetch: ${uninterrupted} B; ratio ${(total / uninterrupted).toFixed(3)}`);
    assert.ok(total < 1.1 * uninterrupted, `${total} bytes against ${uninterrupted}`);
  });
});

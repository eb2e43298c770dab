import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReportQueue, openClientRoot, type ClientRoot, type QueuedReport } from '../../src/repo/index.js';
import { MedvError } from '../../src/core/errors.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
const report = (i: number): QueuedReport => ({ workspace: 'Win7', version: i, state: 'running', at: new Date(1_800_000_000_000 + i * 1000).toISOString() });

describe('repo: report queue', () => {
  let dir: string;
  let c: ClientRoot;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-reports-')); c = openClientRoot(join(dir, 'root')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('keeps at most 256 reports (oldest dropped), sealed in data/Users/<user>/Reports.dat', async () => {
    const q = new ReportQueue(c, 'alice');
    for (let i = 1; i <= 300; i++) await q.add(report(i));
    const list = await q.list();
    assert.equal(list.length, 256);
    assert.equal(list[0].version, 45);
    assert.equal(list[255].version, 300);
    const file = join(c.users, 'alice', 'Reports.dat');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(file).indexOf('Win7'), -1);
    // a fresh queue object sees the same
    assert.equal((await new ReportQueue(c, 'alice').list()).length, 256);
    await assert.rejects(q.add({ ...report(1), state: 'exploded' as QueuedReport['state'] }), code('EINVAL_ARG'));
  });

  it('drain sends batches of at most 64 and keeps what failed to send', async () => {
    const q = new ReportQueue(c, 'bob');
    for (let i = 1; i <= 150; i++) await q.add(report(i));
    const batches: number[][] = [];
    let calls = 0;
    const { sent } = await q.drain(async (rs) => {
      calls++;
      if (calls === 2) throw new Error('offline');
      batches.push(rs.map((r) => r.version!));
    });
    assert.equal(sent, 64);
    assert.equal(batches.length, 1);
    assert.deepEqual(batches[0], Array.from({ length: 64 }, (_, i) => i + 1));
    const left = await q.list();
    assert.equal(left.length, 86);
    assert.equal(left[0].version, 65);
    // back online: everything goes, in order, in batches of ≤ 64
    const sizes: number[] = [];
    assert.equal((await q.drain(async (rs) => { sizes.push(rs.length); })).sent, 86);
    assert.deepEqual(sizes, [64, 22]);
    assert.deepEqual(await q.list(), []);
    assert.equal((await q.drain(async () => { throw new Error("never called"); })).sent, 0);
  });

  it('a batch the server refuses as invalid is sent again report by report; only the refused report is dropped, the rest go', async () => {
    const q = new ReportQueue(c, 'erin');
    for (let i = 1; i <= 70; i++) await q.add(report(i));
    const stored: number[] = [];
    const refusedOnes: number[] = [];
    const refused = (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG';
    const r = await q.drain(async (rs) => {
      if (rs.some((x) => x.version === 5)) throw new MedvError('EINVAL_ARG', 'reports[4].at is more than a day ahead');
      stored.push(...rs.map((x) => x.version!));
    }, { refused, onDropped: (d) => refusedOnes.push(d.version!) });
    assert.deepEqual(r, { sent: 69, dropped: 1 });
    assert.deepEqual(refusedOnes, [5]);
    assert.equal(stored.length, 69);
    assert.deepEqual(await q.list(), []);
    // a failure that is not a refusal keeps everything for the next drain
    for (let i = 1; i <= 3; i++) await q.add(report(i));
    assert.deepEqual(await q.drain(async () => { throw new MedvError('ENETWORK', 'down'); }, { refused }), { sent: 0, dropped: 0 });
    assert.equal((await q.list()).length, 3);
  });

  it('a report added while a drain is sending is kept', async () => {
    const q = new ReportQueue(c, 'carol');
    await q.add(report(1));
    const { sent } = await q.drain(async () => { await q.add(report(2)); });
    assert.equal(sent, 1);
    assert.deepEqual((await q.list()).map((r) => r.version), [2]);
  });

  it('a tampered queue file is ECORRUPT', async () => {
    const q = new ReportQueue(c, 'dave');
    await q.add(report(1));
    const file = join(c.users, 'dave', 'Reports.dat');
    const b = fs.readFileSync(file); b[b.length - 1] ^= 1; fs.writeFileSync(file, b);
    await assert.rejects(q.list(), code('ECORRUPT'));
  });
});

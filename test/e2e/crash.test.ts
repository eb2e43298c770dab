/**
 * Crash safety of the served disk stack: `medv disk serve` is killed with SIGKILL at random points
 * while a client writes. Every write acknowledged before an acknowledged FLUSH must be present
 * afterwards (or overwritten by a later write of ours), and `medv disk check` must pass.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { openDisk } from '../../src/layers/open.js';
import { prng } from '../conformance/blockdevice.js';
import { NbdClient } from '../helpers/nbd-client.js';
import { runMedv, startMedv, tempDir, TEST_PASSPHRASE } from '../helpers/cli.js';

const UNIT = 4096;
const kek = () => ({ kind: 'passphrase' as const, passphrase: TEST_PASSPHRASE });

function blockData(round: number, seq: number, block: number): Buffer {
  const b = Buffer.alloc(UNIT);
  for (let i = 0; i < UNIT; i += 16) {
    b.writeUInt32BE(round, i); b.writeUInt32BE(seq, i + 4); b.writeUInt32BE(block, i + 8); b.writeUInt32BE(0xc0ffee, i + 12);
  }
  return b;
}

/** `check` is the file that holds the writes: the disk itself, or the undo disk. */
interface Scenario { name: string; file: string; create: string[]; serve: (sock: string) => string[]; check: string; rounds: number }

describe('e2e: crash safety of medv disk serve (SIGKILL)', function () {
  this.timeout(600_000);
  let dir: ReturnType<typeof tempDir>;
  before(() => { dir = tempDir('crash'); });
  after(() => dir.cleanup());

  const scenarios: Scenario[] = [
    { name: 'encrypted dynamic VHD (.evhd)', file: 'disk.evhd', create: ['--size', '64M', '--type', 'dynamic'], serve: (s) => ['--socket', s], check: 'disk.evhd', rounds: 20 },
    { name: 'undo disk over a dynamic VHD', file: 'base.vhd', create: ['--size', '64M', '--type', 'dynamic'], serve: (s) => ['--socket', s, '--undo', join(dir.path, 'undo.vhd')], check: 'undo.vhd', rounds: 8 },
  ];

  for (const sc of scenarios) {
    it(`${sc.name}: ${sc.rounds} rounds, every flushed write survives and check passes`, async () => {
      const disk = join(dir.path, sc.file);
      assert.equal(runMedv(['disk', 'create', disk, ...sc.create]).code, 0);
      const blocks = 64 * 1024 * 1024 / UNIT;
      // For each block: the value certainly durable, and values written since (any may be present).
      const durable = new Map<number, Buffer>();
      const rnd = prng(7);
      let seq = 0;
      for (let round = 1; round <= sc.rounds; round++) {
        const sock = join(dir.path, `s${round}.sock`);
        const server: ChildProcess = await startMedv(['disk', 'serve', disk, ...sc.serve(sock)]);
        const client = await NbdClient.connect(sock);
        const maybe = new Map<number, Buffer[]>();
        const killAfter = 20 + Math.floor(rnd() * 400);
        const killed = new Promise<void>((res) => server.once('exit', () => res()));
        const timer = setTimeout(() => server.kill('SIGKILL'), killAfter);
        try {
          for (;;) {
            // Requests in flight together have no order in NBD, so a batch touches distinct blocks.
            const batch = new Map<number, Buffer>();
            const n = 1 + Math.floor(rnd() * 16);
            for (let i = 0; i < n; i++) {
              // Mostly a hot region (overwrites), sometimes anywhere (allocations).
              const block = rnd() < 0.7 ? Math.floor(rnd() * 256) : Math.floor(rnd() * blocks);
              batch.set(block, blockData(round, ++seq, block));
            }
            for (const [b, d] of batch) { const l = maybe.get(b) ?? []; l.push(d); maybe.set(b, l); }
            await Promise.all([...batch].map(([b, d]) => client.write(b * UNIT, d)));
            await client.flush();
            // Acknowledged flush: the last write per block is now durable.
            for (const [b, d] of batch) durable.set(b, d);
            for (const [b] of batch) maybe.delete(b);
          }
        } catch {
          // the server died under us: expected
        } finally {
          clearTimeout(timer);
          server.kill('SIGKILL');
          await killed;
          await client.disconnect().catch(() => undefined);
        }
        const check = runMedv(['disk', 'check', join(dir.path, sc.check)]);
        assert.equal(check.code, 0, `round ${round}: check failed: ${check.stdout}${check.stderr}`);
        const opened = await openDisk(join(dir.path, sc.check), { readOnly: true, kek });
        try {
          for (const [b, want] of durable) {
            const got = await opened.device.read(b * UNIT, UNIT);
            const ok = got.equals(want) || (maybe.get(b) ?? []).some((m) => got.equals(m));
            assert.ok(ok, `round ${round}: block ${b} lost an acknowledged, flushed write`);
            if (!got.equals(want)) durable.set(b, got);
          }
          // Unflushed writes that did land become the new reference for their block.
          for (const [b, list] of maybe) {
            if (durable.has(b)) continue;
            const got = await opened.device.read(b * UNIT, UNIT);
            const hit = list.find((m) => got.equals(m));
            if (hit) durable.set(b, hit);
          }
        } finally {
          await opened.device.close();
        }
      }
    });
  }
});

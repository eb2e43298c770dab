/**
 * `medv disk serve` as users run it (a separate process, real qemu-img / qemu-io as NBD clients):
 * exports equal their source, qemu-io writes land — in the undo disk when one is given.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { openDisk } from '../../src/layers/open.js';
import { run, runMedv, sha256File, startMedv, tempDir, TEST_PASSPHRASE } from '../helpers/cli.js';

const kek = () => ({ kind: 'passphrase' as const, passphrase: TEST_PASSPHRASE });
const MiB = 1024 * 1024;

async function stop(server: ChildProcess): Promise<void> {
  const exited = new Promise((res) => server.once('exit', res));
  server.kill('SIGTERM');
  await exited;
}

async function readDisk(path: string, offset: number, length: number): Promise<Buffer> {
  const d = await openDisk(path, { readOnly: true, kek });
  try { return await d.device.read(offset, length); } finally { await d.device.close(); }
}

describe('cli: medv disk serve with qemu-img and qemu-io', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let raw: string;
  let evhd: string;
  beforeEach(() => {
    dir = tempDir('serve');
    raw = join(dir.path, 'src.raw');
    writeFileSync(raw, Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(3 * MiB)]));
    evhd = join(dir.path, 'disk.evhd');
    assert.equal(runMedv(['disk', 'convert', raw, evhd]).code, 0);
  });
  afterEach(() => dir.cleanup());

  it('qemu-img convert from a read-only export of an .evhd equals the source', async () => {
    const sock = join(dir.path, 's');
    const server = await startMedv(['disk', 'serve', evhd, '--socket', sock, '--read-only']);
    try {
      const out = join(dir.path, 'out.raw');
      run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///?socket=${sock}`, out]);
      const src = readFileSync(raw);
      assert.ok(readFileSync(out).subarray(0, src.length).equals(src));
      const refused = run('sh', ['-c', `qemu-io -f raw -c 'write -P 0xab 0 4k' 'nbd+unix:///?socket=${sock}' 2>&1 || true`]);
      assert.match(refused, /read.only|Permission|not permitted|failed/i);
    } finally {
      await stop(server);
    }
  });

  it('qemu-io writes land in the served .evhd', async () => {
    const sock = join(dir.path, 's');
    const server = await startMedv(['disk', 'serve', evhd, '--socket', sock]);
    try {
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0xcd 4096000 512', `nbd+unix:///?socket=${sock}`]);
    } finally {
      await stop(server);
    }
    assert.ok((await readDisk(evhd, MiB, 65536)).equals(Buffer.alloc(65536, 0xab)));
    assert.ok((await readDisk(evhd, 4096000, 512)).equals(Buffer.alloc(512, 0xcd)));
    assert.equal(runMedv(['disk', 'check', evhd]).code, 0);
  });

  it('with --undo, qemu-io writes land in the undo disk and the base is untouched', async () => {
    const undo = join(dir.path, 'undo.evhd');
    const before = sha256File(evhd);
    const sock = join(dir.path, 's');
    const server = await startMedv(['disk', 'serve', evhd, '--socket', sock, '--undo', undo]);
    try {
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0xcd 6M 4k', `nbd+unix:///?socket=${sock}`]);
    } finally {
      await stop(server);
    }
    assert.equal(sha256File(evhd), before, 'the base .evhd is byte-for-byte unchanged');
    assert.ok((await readDisk(undo, MiB, 65536)).equals(Buffer.alloc(65536, 0xab)));
    assert.ok((await readDisk(undo, 6 * MiB, 4096)).equals(Buffer.alloc(4096, 0xcd)));
    const src = readFileSync(raw);
    assert.ok((await readDisk(evhd, MiB, 65536)).equals(src.subarray(MiB, MiB + 65536)), 'the base still reads the old data');
    const info = JSON.parse(runMedv(['disk', 'info', undo, '--json']).stdout);
    assert.equal(info.type, 'differencing');
    assert.equal(runMedv(['disk', 'undo', 'merge', undo]).code, 0);
    assert.ok((await readDisk(evhd, MiB, 65536)).equals(Buffer.alloc(65536, 0xab)), 'merged into the base');
  });
});

/**
 * The socket file of `medv disk serve`: never reachable by others, even for a moment, and refused
 * before anything is created when its path does not fit a unix socket address.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, runMedv, startMedv, tempDir } from '../helpers/cli.js';

/**
 * An observer in another process: lists `dir` and lstat()s every entry in a tight loop until
 * `stopFile` appears, then prints every mode it saw for sockets and directories.
 */
const WATCHER = `
import json, os, stat, sys
d, stop = sys.argv[1], sys.argv[2]
seen = {}
loops = 0
print('ready', flush=True)
while not os.path.exists(stop):
    loops += 1
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        continue
    for n in names:
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode):
            key = ('sock ' if stat.S_ISSOCK(st.st_mode) else 'dir ') + ('private' if n.startswith('.medv-nbd-') else n)
            seen.setdefault(key, set()).add(oct(st.st_mode & 0o777))
        if stat.S_ISDIR(st.st_mode):
            try:
                for m in os.listdir(p):
                    st2 = os.lstat(os.path.join(p, m))
                    seen.setdefault('inside ' + m, set()).add(oct(st2.st_mode & 0o777))
            except (FileNotFoundError, PermissionError):
                pass
print()
print(json.dumps({'loops': loops, 'seen': {k: sorted(v) for k, v in seen.items()}}))
`;

async function stopServer(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  return exited;
}

describe('cli: medv disk serve socket file', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let disk: string;
  beforeEach(() => {
    dir = tempDir('serve-sock');
    disk = join(dir.path, 'd.raw');
    writeFileSync(disk, Buffer.alloc(1 << 20, 7));
  });
  afterEach(() => dir.cleanup());

  it('under umask 000 in a shared (0777) folder the socket is never seen with group/other bits, and ends 0600', async () => {
    const shared = join(dir.path, 'shared');
    run('mkdir', [shared]);
    chmodSync(shared, 0o777);
    const stop = join(dir.path, 'stop');
    const watcher = spawn('python3', ['-c', WATCHER, shared, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    watcher.stdout!.on('data', (d) => { out += d; });
    const watched = new Promise<void>((r) => watcher.once('exit', () => r()));
    await new Promise<void>((r) => { const check = () => (out.includes('ready') ? r() : watcher.stdout!.once('data', check)); check(); });
    const sock = join(shared, 'nbd.sock');
    const old = process.umask(0o000); // the child inherits it
    let server: ChildProcess;
    try {
      server = await startMedv(['disk', 'serve', disk, '--socket', sock, '--read-only']);
    } finally {
      process.umask(old);
    }
    try {
      assert.equal(statSync(sock).mode & 0o777, 0o600);
      assert.ok(statSync(sock).isSocket());
      assert.match(run('qemu-img', ['info', `nbd+unix:///?socket=${sock}`]), /virtual size: 1 MiB/);
      assert.deepEqual(readdirSync(shared), ['nbd.sock'], 'no private directory left behind');
    } finally {
      writeFileSync(stop, '');
      await watched;
      assert.equal(await stopServer(server), 0);
    }
    const seen = JSON.parse(out.split('\n').filter(Boolean).pop()!) as { loops: number; seen: Record<string, string[]> };
    console.log(`      watcher: ${seen.loops} passes, saw ${JSON.stringify(seen.seen)}`);
    assert.ok(seen.seen['sock nbd.sock'], 'the watcher saw the socket');
    for (const [what, modes] of Object.entries(seen.seen)) {
      if (what.startsWith('sock ') || what.startsWith('dir ')) {
        for (const m of modes) assert.equal(Number(m) & 0o077, 0, `${what} seen with mode ${m}`);
      }
    }
    assert.ok(!existsSync(sock), 'the socket is removed on exit');
  });

  it('refuses a socket path over 107 bytes with EINVAL_ARG before creating anything; 107 bytes work', async () => {
    const long = join(dir.path, 'x'.repeat(120 - dir.path.length));
    assert.ok(Buffer.byteLength(long) > 107);
    const before = readdirSync(dir.path).sort();
    const r = runMedv(['disk', 'serve', disk, '--socket', long, '--undo', join(dir.path, 'undo.vhd')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /socket path is \d+ bytes.*\[EINVAL_ARG\]/);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line on stderr');
    assert.deepEqual(readdirSync(dir.path).sort(), before, 'nothing created (no undo disk, no truncated socket)');

    const fits = join(dir.path, 'y'.repeat(107 - dir.path.length - 1));
    assert.equal(Buffer.byteLength(fits), 107);
    const server = await startMedv(['disk', 'serve', disk, '--socket', fits, '--read-only']);
    try {
      assert.ok(statSync(fits).isSocket());
      assert.match(run('qemu-img', ['info', `nbd+unix:///?socket=${fits}`]), /virtual size: 1 MiB/);
    } finally {
      assert.equal(await stopServer(server), 0);
    }
  });
});

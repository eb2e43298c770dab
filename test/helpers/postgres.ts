/**
 * A real PostgreSQL for tests: Debian's `postgresql` package (scripts/setup.sh installs it), a
 * fresh cluster made with initdb in a temp folder, listening only on a unix socket in that folder
 * (no TCP port to collide with), trust authentication for its one role. Run as the `postgres`
 * user when the tests run as root (initdb refuses root). stop() shuts it down and removes the folder.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export interface Postgres {
  /** The cluster's folder (data in `data/`, the socket beside it). */
  dir: string;
  dataDir: string;
  /** A new empty database; returns its URL (unix socket, no password). */
  createDatabase(name: string): string;
  /** Run SQL with psql in database `db` (the name in a URL from createDatabase); returns psql's unaligned output. */
  sql(db: string, query: string): string;
  stop(): Promise<void>;
}

export function postgresBinDir(): string | undefined {
  const r = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const fromConfig = r.status === 0 ? r.stdout.trim() : '';
  if (fromConfig && existsSync(join(fromConfig, 'initdb'))) return fromConfig;
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(base, versions[0], 'bin') : undefined;
}

const ROLE = 'medv';

export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (Debian package postgresql; scripts/setup.sh installs it)');
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), 'medv-pg-'));
  const dataDir = join(dir, 'data');
  let pgUid = userInfo().uid;
  let pgGid = userInfo().gid;
  if (asRoot) {
    const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    if (id.status !== 0) throw new Error('running as root, but there is no postgres user to run PostgreSQL as');
    pgUid = Number(id.stdout);
    pgGid = Number(gid.stdout);
    chownSync(dir, pgUid, pgGid); // mkdtemp made it 0700: only the postgres user (and root) enter it
  }
  const run = (tool: string, args: string[]) => {
    const cmd = asRoot ? 'runuser' : join(bin, tool);
    const argv = asRoot ? ['-u', 'postgres', '--', join(bin, tool), ...args] : args;
    const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: dir, timeout: 60_000 });
    if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  try {
    run('initdb', ['-D', dataDir, '-U', ROLE, '-A', 'trust', '--no-sync', '-E', 'UTF8', '--no-locale']);
    // unix socket in our folder only (no TCP); fsync off: a test cluster need not survive a power cut
    run('pg_ctl', ['start', '-D', dataDir, '-w', '-t', '60', '-l', join(dir, 'log'), '-o', `-c listen_addresses= -k ${dir} -F -c max_connections=60`]);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let n = 0;
  return {
    dir,
    dataDir,
    createDatabase(name: string) {
      const db = `${name}_${++n}`.replace(/[^a-z0-9_]/gi, '_').toLowerCase();
      run('psql', ['-h', dir, '-U', ROLE, '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-q', '-c', `create database ${db}`]);
      return `postgresql://${ROLE}@localhost/${db}?host=${encodeURIComponent(dir)}`;
    },
    sql(db: string, query: string) {
      return run('psql', ['-h', dir, '-U', ROLE, '-d', db, '-v', 'ON_ERROR_STOP=1', '-q', '-A', '-t', '-c', query]);
    },
    async stop() {
      try { run('pg_ctl', ['stop', '-D', dataDir, '-m', 'fast', '-w']); } finally { rmSync(dir, { recursive: true, force: true }); }
    },
  };
}

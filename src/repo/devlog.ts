/**
 * The device log, data/Local/Logs/devlog.log: what the client did (starts, stops, updates, errors),
 * readable only with the host key. Each record is sealed on its own:
 *
 *   "MDL1"  u32 big-endian length L  |  nonce (24)  ciphertext of the record's JSON + tag (16)   (L = 24 + JSON + 16)
 *
 * under deriveSubkey(host key, "devlog") with associated data "devlog". A framed record is at most
 * 64 KiB (a longer message is cut, its fields dropped). Appends are one write(2) on an O_APPEND
 * descriptor, so writers in several processes interleave whole records. When the next record would
 * take devlog.log past maxBytes it is rotated: devlog.log.<keep-1> -> .<keep> (the oldest is
 * replaced), …, devlog.log -> devlog.log.1; a writer whose descriptor no longer is devlog.log
 * (another process rotated) reopens it before writing.
 *
 * Reading is oldest file first. A record that does not authenticate or parse, or bytes that are
 * not a record, are reported as one 'warn' record (with file and offset) and skipped: the reader
 * finds the next "MDL1" and goes on.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { renameSync } from '../core/fsio.js';
import type { KekSource } from '../crypto/kekenv.js';
import { secureFree, secureSeal } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';
import { deriveSubkey } from './hostkey.js';
import { type ClientRoot, checkSafeDir } from './paths.js';

export interface LogRecord { at: string; level: 'info' | 'warn' | 'error'; message: string; fields?: Record<string, unknown> }

export const DEVLOG_FILE = 'devlog.log';
export const DEVLOG_MAX_RECORD = 64 * 1024;
export const DEVLOG_DEFAULT_MAX_BYTES = 1024 * 1024;
export const DEVLOG_DEFAULT_KEEP = 4;
const MAGIC = Buffer.from('MDL1', 'latin1');
const PURPOSE = 'devlog';
const AD = Buffer.from(PURPOSE, 'latin1');
const FRAME = 8;
const NONCE = 24;
const TAG = 16;
const MAX_BODY = DEVLOG_MAX_RECORD - FRAME;
const MIN_BODY = NONCE + TAG + 2; // "{}"
const MAX_PLAIN = MAX_BODY - NONCE - TAG;
const MESSAGE_CUT = 4096;
const LEVELS = ['info', 'warn', 'error'] as const;
const ROTATED_RE = /^devlog\.log\.([1-9][0-9]?)$/; // keep is at most 99

const O_APPEND_OPEN = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
const O_READ = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

function jsonOf(rec: LogRecord): string {
  const replacer = (_k: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);
  let text: string;
  try { text = JSON.stringify(rec, replacer); } catch { text = JSON.stringify({ ...rec, fields: { unserializable: true } }); }
  if (Buffer.byteLength(text, 'utf8') > MAX_PLAIN) {
    text = JSON.stringify({ at: rec.at, level: rec.level, message: rec.message.slice(0, MESSAGE_CUT), fields: { truncated: true } });
  }
  return text;
}

/** One framed, sealed record. */
function encodeRecord(key: Buffer, rec: LogRecord): Buffer {
  const plain = Buffer.from(jsonOf(rec), 'utf8');
  const body = NONCE + plain.length + TAG;
  const out = Buffer.alloc(FRAME + body);
  MAGIC.copy(out, 0);
  out.writeUInt32BE(body, 4);
  randomBytes(NONCE).copy(out, FRAME);
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(FRAME + NONCE), plain, AD, null, out.subarray(FRAME, FRAME + NONCE), key);
  plain.fill(0);
  return out;
}

export class DevLog {
  private fd: number | undefined;
  private closed = false;
  /** Appends that failed (the log never throws into its caller); the last failure's message. */
  failures = 0;
  lastError: string | undefined;

  private constructor(private readonly dir: string, private readonly key: Buffer, private readonly maxBytes: number, private readonly keep: number) {}

  get path(): string { return join(this.dir, DEVLOG_FILE); }

  static async open(c: ClientRoot, kek: KekSource, o: { maxBytes?: number; keep?: number } = {}): Promise<DevLog> {
    const maxBytes = o.maxBytes ?? DEVLOG_DEFAULT_MAX_BYTES;
    const keep = o.keep ?? DEVLOG_DEFAULT_KEEP;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < DEVLOG_MAX_RECORD || maxBytes > 1 << 30) throw new MedvError('EINVAL_ARG', `devlog maxBytes must be ${DEVLOG_MAX_RECORD}..${1 << 30}`);
    if (!Number.isSafeInteger(keep) || keep < 1 || keep > 99) throw new MedvError('EINVAL_ARG', 'devlog keep must be 1..99');
    checkSafeDir(c.logs);
    const key = await deriveSubkey(kek, PURPOSE);
    secureSeal(key);
    const log = new DevLog(c.logs, key, maxBytes, keep);
    log.reopen();
    return log;
  }

  private reopen(): void {
    if (this.fd !== undefined) { try { fs.closeSync(this.fd); } catch { /* already gone */ } this.fd = undefined; }
    const fd = fs.openSync(this.path, O_APPEND_OPEN, 0o600);
    if (!fs.fstatSync(fd).isFile()) { fs.closeSync(fd); throw new MedvError('EUNSAFE', 'the device log is not a regular file', { file: this.path }); }
    this.fd = fd;
  }

  /** Size of devlog.log, reopening it first when our descriptor is no longer that file (rotated by another writer). */
  private currentSize(): number {
    let st: fs.Stats | undefined;
    try { st = fs.lstatSync(this.path); } catch { st = undefined; }
    const mine = this.fd !== undefined ? fs.fstatSync(this.fd) : undefined;
    if (!st || !mine || st.ino !== mine.ino || st.dev !== mine.dev) {
      this.reopen();
      return fs.fstatSync(this.fd!).size;
    }
    return mine.size;
  }

  private rotate(): void {
    const name = (i: number) => join(this.dir, i === 0 ? DEVLOG_FILE : `${DEVLOG_FILE}.${i}`);
    for (let i = this.keep - 1; i >= 0; i--) {
      try { renameSync(name(i), name(i + 1)); } catch (e) {
        if (!(e instanceof MedvError && e.code === 'ENOENT')) throw e;
      }
    }
    this.reopen();
  }

  /** Append one record (synchronous, one write). Never throws: a failure is counted in `failures`. */
  append(level: LogRecord['level'], message: string, fields?: Record<string, unknown>): void {
    if (this.closed) return;
    try {
      if (!LEVELS.includes(level)) throw new MedvError('EINVAL_ARG', `log level ${String(level)}`);
      const rec: LogRecord = { at: new Date().toISOString(), level, message: String(message) };
      if (fields !== undefined) rec.fields = fields;
      const bytes = encodeRecord(this.key, rec);
      const size = this.currentSize();
      if (size > 0 && size + bytes.length > this.maxBytes) this.rotate();
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(this.fd!, bytes, done, bytes.length - done);
    } catch (e) {
      this.failures++;
      this.lastError = (e as Error).message;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.fd !== undefined) { try { fs.closeSync(this.fd); } catch { /* ignore */ } this.fd = undefined; }
    secureFree(this.key);
  }
}

const warnRecord = (message: string, fields: Record<string, unknown>): LogRecord => ({ at: new Date().toISOString(), level: 'warn', message, fields });

function validRecord(v: unknown): v is LogRecord {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  const r = v as Record<string, unknown>;
  if (typeof r.at !== 'string' || typeof r.message !== 'string' || !LEVELS.includes(r.level as LogRecord['level'])) return false;
  if (r.fields !== undefined && (typeof r.fields !== 'object' || r.fields === null || Array.isArray(r.fields))) return false;
  return true;
}

/** Reads records from one open log file, from where it left off. */
class Cursor {
  private pending = Buffer.alloc(0);
  private pendingAt = 0; // file offset of pending[0]
  private damaged = false;
  readonly ino: number;
  readonly dev: number;

  constructor(readonly fd: number, readonly file: string, private readonly key: Buffer) {
    const st = fs.fstatSync(fd);
    this.ino = st.ino;
    this.dev = st.dev;
  }

  /** Records from the bytes available now; `final`: the file will not grow, leftover bytes are a truncated record. */
  *records(final: boolean): Generator<LogRecord> {
    const chunk = Buffer.alloc(256 * 1024);
    for (;;) {
      const n = fs.readSync(this.fd, chunk, 0, chunk.length, this.pendingAt + this.pending.length);
      if (n > 0) this.pending = Buffer.concat([this.pending, chunk.subarray(0, n)]);
      yield* this.parse();
      if (n === 0) break;
    }
    if (final && this.pending.length > 0) {
      if (!this.damaged) yield warnRecord('damaged log record skipped (truncated at end of file)', { file: this.file, offset: this.pendingAt });
      this.pendingAt += this.pending.length;
      this.pending = Buffer.alloc(0);
    }
  }

  private *parse(): Generator<LogRecord> {
    let off = 0;
    const p = this.pending;
    const damage = function* (this: Cursor, at: number, why: string): Generator<LogRecord> {
      if (!this.damaged) yield warnRecord(`damaged log record skipped (${why})`, { file: this.file, offset: this.pendingAt + at });
      this.damaged = true;
    }.bind(this);
    while (p.length - off >= FRAME) {
      if (!p.subarray(off, off + 4).equals(MAGIC)) {
        yield* damage(off, 'not a record');
        const next = p.indexOf(MAGIC, off + 1);
        if (next < 0) { off = p.length - (MAGIC.length - 1); break; }
        off = next;
        continue;
      }
      const len = p.readUInt32BE(off + 4);
      if (len < MIN_BODY || len > MAX_BODY) {
        yield* damage(off, `bad record length ${len}`);
        const next = p.indexOf(MAGIC, off + 1);
        if (next < 0) { off = p.length - (MAGIC.length - 1); break; }
        off = next;
        continue;
      }
      if (p.length - off < FRAME + len) break;
      const body = p.subarray(off + FRAME, off + FRAME + len);
      const plain = Buffer.alloc(len - NONCE - TAG);
      let ok = true;
      try {
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(plain, null, body.subarray(NONCE), AD, body.subarray(0, NONCE), this.key);
      } catch { ok = false; }
      let rec: unknown;
      if (ok) { try { rec = JSON.parse(plain.toString('utf8')); } catch { ok = false; } }
      if (ok && validRecord(rec)) {
        this.damaged = false;
        yield rec;
      } else {
        this.damaged = false;
        yield* damage(off, ok ? 'not a log record' : 'does not authenticate: damaged, or another host key');
        this.damaged = false;
      }
      off += FRAME + len;
    }
    off = Math.max(0, off);
    this.pending = Buffer.from(p.subarray(off));
    this.pendingAt += off;
  }

  close(): void { try { fs.closeSync(this.fd); } catch { /* ignore */ } }
}

/** Open a log file for reading: the fd, undefined when missing, or a warning when it is not a regular file. */
function openLog(path: string): number | undefined | LogRecord {
  let fd: number;
  try { fd = fs.openSync(path, O_READ); } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    return warnRecord(`log file skipped: ${code === 'ELOOP' ? 'a symlink' : (e as Error).message}`, { file: path });
  }
  if (!fs.fstatSync(fd).isFile()) { fs.closeSync(fd); return warnRecord('log file skipped: not a regular file', { file: path }); }
  return fd;
}

/**
 * The device log's records, oldest file first. `follow`: after the last record, wait for new ones
 * (following devlog.log across rotations) until `signal` aborts.
 */
export async function* readDevLog(c: ClientRoot, kek: KekSource, o: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<LogRecord> {
  checkSafeDir(c.logs);
  const key = await deriveSubkey(kek, PURPOSE);
  const cursors: Cursor[] = [];
  let watcher: fs.FSWatcher | undefined;
  try {
    const rotated: Array<{ n: number; name: string }> = [];
    for (const name of fs.readdirSync(c.logs)) {
      const m = ROTATED_RE.exec(name);
      if (m) rotated.push({ n: Number(m[1]), name });
    }
    rotated.sort((a, b) => b.n - a.n);
    const warnings: LogRecord[] = [];
    // Open every file first, so a rotation while we read neither skips nor repeats a file.
    for (const name of [...rotated.map((r) => r.name), DEVLOG_FILE]) {
      const path = join(c.logs, name);
      const fd = openLog(path);
      if (typeof fd === 'number') cursors.push(new Cursor(fd, path, key));
      else if (fd) warnings.push(fd);
    }
    for (const w of warnings) yield w;
    const livePath = join(c.logs, DEVLOG_FILE);
    let live = cursors.length && cursors[cursors.length - 1].file === livePath ? cursors.pop() : undefined;
    for (const cur of cursors.splice(0)) {
      try { yield* cur.records(true); } finally { cur.close(); }
    }
    if (!o.follow) {
      if (live) { try { yield* live.records(true); } finally { live.close(); } }
      return;
    }
    let dirty = false;
    let wake: (() => void) | undefined;
    watcher = fs.watch(c.logs, () => { dirty = true; wake?.(); });
    const wait = (): Promise<void> => new Promise((res) => {
      if (dirty || o.signal?.aborted) { res(); return; }
      const done = () => { clearTimeout(timer); o.signal?.removeEventListener('abort', done); wake = undefined; res(); };
      const timer = setTimeout(done, 1000);
      o.signal?.addEventListener('abort', done, { once: true });
      wake = done;
    });
    try {
      while (!o.signal?.aborted) {
        dirty = false;
        if (live) yield* live.records(false);
        let st: fs.Stats | undefined;
        try { st = fs.lstatSync(livePath); } catch { st = undefined; }
        if (live && (!st || st.ino !== live.ino || st.dev !== live.dev)) {
          // rotated (or removed): finish the old file, then follow the new devlog.log
          try { yield* live.records(true); } finally { live.close(); }
          live = undefined;
        }
        if (!live && st) {
          const fd = openLog(livePath);
          if (typeof fd === 'number') { live = new Cursor(fd, livePath, key); continue; }
        }
        await wait();
      }
    } finally {
      live?.close();
    }
  } finally {
    watcher?.close();
    for (const cur of cursors) cur.close();
    secureFree(key);
  }
}

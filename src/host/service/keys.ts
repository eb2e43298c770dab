/**
 * Keys in the host service, like ssh-agent or gpg-agent: never written anywhere, never a JS string.
 *
 * - **Unlocked** (`medv host unlock --for 10m`, POST /v1/keys/unlock): the passphrase, as the bytes
 *   the client sent, in sodium secure memory (guard pages, mlock, read-only) until
 *   `lock` or the time is up (a monotonic clock: setting the wall clock does not extend it). At
 *   unlock Argon2id runs once with a fresh salt (the session KEK); new key files (a suspend's
 *   `.vsv.enc`) are wrapped under it, so the resume needs no Argon2id; a key file with another
 *   salt (a disk's `.enc`) costs Argon2id once, and its KEK is kept while unlocked.
 * - **One-time handles** (POST /v1/keys): the passphrase of one command (`MEDV_PASSPHRASE`,
 *   `--passphrase-file`) for the request that names the handle, within HANDLE_TTL_MS; used once.
 *
 * A start gets a KekSource holding copies (secure memory) of the passphrase and of the KEKs its key
 * files need (./vms.ts); they travel to the supervisor as bytes (src/host/input.ts), never text.
 * A supervisor keeps its copy for its VM's lifetime (it needs it to suspend): `lock` does not reach
 * VMs that run already.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { MedvError } from '../../core/errors.js';
import { readBoundedSync } from '../../core/fsio.js';
import type { DerivedKek, KekSource, PassphraseSource } from '../../crypto/kekenv.js';

/** Longest an unlock may last. */
export const MAX_UNLOCK_MS = 24 * 3600_000;
/** How long a one-time handle waits for its request. */
export const HANDLE_TTL_MS = 60_000;
const MAX_HANDLES = 64;
/** Longest passphrase accepted. */
export const MAX_PASSPHRASE = 4096;
/** KEKs kept per unlock (one per key file salt met). */
const MAX_DERIVED = 64;
const KEYFILE_BYTES = 216;

type Crypto = typeof import('../../crypto/index.js') & { passphraseKek: typeof import('../../crypto/kek.js').passphraseKek };
let cryptoLoad: Promise<Crypto> | undefined;
/** The key code, loaded the first time a key is met (a service that never sees one starts faster). */
const crypto = (): Promise<Crypto> => (cryptoLoad ??= Promise.all([import('../../crypto/index.js'), import('../../crypto/kek.js')]).then(([c, k]) => ({ ...c, passphraseKek: k.passphraseKek })));

interface Unlocked {
  passphrase: Buffer; session: DerivedKek; derived: DerivedKek[]; until: number; timer: NodeJS.Timeout;
  /** Argon2id runs reading `passphrase` on the thread pool: it is freed only once they are done. */
  busy: number; locked: boolean;
}

export class KeyCache {
  private unlocked: Unlocked | undefined;
  private readonly handles = new Map<string, { passphrase: Buffer; until: number }>();

  /** Take the passphrase's bytes (they are wiped here), run Argon2id once, keep both for `ms`. */
  async unlock(bytes: Buffer, ms: number): Promise<{ until: Date }> {
    if (!Number.isSafeInteger(ms) || ms < 1000 || ms > MAX_UNLOCK_MS) throw new MedvError('EINVAL_ARG', `an unlock lasts 1 s to ${MAX_UNLOCK_MS / 3600_000} h`);
    const c = await crypto();
    const passphrase = this.secure(bytes, c);
    try {
      const salt = randomBytes(16);
      const { opslimit, memlimit } = c.DEFAULT_PWHASH;
      const key = await c.passphraseKek(passphrase, salt, opslimit, memlimit);
      this.lock();
      const timer = setTimeout(() => this.lock(), ms);
      timer.unref();
      c.secureSeal(passphrase);
      c.secureSeal(key);
      this.unlocked = { passphrase, session: { salt, opslimit, memlimit, key }, derived: [], until: performance.now() + ms, timer, busy: 0, locked: false };
    } catch (e) {
      c.secureFree(passphrase);
      throw e;
    }
    return { until: new Date(Date.now() + ms) };
  }

  /** Drop the cached passphrase and every KEK derived from it (zeroed, unmapped). */
  lock(): void {
    const u = this.unlocked;
    this.unlocked = undefined;
    if (!u) return;
    clearTimeout(u.timer);
    u.locked = true;
    if (u.busy === 0) void this.free(u);
  }

  private async free(u: Unlocked): Promise<void> {
    const c = await crypto();
    for (const b of [u.passphrase, u.session.key, ...u.derived.map((d) => d.key)]) c.secureFree(b);
  }

  /** Locked or until when; `derived`: the KEKs kept (the session's and one per key file salt met): Argon2id ran that often. */
  status(): { unlocked: boolean; expiresAt?: string; derived?: number } {
    const u = this.unlocked;
    if (!u) return { unlocked: false };
    return { unlocked: true, expiresAt: new Date(Date.now() + Math.max(0, u.until - performance.now())).toISOString(), derived: 1 + u.derived.length };
  }

  /** A one-time handle for this passphrase (its bytes are wiped here). */
  async handle(bytes: Buffer): Promise<{ handle: string; expiresAt: string }> {
    const c = await crypto();
    this.expireHandles(c);
    if (this.handles.size >= MAX_HANDLES) {
      const [oldest] = this.handles.keys();
      c.secureFree(this.handles.get(oldest)!.passphrase);
      this.handles.delete(oldest);
    }
    const handle = randomBytes(16).toString('hex');
    this.handles.set(handle, { passphrase: this.secure(bytes, c), until: performance.now() + HANDLE_TTL_MS });
    return { handle, expiresAt: new Date(Date.now() + HANDLE_TTL_MS).toISOString() };
  }

  /**
   * The KEK of one request: a handle's passphrase (the handle is used up), else the unlocked one
   * (with the KEKs of `keyFiles` derived and kept), else undefined. The caller owns the copies
   * and frees them with `release`.
   */
  async kekFor(handle: string | undefined, keyFiles: readonly string[]): Promise<PassphraseSource | undefined> {
    const c = await crypto();
    this.expireHandles(c);
    if (handle !== undefined) {
      const h = this.handles.get(handle);
      if (!h) throw new MedvError('ENOKEY', 'unknown or expired key handle (a handle is good for one request, within a minute)');
      this.handles.delete(handle);
      return { kind: 'passphrase', passphrase: h.passphrase };
    }
    const u = this.unlocked;
    if (!u) return undefined;
    for (const file of keyFiles) await this.derive(u, file, c);
    if (this.unlocked !== u) return this.kekFor(undefined, []); // locked (or unlocked again) meanwhile
    const copy = (b: Buffer) => { const out = c.secureAlloc(b.length); b.copy(out); return out; };
    const dup = (d: DerivedKek): DerivedKek => ({ salt: Buffer.from(d.salt), opslimit: d.opslimit, memlimit: d.memlimit, key: copy(d.key) });
    return { kind: 'passphrase', passphrase: copy(u.passphrase), derived: u.derived.map(dup), wrapWith: dup(u.session) };
  }

  /** Free the secure copies kekFor gave. */
  async release(kek: KekSource | undefined): Promise<void> {
    if (kek?.kind !== 'passphrase') return;
    const c = await crypto();
    if (typeof kek.passphrase !== 'string') c.secureFree(kek.passphrase);
    for (const d of [...(kek.derived ?? []), ...(kek.wrapWith ? [kek.wrapWith] : [])]) c.secureFree(d.key);
  }

  /** Argon2id for a key file's salt and cost, once per unlock (a file that is not a passphrase key file is skipped). */
  private async derive(u: Unlocked, file: string, c: Crypto): Promise<void> {
    let bytes: Buffer | undefined;
    try { bytes = readBoundedSync(file, KEYFILE_BYTES, 'key file'); } catch { return; }
    if (!bytes) return;
    let kek;
    try { kek = (await import('../../formats/keyfile.js')).parseKeyFile(bytes, file).kek; } catch { return; }
    if (kek.kind !== 'passphrase') return;
    const [opslimit, memlimit] = [Number(kek.opslimit), Number(kek.memlimit)];
    const known = [u.session, ...u.derived].some((d) => d.salt.equals(kek.salt) && d.opslimit === opslimit && d.memlimit === memlimit);
    if (known || u.derived.length >= MAX_DERIVED) return;
    u.busy++;
    let key: Buffer;
    try {
      key = await c.passphraseKek(u.passphrase, kek.salt, opslimit, memlimit);
    } finally {
      if (--u.busy === 0 && u.locked) void this.free(u);
    }
    if (u.locked) { c.secureFree(key); return; }
    c.secureSeal(key);
    u.derived.push({ salt: Buffer.from(kek.salt), opslimit, memlimit, key });
  }

  private secure(bytes: Buffer, c: Crypto): Buffer {
    try {
      if (bytes.length === 0) throw new MedvError('ENOKEY', 'an empty passphrase');
      if (bytes.length > MAX_PASSPHRASE) throw new MedvError('ETOOLARGE', `a passphrase of more than ${MAX_PASSPHRASE} bytes`);
      const out = c.secureAlloc(bytes.length);
      bytes.copy(out);
      return out;
    } finally {
      bytes.fill(0);
    }
  }

  private expireHandles(c: Crypto): void {
    const now = performance.now();
    for (const [k, h] of this.handles) if (h.until < now) { c.secureFree(h.passphrase); this.handles.delete(k); }
  }

  /** Everything dropped (the service stops). */
  async close(): Promise<void> {
    this.lock();
    const c = await crypto();
    for (const h of this.handles.values()) c.secureFree(h.passphrase);
    this.handles.clear();
  }
}

/**
 * Key release: how the server hands an image's keys to one client, and how the client opens them.
 * The format only (no file I/O), shared by the server (server/keyservice.ts, `POST
 * /api/workspaces/grant`) and the client (workspace/, which keeps what it opens with
 * client/keyfolder.ts).
 *
 * The client makes an X25519 key pair (crypto_box_keypair; it may keep the secret half as a
 * host-protected file and rebuild the pair with clientKeyPairFrom) and sends the public half with
 * its grant request. The server answers `sealed` = crypto_box_seal(plaintext, clientPublicKey):
 * an ephemeral X25519 key and XSalsa20-Poly1305, so only the holder of the secret half opens it,
 * and nothing in the answer is usable by anyone who only sees the traffic or the logs.
 *
 * The plaintext is one canonical JSON text (no whitespace, this field order, lowercase hex):
 *
 *   {"v":1,"image":"<image>","content":{"id":"<32 hex>","key":"<base64 of 64 bytes>"},
 *    "repository":{"id":"<32 hex>","key":"<base64 of 64 bytes>"},"signers":["<64 hex>",…]}
 *
 * (on one line). It is built and parsed byte by byte in sodium secure memory, so the key bytes
 * never become JavaScript strings on either side; anything but this exact form is EBADREPLY.
 * `content.id` is the image id (the key id of images/<image>.key.enc), `repository.id` the key id
 * of repository.key.enc, `signers` the Ed25519 public keys whose indexes the client may trust
 * (at most 16).
 */
import { MedvError } from '../core/errors.js';
import { DataKey, DATA_KEY_BYTES, KEY_ID_BYTES } from '../crypto/datakey.js';
import { secureAlloc, secureFree, secureSeal, redactInspect } from '../crypto/secure.js';
import { type Sodium, sodium as sodiumBase } from '../core/sodium.js';
import { IMAGE_NAME_RE } from './names.js';
import { base64DecodeInto, base64EncodeInto, base64Length, hexDecodeInto, hexEncodeInto } from './bytes.js';

/** The public-key functions of sodium-native, beside the subset src/crypto/sodium.ts types. */
const sodium = sodiumBase as Sodium & {
  crypto_box_PUBLICKEYBYTES: number;
  crypto_box_SECRETKEYBYTES: number;
  crypto_box_SEALBYTES: number;
  crypto_box_keypair(pk: Buffer, sk: Buffer): void;
  crypto_box_seal(c: Buffer, m: Buffer, pk: Buffer): void;
  crypto_box_seal_open(m: Buffer, c: Buffer, pk: Buffer, sk: Buffer): boolean;
  crypto_scalarmult_base(q: Buffer, n: Buffer): void;
};

const B64_LEN = base64Length(DATA_KEY_BYTES); // 88

const P_START = '{"v":1,"image":"';
const P_CONTENT = '","content":{"id":"';
const P_KEY = '","key":"';
const P_REPO = '"},"repository":{"id":"';
const P_SIGNERS = '"},"signers":[';
const P_END = ']}';

export const CLIENT_KEY_BYTES = 32;
export const SIGNER_BYTES = 32;
export const MAX_SIGNERS = 16;
/** Longest canonical plaintext: 64-character image name, 16 signers. */
export const MAX_RELEASE_PLAINTEXT = plaintextLength(64, MAX_SIGNERS);
/** Longest sealed answer a client accepts. */
export const MAX_SEALED = MAX_RELEASE_PLAINTEXT + sodium.crypto_box_SEALBYTES;

export interface ClientKeyPair {
  publicKey: Buffer;
  /** 32 bytes in sodium secure memory (read-only); zeroed by dispose(). */
  secretKey: Buffer;
  dispose(): void;
}

function pair(publicKey: Buffer, secretKey: Buffer): ClientKeyPair {
  secureSeal(secretKey);
  const p: ClientKeyPair = {
    publicKey,
    secretKey,
    dispose() { secureFree(secretKey); },
  };
  redactInspect(p, () => `ClientKeyPair { publicKey: ${publicKey.toString('hex')} }`);
  return p;
}

/** A new X25519 key pair (crypto_box_keypair); the secret half in secure memory. */
export function generateClientKeyPair(): ClientKeyPair {
  const pk = Buffer.alloc(sodium.crypto_box_PUBLICKEYBYTES);
  const sk = secureAlloc(sodium.crypto_box_SECRETKEYBYTES);
  sodium.crypto_box_keypair(pk, sk);
  return pair(pk, sk);
}

/** The pair of a saved 32-byte secret key (copied into secure memory; the caller keeps and wipes its own buffer). */
export function clientKeyPairFrom(secretKey32: Buffer): ClientKeyPair {
  if (!Buffer.isBuffer(secretKey32) || secretKey32.length !== sodium.crypto_box_SECRETKEYBYTES) {
    throw new MedvError('EINVAL_ARG', `a client secret key is ${sodium.crypto_box_SECRETKEYBYTES} bytes`);
  }
  const sk = secureAlloc(sodium.crypto_box_SECRETKEYBYTES);
  secretKey32.copy(sk);
  const pk = Buffer.alloc(sodium.crypto_box_PUBLICKEYBYTES);
  sodium.crypto_scalarmult_base(pk, sk);
  return pair(pk, sk);
}

export interface ReleasedImageKeys {
  image: string;
  content: DataKey;
  repository: DataKey;
  signers: Buffer[];
  dispose(): void;
}

export interface ImageKeySet {
  image: string;
  content: DataKey;
  repository: DataKey;
  signers: Buffer[];
}

// --- the canonical plaintext, byte by byte

function plaintextLength(imageLen: number, signers: number): number {
  return P_START.length + imageLen + P_CONTENT.length + 2 * KEY_ID_BYTES + P_KEY.length + B64_LEN
    + P_REPO.length + 2 * KEY_ID_BYTES + P_KEY.length + B64_LEN + P_SIGNERS.length
    + signers * (2 + 2 * SIGNER_BYTES) + Math.max(0, signers - 1) + P_END.length;
}

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  text(s: string): void { this.pos += this.buf.write(s, this.pos, 'latin1'); }
  hex(b: Buffer): void { this.pos = hexEncodeInto(b, this.buf, this.pos); }
  base64(b: Buffer): void { this.pos = base64EncodeInto(b, this.buf, this.pos); }
}

const bad = (what: string) => new MedvError('EBADREPLY', `the released keys are malformed: ${what}`);

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  expect(s: string, what: string): void {
    if (this.pos + s.length > this.buf.length || this.buf.toString('latin1', this.pos, this.pos + s.length) !== s) throw bad(`expected ${what}`);
    this.pos += s.length;
  }
  /** Bytes up to the next '"' (not consumed), at most `max`. */
  until(max: number, what: string): string {
    const end = this.buf.indexOf(0x22, this.pos);
    if (end < 0 || end - this.pos > max) throw bad(what);
    const s = this.buf.toString('latin1', this.pos, end);
    this.pos = end;
    return s;
  }
  hexInto(out: Buffer, what: string): void {
    if (!hexDecodeInto(this.buf.subarray(this.pos, this.pos + 2 * out.length), out, true)) throw bad(`${what} is not ${2 * out.length} lowercase hex digits`);
    this.pos += 2 * out.length;
  }
  /** Decode exactly out.length bytes of padded base64 into `out` (a secure buffer for keys). */
  base64Into(out: Buffer, what: string): void {
    const len = base64Length(out.length);
    if (!base64DecodeInto(this.buf.subarray(this.pos, this.pos + len), out)) throw bad(`${what} is not base64 of ${out.length} bytes`);
    this.pos += len;
  }
}

function checkSet(keys: ImageKeySet): void {
  if (typeof keys.image !== 'string' || !IMAGE_NAME_RE.test(keys.image)) throw new MedvError('EINVAL_ARG', 'image name is not valid');
  if (!Array.isArray(keys.signers) || keys.signers.length > MAX_SIGNERS) throw new MedvError('EINVAL_ARG', `at most ${MAX_SIGNERS} signers`);
  for (const s of keys.signers) if (!Buffer.isBuffer(s) || s.length !== SIGNER_BYTES) throw new MedvError('EINVAL_ARG', `a signer is a ${SIGNER_BYTES}-byte Ed25519 public key`);
}

/**
 * The canonical plaintext in a secure buffer (the caller frees it). Exported for the server's
 * tests and for anyone who must check the format; sealImageKeys is what releases keys.
 */
export function releasePlaintext(keys: ImageKeySet): Buffer {
  checkSet(keys);
  const buf = secureAlloc(plaintextLength(keys.image.length, keys.signers.length));
  try {
    const w = new Writer(buf);
    w.text(P_START); w.text(keys.image);
    w.text(P_CONTENT); w.hex(keys.content.keyId); w.text(P_KEY); w.base64(keys.content.key);
    w.text(P_REPO); w.hex(keys.repository.keyId); w.text(P_KEY); w.base64(keys.repository.key);
    w.text(P_SIGNERS);
    keys.signers.forEach((s, i) => { if (i) w.text(','); w.text('"'); w.hex(s); w.text('"'); });
    w.text(P_END);
    if (w.pos !== buf.length) throw new MedvError('EINTERNAL', 'released key plaintext length');
    return buf;
  } catch (e) {
    secureFree(buf);
    throw e;
  }
}

/**
 * EINVAL_ARG unless `clientPublicKey` is 32 bytes that libsodium will seal to (a low-order point,
 * such as all zeroes, is refused): checked before anything is looked up for the request.
 */
export function checkClientKey(clientPublicKey: Buffer): void {
  if (!Buffer.isBuffer(clientPublicKey) || clientPublicKey.length !== CLIENT_KEY_BYTES) throw new MedvError('EINVAL_ARG', `clientKey must be a ${CLIENT_KEY_BYTES}-byte X25519 public key`);
  try {
    sodium.crypto_box_seal(Buffer.alloc(1 + sodium.crypto_box_SEALBYTES), Buffer.alloc(1), clientPublicKey);
  } catch {
    throw new MedvError('EINVAL_ARG', 'clientKey is not a usable X25519 public key');
  }
}

/**
 * crypto_box_seal of the canonical plaintext to `clientPublicKey`. The plaintext lives only in a
 * secure buffer, zeroed and freed before this returns. EINVAL_ARG for a public key that is not 32
 * bytes or that libsodium refuses (a low-order point).
 */
export function sealImageKeys(keys: ImageKeySet, clientPublicKey: Buffer): Buffer {
  if (!Buffer.isBuffer(clientPublicKey) || clientPublicKey.length !== CLIENT_KEY_BYTES) throw new MedvError('EINVAL_ARG', `clientKey must be a ${CLIENT_KEY_BYTES}-byte X25519 public key`);
  const plain = releasePlaintext(keys);
  try {
    const out = Buffer.alloc(plain.length + sodium.crypto_box_SEALBYTES);
    try {
      sodium.crypto_box_seal(out, plain, clientPublicKey);
    } catch {
      throw new MedvError('EINVAL_ARG', 'clientKey is not a usable X25519 public key');
    }
    return out;
  } finally {
    secureFree(plain);
  }
}

/**
 * Open a sealed answer with the client's key pair: the keys as DataKeys (secure memory) and the
 * signers. Bounded (at most MAX_SEALED bytes); a wrong key, a forged or truncated answer, or any
 * deviation from the canonical plaintext gives EBADREPLY. (src/pack's openImageKeys is another
 * thing: it opens a key folder.)
 */
export function openReleasedKeys(sealed: Buffer, pair: ClientKeyPair): ReleasedImageKeys {
  if (!Buffer.isBuffer(sealed) || sealed.length <= sodium.crypto_box_SEALBYTES || sealed.length > MAX_SEALED) {
    throw new MedvError('EBADREPLY', `the released keys must be ${sodium.crypto_box_SEALBYTES + 1} to ${MAX_SEALED} bytes`);
  }
  const plain = secureAlloc(sealed.length - sodium.crypto_box_SEALBYTES);
  const made: DataKey[] = [];
  try {
    let ok: boolean;
    try { ok = sodium.crypto_box_seal_open(plain, sealed, pair.publicKey, pair.secretKey) !== false; } catch { ok = false; }
    if (!ok) throw new MedvError('EBADREPLY', 'the released keys do not open with this client key (sealed for another client, or damaged)');
    const r = new Reader(plain);
    r.expect(P_START, 'the version 1 header');
    const image = r.until(64, 'image name');
    if (!IMAGE_NAME_RE.test(image)) throw bad('image name');
    const key = (what: string) => {
      const id = Buffer.alloc(KEY_ID_BYTES);
      r.hexInto(id, `${what} id`);
      r.expect(P_KEY, `${what} key`);
      const k = secureAlloc(DATA_KEY_BYTES);
      try {
        r.base64Into(k, `${what} key`);
      } catch (e) {
        secureFree(k);
        throw e;
      }
      try {
        made.push(DataKey.adopt(id, k));
      } catch {
        throw bad(`${what} key is unusable`);
      }
      return made[made.length - 1];
    };
    r.expect(P_CONTENT, 'content');
    const content = key('content');
    r.expect(P_REPO, 'repository');
    const repository = key('repository');
    r.expect(P_SIGNERS, 'signers');
    const signers: Buffer[] = [];
    while (plain[r.pos] !== 0x5d) {
      if (signers.length) r.expect(',', 'signer separator');
      if (signers.length >= MAX_SIGNERS) throw bad(`more than ${MAX_SIGNERS} signers`);
      r.expect('"', 'signer');
      const s = Buffer.alloc(SIGNER_BYTES);
      r.hexInto(s, 'signer');
      r.expect('"', 'signer end');
      signers.push(s);
    }
    r.expect(P_END, 'the end');
    if (r.pos !== plain.length) throw bad('bytes after the end');
    const out: ReleasedImageKeys = {
      image, content, repository, signers,
      dispose() { content.dispose(); repository.dispose(); },
    };
    redactInspect(out, () => `ReleasedImageKeys { image: ${image}, content: ${content.keyId.toString('hex')}, repository: ${repository.keyId.toString('hex')}, signers: ${signers.length} }`);
    return out;
  } catch (e) {
    for (const k of made) k.dispose();
    throw e;
  } finally {
    secureFree(plain);
  }
}

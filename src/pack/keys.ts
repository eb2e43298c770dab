/**
 * The console's key folder for packed images. Secrets are DataKeys wrapped in `.enc` files exactly
 * as disk keys are (src/crypto: writeKeyFile/readKeyFile, KEK from a passphrase or a host key);
 * public keys are one line of hex.
 *
 *   DIR/repository.key.enc      repository id key: block ids are BLAKE2b-128 keyed with bytes 0..31
 *   DIR/console.sign.enc        the console's Ed25519 secret key (64 bytes: seed || public key)
 *   DIR/console.sign.pub        its public key, hex (give it to clients: their trusted/ folder)
 *   DIR/images/<NAME>.key.enc   image content key: XChaCha20-Poly1305 key = bytes 0..31;
 *                               the key id of this file is the image id
 *   DIR/trusted/*.pub           further signers whose indexes `verify` accepts
 *
 * An `.enc` file always holds 64 bytes (the disk-key format); keys of 32 bytes use the first half,
 * the second half is random and unused. `pack` creates what is missing on first use; `verify`
 * only reads (and never unwraps the signing key).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { DataKey, readKeyFile, writeKeyFile, type KekSource, type WrapOptions } from '../crypto/index.js';
import { createFileAtomic } from '../core/fsio.js';
import { secureAlloc } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';
import { checkImageName, CKM_IMAGE_ID_BYTES } from '../formats/ckm/index.js';

interface SignSodium {
  crypto_sign_keypair(pk: Buffer, sk: Buffer): void;
  crypto_sign_detached(sig: Buffer, m: Buffer, sk: Buffer): void;
  crypto_sign_verify_detached(sig: Buffer, m: Buffer, pk: Buffer): boolean;
}
export const signSodium = sodium as unknown as SignSodium;

export const REPOSITORY_KEY_FILE = 'repository.key.enc';
export const SIGN_KEY_FILE = 'console.sign.enc';
export const SIGN_PUB_FILE = 'console.sign.pub';
export const IMAGES_DIR = 'images';
export const TRUSTED_DIR = 'trusted';
const MAX_PUB_FILE = 256;
const MAX_TRUSTED = 256;

export function imageKeyPath(dir: string, name: string): string {
  checkImageName(name);
  return join(dir, IMAGES_DIR, `${name}.key.enc`);
}

/** The keys of one image, in secure memory. dispose() zeroes them. */
export class ImageKeys {
  constructor(
    private readonly content: DataKey,
    private readonly repository: DataKey,
    /** Trusted signer public keys (32 bytes each). */
    readonly trusted: Buffer[],
    private readonly signing?: DataKey,
  ) {}

  get imageId(): Buffer { return this.content.keyId; }
  /** The content and repository keys as DataKeys (to publish them to a server); still owned here: dispose() frees them. */
  get dataKeys(): { content: DataKey; repository: DataKey } { return { content: this.content, repository: this.repository }; }
  /** 32-byte XChaCha20-Poly1305 key (view into secure memory). */
  get contentKey(): Buffer { return this.content.key.subarray(0, 32); }
  /** 32-byte BLAKE2b key for block ids. */
  get idKey(): Buffer { return this.repository.key.subarray(0, 32); }
  get canSign(): boolean { return this.signing !== undefined; }
  get signPublic(): Buffer {
    if (!this.signing) throw new MedvError('ENOKEY', 'no signing key loaded');
    return Buffer.from(this.signing.key.subarray(32, 64));
  }
  /** Ed25519 detached signature of `message` by the console key. */
  sign(message: Buffer): Buffer {
    if (!this.signing) throw new MedvError('ENOKEY', 'no signing key loaded');
    const sig = Buffer.alloc(64);
    signSodium.crypto_sign_detached(sig, message, this.signing.key);
    return sig;
  }

  dispose(): void {
    this.content.dispose();
    this.repository.dispose();
    this.signing?.dispose();
  }
}

export interface KeyFolderOptions {
  /** Create missing keys (pack); verify never does. */
  create?: boolean;
  /** Unwrap the signing key (pack). */
  sign?: boolean;
  wrap?: WrapOptions;
}

async function mkdirPrivate(dir: string): Promise<void> {
  try { await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 }); } catch (e) { throw fromSystemError(e, dir); }
}

/** Write a small public file: write-then-link (src/core/fsio.ts), never over an existing one. */
async function writePublicFile(path: string, text: string): Promise<void> {
  await createFileAtomic(path, text, { mode: 0o644 });
}

/** Parse a public key file: 64 hex digits, optional trailing newline. */
export function parsePublicKeyFile(text: Buffer, file: string): Buffer {
  if (text.length > MAX_PUB_FILE) throw new MedvError('EFORMAT', 'public key file is too large', { file });
  const s = text.toString('latin1').trim();
  if (!/^[0-9a-fA-F]{64}$/.test(s)) throw new MedvError('EFORMAT', 'public key file must hold 64 hex digits (an Ed25519 public key)', { file, offset: 0 });
  return Buffer.from(s, 'hex');
}

async function readSmallFile(path: string, max: number): Promise<Buffer> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(path, 'r');
    const st = await fh.stat();
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: path });
    const b = Buffer.alloc(Math.min(st.size, max + 1));
    const { bytesRead } = await fh.read(b, 0, b.length, 0);
    return b.subarray(0, bytesRead);
  } catch (e) {
    throw fromSystemError(e, path);
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** Every trusted signer: console.sign.pub and trusted/*.pub. */
export async function loadTrustedKeys(dir: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const own = join(dir, SIGN_PUB_FILE);
  if (fs.existsSync(own)) out.push(parsePublicKeyFile(await readSmallFile(own, MAX_PUB_FILE), own));
  const tdir = join(dir, TRUSTED_DIR);
  if (fs.existsSync(tdir)) {
    const names = (await fs.promises.readdir(tdir)).filter((n) => n.endsWith('.pub')).sort();
    if (names.length > MAX_TRUSTED) throw new MedvError('EINVAL_ARG', `more than ${MAX_TRUSTED} trusted keys`, { file: tdir });
    for (const n of names) out.push(parsePublicKeyFile(await readSmallFile(join(tdir, n), MAX_PUB_FILE), join(tdir, n)));
  }
  return out;
}

async function loadOrCreate(path: string, kek: () => KekSource, create: boolean, make: () => DataKey, wrap: WrapOptions | undefined, what: string): Promise<DataKey> {
  if (fs.existsSync(path)) return readKeyFile(path, kek());
  if (!create) throw new MedvError('ENOKEY', `no ${what} (${path}): pack an image with this key folder first, or copy the key here`, { file: path });
  const key = make();
  try {
    await writeKeyFile(path, key, kek(), wrap);
  } catch (e) {
    key.dispose();
    throw e;
  }
  return key;
}

function newSigningKey(): DataKey {
  const pk = Buffer.alloc(32);
  const sk = secureAlloc(64);
  signSodium.crypto_sign_keypair(pk, sk);
  const id = Buffer.alloc(16);
  sodium.crypto_generichash(id, pk);
  return DataKey.adopt(id, sk);
}

/**
 * Open (and with `create`, complete) the key folder for image `name`. The KEK is asked for only
 * when a secret is read or written.
 */
export async function openImageKeys(dir: string, name: string, kek: () => KekSource, opts: KeyFolderOptions = {}): Promise<ImageKeys> {
  checkImageName(name);
  const create = opts.create ?? false;
  if (create) {
    await mkdirPrivate(dir);
    await mkdirPrivate(join(dir, IMAGES_DIR));
  } else if (!fs.existsSync(dir)) {
    throw new MedvError('ENOKEY', `key folder ${dir} does not exist (use --keys DIR)`, { file: dir });
  }
  const opened: DataKey[] = [];
  try {
    const repository = await loadOrCreate(join(dir, REPOSITORY_KEY_FILE), kek, create, () => DataKey.generate(), opts.wrap, 'repository id key');
    opened.push(repository);
    const content = await loadOrCreate(imageKeyPath(dir, name), kek, create, () => DataKey.generate(), opts.wrap, `content key for image ${name}`);
    opened.push(content);
    if (content.keyId.length !== CKM_IMAGE_ID_BYTES) throw new MedvError('EINTERNAL', 'image id length');
    let signing: DataKey | undefined;
    if (opts.sign) {
      signing = await loadOrCreate(join(dir, SIGN_KEY_FILE), kek, create, newSigningKey, opts.wrap, 'console signing key');
      opened.push(signing);
      const pubPath = join(dir, SIGN_PUB_FILE);
      const pub = signing.key.subarray(32, 64);
      if (!fs.existsSync(pubPath)) await writePublicFile(pubPath, `${Buffer.from(pub).toString('hex')}\n`);
    }
    const trusted = await loadTrustedKeys(dir);
    return new ImageKeys(content, repository, trusted, signing);
  } catch (e) {
    for (const k of opened) k.dispose();
    throw e;
  }
}

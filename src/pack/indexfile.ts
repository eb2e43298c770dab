/**
 * Reading a .ckm.index file: header (signature checked against trusted keys before anything else is
 * believed), run directory (root hash), run records one run at a time (memory bounded by a run).
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';
import {
  DELTA_SIGNED_BYTES, DIR_ENTRY_BYTES, INDEX_MAX_HEADER, type ParsedDeltaHeader, type ParsedIndexHeader, type RunDirectory, type RunRecord, decodeRunRecord, indexFileLength,
  parseIndexHeader, parseRunDirectory, runSlots,
} from '../formats/ckm/index.js';
import { signSodium } from './keys.js';

/** Check the header's signature and that its signer is one of `trusted`. ESIGNATURE otherwise. */
export function verifyIndexSignature(h: ParsedIndexHeader, trusted: Buffer[], file?: string): void {
  if (!trusted.some((k) => k.equals(h.signer))) {
    throw new MedvError('ESIGNATURE', `index is signed by ${h.signer.toString('hex').slice(0, 16)}…, which is not a trusted key`, { file, offset: 96 });
  }
  if (!signSodium.crypto_sign_verify_detached(h.signature, h.signed, h.signer)) {
    throw new MedvError('ESIGNATURE', 'index signature does not verify', { file, offset: h.headerLength - 64 });
  }
}

/** Check an index delta's signature and that its signer is one of `trusted`. ESIGNATURE otherwise. */
export function verifyDeltaSignature(h: ParsedDeltaHeader, trusted: Buffer[], file?: string): void {
  if (!trusted.some((k) => k.equals(h.signer))) {
    throw new MedvError('ESIGNATURE', `index delta is signed by ${h.signer.toString('hex').slice(0, 16)}…, which is not a trusted key`, { file, offset: 100 });
  }
  if (!signSodium.crypto_sign_verify_detached(h.signature, h.signed, h.signer)) {
    throw new MedvError('ESIGNATURE', 'index delta signature does not verify', { file, offset: DELTA_SIGNED_BYTES });
  }
}

export class IndexFile {
  private directory?: RunDirectory;
  private readonly packLimits: Map<number, number>;

  private constructor(readonly path: string, private fh: fs.promises.FileHandle | undefined, readonly header: ParsedIndexHeader, readonly fileSize: number) {
    this.packLimits = new Map(header.packs.map((p) => [p.version, p.length]));
  }

  /**
   * Open an index and parse its header. The header is NOT trusted yet: call verify() (signature)
   * before reading runs; runs() refuses to start otherwise.
   */
  static async open(path: string): Promise<IndexFile> {
    let fh: fs.promises.FileHandle | undefined;
    try {
      fh = await fs.promises.open(path, 'r');
      const st = await fh.stat();
      if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: path });
      const head = Buffer.alloc(Math.min(st.size, INDEX_MAX_HEADER));
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      const header = parseIndexHeader(head.subarray(0, bytesRead), { file: path });
      const expected = indexFileLength(header);
      if (st.size < expected) throw new MedvError('ETRUNCATED', `index is ${st.size} bytes, its header says ${expected}`, { file: path, offset: st.size });
      if (st.size > expected) throw new MedvError('ECORRUPT', `index has ${st.size - expected} bytes past its end`, { file: path, offset: expected });
      return new IndexFile(path, fh, header, st.size);
    } catch (e) {
      await fh?.close().catch(() => undefined);
      throw fromSystemError(e, path);
    }
  }

  private verified = false;

  /** Signature against trusted keys, then the run directory against the root hash. */
  async verify(trusted: Buffer[]): Promise<void> {
    verifyIndexSignature(this.header, trusted, this.path);
    const size = this.header.runCount * DIR_ENTRY_BYTES;
    const buf = await this.readAt(this.header.headerLength, size);
    this.directory = parseRunDirectory(buf, this.header, { file: this.path, offset: this.header.headerLength });
    this.verified = true;
  }

  get runDirectory(): RunDirectory {
    if (!this.directory) throw new MedvError('EINTERNAL', 'index not verified');
    return this.directory;
  }

  private async readAt(offset: number, length: number): Promise<Buffer> {
    if (!this.fh) throw new MedvError('ECLOSED', 'index closed', { file: this.path });
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(b, done, length - done, offset + done);
      if (bytesRead === 0) throw new MedvError('ETRUNCATED', 'index shrank while being read', { file: this.path, offset: offset + done });
      done += bytesRead;
    }
    return b;
  }

  /** Run `run`'s record, checked against its hash and the pack limits. */
  async run(run: number): Promise<RunRecord> {
    if (!this.verified) throw new MedvError('EINTERNAL', 'index runs read before its signature was verified');
    const dir = this.runDirectory;
    const raw = dir.lengths[run] === 0 ? Buffer.alloc(0) : await this.readAt(dir.offsets[run], dir.lengths[run]);
    return decodeRunRecord(raw, dir.hashes[run], { slots: runSlots(this.header.virtualSize, run), packs: this.packLimits }, { file: this.path, offset: dir.offsets[run] });
  }

  /** Every run in order (one record in memory at a time). */
  async *runs(): AsyncGenerator<{ run: number; record: RunRecord }> {
    for (let run = 0; run < this.header.runCount; run++) yield { run, record: await this.run(run) };
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Suspend and resume, the QEMU side: the guest's migration stream goes out to an encrypted
 * saved state (`migrateToSavedState`) and comes back from it (`feedSavedState`). The saved-state
 * format is src/hypervisor/savedstate.ts; which saved state belongs to which VM is ./binding.ts;
 * the supervisor decides when each runs.
 */
import * as fs from 'node:fs';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import { MedvError } from '../core/errors.js';
import { openDirBeneath, partsBelow, withShownPaths, type PinnedDir } from '../core/fsio.js';
import type { QemuProcess } from '../hypervisor/qemu.js';
import { native } from '../native.js';
import type { SavedStateReader, SavedStateWriter } from '../hypervisor/savedstate.js';
import type { VmConfig } from './config.js';

type Trace = (what: string) => void;

/** Decrypted saved-state bytes queued for QEMU, and held ahead of it (FramesAhead), at most while the next frames are decrypted (memory bound of a resume's feed: twice this). */
const FEED_AHEAD = 8 << 20;
/** The send buffer asked for on QEMU's incoming socket. */
const FEED_SEND_BUFFER = 4 << 20;

/**
 * Where a VM's saved state is read, written and removed: its folder opened once without
 * following links (below the .vmc's folder when a .vmc named it), so every later step works
 * through that folder's descriptor (`at` is `/proc/self/fd/N/<name>`; the .vsv itself is never
 * read through a link, src/hypervisor/savedstate.ts). `shown` runs a step and writes the real
 * path into its errors. With `missingOk`, a folder that does not exist gives undefined (no saved
 * state can be there; nothing is created from a path a .vmc named).
 */
export interface SavedStateFile {
  readonly at: string;
  shown<T>(step: () => T): T;
  close(): void;
}

export function pinSavedState(config: VmConfig): SavedStateFile;
export function pinSavedState(config: VmConfig, opts: { missingOk: true }): SavedStateFile | undefined;
export function pinSavedState(config: VmConfig, opts: { missingOk?: boolean } = {}): SavedStateFile | undefined {
  const name = basename(config.savedState);
  let dir: PinnedDir;
  let shownDir: string;
  try {
    if (config.savedStateConfine !== undefined) {
      dir = openDirBeneath(config.savedStateConfine, partsBelow(config.savedStateConfine, config.savedState).parts);
      shownDir = dir.path;
    } else {
      dir = openDirBeneath(dirname(config.savedState));
      shownDir = dirname(config.savedState);
    }
  } catch (e) {
    if (opts.missingOk && e instanceof MedvError && e.code === 'ENOENT') return undefined;
    throw e;
  }
  const pins = [{ proc: dir.proc, path: shownDir }];
  return {
    at: `${dir.proc}/${name}`,
    shown<T>(step: () => T): T {
      try {
        const r = step();
        return (r instanceof Promise ? r.catch((e: unknown) => { throw withShownPaths(e, pins); }) : r) as T;
      } catch (e) {
        throw withShownPaths(e, pins);
      }
    },
    close: () => dir.close(),
  };
}

/**
 * Pause the guest and stream QEMU's migration data through a unix socket (`sock`, in the run
 * folder) into `writer` (encrypted as it arrives: nothing in clear on disk). Resolves when QEMU
 * reports the migration completed; the guest stays paused and QEMU still runs. On failure the
 * caller aborts the writer and lets the guest continue. `whileStopping` runs once the stop is
 * sent, while QEMU stops the guest (the caller's own bookkeeping, off the critical path).
 */
export async function migrateToSavedState(vm: QemuProcess, writer: SavedStateWriter, sock: string, trace: Trace, whileStopping: () => void = () => undefined): Promise<void> {
  fs.rmSync(sock, { force: true });
  const server = createServer();
  try {
    trace('suspend: requested');
    // Sent together (one round trip instead of three): QMP runs a connection's commands in order,
    // so the guest is stopped before the migration is set up, and `migrate` below comes after all.
    const stopped = vm.execute('stop');
    stopped.catch(() => undefined); // awaited below, unless whileStopping threw first
    const setUp = Promise.all([
      vm.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }),
      // The guest is stopped: its "downtime" is the whole suspend anyway. Without a limit on the
      // bandwidth and with a long tolerated downtime QEMU sends everything in one pass instead of
      // iterating (QEMU 7.2's defaults, 32 MiB/s and 300 ms, made a 256 MiB guest take seconds).
      vm.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * 1024 * 1024 * 1024, 'downtime-limit': 60_000 }),
    ]);
    setUp.catch(() => undefined); // awaited below, unless the stop failed first
    const listening = new Promise<void>((res, rej) => { server.once('error', rej); server.listen(sock, () => res()); });
    listening.catch(() => undefined);
    whileStopping();
    await stopped;
    trace('suspend: guest stopped (QEMU flushed its disks)');
    await listening;
    const received = new Promise<void>((res, rej) => {
      server.once('connection', (s: Socket) => {
        s.on('data', (chunk: Buffer) => { try { writer.write(chunk); } catch (e) { s.destroy(); rej(e); } });
        s.once('end', () => res());
        s.once('error', rej);
      });
    });
    await setUp;
    const done = migrationDone(vm);
    trace('suspend: guest paused');
    await vm.execute('migrate', { uri: `unix:${sock}` });
    await Promise.all([received, done]);
    // The stream is complete: what is not on disk yet goes there while QEMU quits and the disks are
    // flagged and closed (the .vsv's fsync before it is published then has little left).
    writer.syncWritten();
    type MigrateStats = { 'total-time'?: number; 'setup-time'?: number; downtime?: number };
    const stats = await vm.execute<MigrateStats>('query-migrate').catch((): MigrateStats => ({}));
    trace(`suspend: migration stream received (${writer.streamBytes} bytes; QEMU: total ${stats['total-time']} ms, setup ${stats['setup-time']} ms, downtime ${stats.downtime} ms)`);
  } finally {
    server.close();
    fs.rmSync(sock, { force: true });
  }
}

/**
 * A saved state's stream, decrypted in one pass ahead of QEMU: started once the saved state is
 * opened and checked (while the disks are opened and QEMU finishes starting), so that the feed
 * finds the first frames ready. A frame is held only once it authenticated (SavedStateReader
 * frames()), at most FEED_AHEAD bytes of them; nothing here writes to QEMU (feedSavedState does,
 * after `migrate-incoming`). `stop()` before the reader is closed when the start fails.
 */
export class FramesAhead {
  private readonly held: Buffer[] = [];
  private heldBytes = 0;
  private end: { failed: false } | { failed: true; error: unknown } | undefined;
  private wake: (() => void) | undefined;
  private stopped = false;
  private readonly pumping: Promise<void>;

  constructor(saved: SavedStateReader) {
    this.pumping = this.pump(saved.frames());
  }

  /** The next authenticated frame; undefined once the final frame verified; rejects as the stream failed. */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const frame = this.held.shift();
      if (frame) {
        this.heldBytes -= frame.length;
        this.signal();
        return frame;
      }
      if (this.end?.failed) throw this.end.error;
      if (this.end) return undefined;
      await new Promise<void>((r) => { this.wake = r; });
    }
  }

  /** Stop decrypting and drop what is held; resolves once no read is in progress and the file is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.signal();
    await this.pumping;
    for (const b of this.held.splice(0)) b.fill(0);
    this.heldBytes = 0;
  }

  private async pump(frames: AsyncGenerator<Buffer, unknown, void>): Promise<void> {
    try {
      for (;;) {
        while (this.heldBytes >= FEED_AHEAD && !this.stopped) await new Promise<void>((r) => { this.wake = r; });
        if (this.stopped) {
          await frames.return(undefined);
          return;
        }
        const r = await frames.next();
        if (r.done) break;
        this.held.push(r.value);
        this.heldBytes += r.value.length;
        this.signal();
      }
      this.end = { failed: false };
    } catch (e) {
      this.end = { failed: true, error: e };
    }
    this.signal();
  }

  private signal(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/**
 * Feed the saved state into a QEMU started with -incoming defer, decrypted once (`frames`): each
 * frame goes to QEMU only after it authenticated, and the guest (kept paused by -S) runs only once
 * the final frame verified too and `beforeRun` (the disks leave the suspended state) succeeded; a
 * frame that fails rejects, and the caller kills QEMU.
 */
export async function feedSavedState(vm: QemuProcess, frames: FramesAhead, trace: Trace, beforeRun: () => Promise<void>): Promise<void> {
  const done = migrationDone(vm);
  done.catch(() => undefined); // awaited below; a failed feed must not leave it unhandled
  // One round trip: QMP runs them in order (the events are on before the migration starts); if
  // the first fails, the start fails and QEMU is killed.
  await Promise.all([
    vm.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }),
    vm.execute('migrate-incoming', { uri: 'fd:3' }),
  ]);
  const pipe = vm.incoming!;
  pipe.on('error', () => undefined); // QEMU gone: the migration fails and `done` says so
  // The way in is a unix socket (libuv's stdio pipes are socket pairs): a larger send buffer lets
  // QEMU read more per wake-up (bounded by the system's wmem_max; -1 without the addon: as it was).
  const fd = (pipe as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd === 'number' && fd >= 0) native.setSendBuffer(fd, FEED_SEND_BUFFER);
  try {
    for (;;) {
      // QEMU gone: nothing takes the rest (`done` says why).
      if (vm.exitStatus !== undefined) break;
      const frame = await frames.next();
      if (!frame) break;
      pipe.write(frame);
      // Up to FEED_AHEAD decrypted bytes wait for QEMU: the next frames are read and decrypted
      // while it takes these (waiting for each frame to drain left QEMU idle meanwhile).
      if ((pipe as NodeJS.WritableStream & { writableLength: number }).writableLength >= FEED_AHEAD) await Promise.race([once(pipe, 'drain'), vm.exitedPromise]);
    }
  } finally {
    pipe.end();
  }
  trace('resume: saved state decrypted and sent');
  await done;
  trace('resume: QEMU has the state');
  // QEMU has the whole state and the guest is still paused (nothing writes).
  await beforeRun();
  const status = await vm.execute<{ status: string }>('query-status');
  if (status.status !== 'running') await vm.execute('cont');
}

/** Resolves when QEMU reports the migration completed; rejects when it failed or QEMU exited. */
function migrationDone(vm: QemuProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const onEvent = (e: { event: string; data?: Record<string, unknown> }) => {
      if (e.event !== 'MIGRATION') return;
      const status = e.data?.status;
      if (status === 'completed') { off(); resolve(); } else if (status === 'failed' || status === 'cancelled') { off(); reject(new MedvError('EHYPERVISOR', `QEMU migration ${String(status)}`)); }
    };
    const off = () => { vm.qmp.off('event', onEvent); };
    vm.qmp.on('event', onEvent);
    void vm.exitedPromise.then(() => { off(); reject(new MedvError('EHYPERVISOR', 'QEMU exited during the migration')); });
  });
}

/**
 * Worker thread for packing: prepareRun on runs sent by the main thread (see pool.ts). The id key
 * arrives once in workerData; it is copied into sodium secure memory and the copy received is zeroed.
 * A run's two buffers arrive by transfer and go back the same way: nothing is copied between threads.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { secureAlloc, secureSeal } from '../crypto/secure.js';
import { prepareRun } from './prepare.js';

const received = workerData.idKey as Uint8Array;
const idKey = secureAlloc(received.length);
Buffer.from(received.buffer, received.byteOffset, received.byteLength).copy(idKey);
received.fill(0);
secureSeal(idKey);
const level = workerData.level as number | undefined;

parentPort!.on('message', (job: { seq: number; data: ArrayBuffer; prep: ArrayBuffer; length: number }) => {
  try {
    prepareRun(Buffer.from(job.data), job.length, Buffer.from(job.prep), idKey, level);
    parentPort!.postMessage({ seq: job.seq, data: job.data, prep: job.prep }, [job.data, job.prep]);
  } catch (e) {
    parentPort!.postMessage({ seq: job.seq, error: String((e as Error)?.message ?? e) });
  }
});

/**
 * Worker thread for packing: prepareRun on runs sent by the main thread (see pool.ts). The id key
 * arrives once in workerData; it is copied into sodium secure memory and the copy received is zeroed.
 * A run's two buffers arrive by transfer and go back the same way: nothing is copied between threads.
 * A run of a plain file comes with the file's descriptor and offset: the worker reads it itself.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { secureAlloc, secureSeal } from '../crypto/secure.js';
import { prepareRun, readSpans } from './prepare.js';

const received = workerData.idKey as Uint8Array;
const idKey = secureAlloc(received.length);
Buffer.from(received.buffer, received.byteOffset, received.byteLength).copy(idKey);
received.fill(0);
secureSeal(idKey);
const level = workerData.level as number | undefined;

interface Job { seq: number; data: ArrayBuffer; prep: ArrayBuffer; length: number; file?: { fd: number; position: number }; spans: Array<[number, number]> }

parentPort!.on('message', (job: Job) => {
  try {
    const data = Buffer.from(job.data);
    if (job.file) readSpans(job.file.fd, job.file.position, data, job.length, job.spans);
    prepareRun(data, job.length, Buffer.from(job.prep), idKey, level);
    parentPort!.postMessage({ seq: job.seq, data: job.data, prep: job.prep }, [job.data, job.prep]);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException)?.code;
    parentPort!.postMessage({ seq: job.seq, error: String((e as Error)?.message ?? e), code: typeof code === 'string' ? code : undefined });
  }
});

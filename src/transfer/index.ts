/** Fetching packed images: index, seeds, coalesced range requests, resumable output (README.md). */
export { fetchImage, type FetchImageOptions, type FetchImageResult } from './fetch.js';
export { FETCH_IN_FLIGHT_BYTES, InFlight } from './inflight.js';
export { HttpClient, HttpFile, type HttpOptions, type RangeMode } from './http.js';
export { LocalFile, type RemoteFile, type TransferStats, isUrl, siblingOf } from './remote.js';
export { MultipartParser, parseContentRange, byterangesBoundary } from '../formats/multipart.js';
export { planRequests, rangeHeader, MULTI_RANGE, SINGLE_RANGE, type Span, type PlanOptions } from './plan.js';
export { fetchIndex, fetchIndexHeader } from './remote-index.js';
export { SeedSet, hashDisk, localIndexes } from './seeds.js';
export { PartialOutput, partialDirFor } from './output.js';

/**
 * The host service's event log (`GET /v1/events`): state changes, serial lines, errors, each with
 * a cursor that only grows, kept in a bounded ring of recent events and written to subscribers as
 * JSON lines.
 *
 * Cursors: `epoch * 2^32 + n`. The epoch counts the services started on this run root (kept in
 * `<run root>/host.epoch`), so a cursor from before a restart is smaller than every cursor after
 * it, whatever the clock says. `?since=C` replays what the ring still holds after C; when events
 * after C are gone (too old, or an earlier service's), a `lost` event says so first.
 *
 * Bounds: the ring keeps at most MAX_EVENTS events and MAX_RING_BYTES of them; a subscriber whose
 * connection does not take what it is sent (more than MAX_PENDING bytes waiting in its socket's
 * buffer) is cut off, so a slow reader never grows our memory; at most MAX_SUBSCRIBERS streams.
 */
import { MedvError } from '../../core/errors.js';

export type EventType = 'state' | 'serial' | 'error' | 'service' | 'workspace' | 'lost';

export interface HostEvent {
  cursor: number;
  time: string;
  type: EventType;
  vm?: string;
  [key: string]: unknown;
}

export const MAX_EVENTS = 10_000;
export const MAX_RING_BYTES = 4 * 1024 * 1024;
export const MAX_PENDING = 1024 * 1024;
export const MAX_SUBSCRIBERS = 64;
const EPOCH_SHIFT = 2 ** 32;

/** Where a subscriber's lines go: what an HTTP response (or any writable) offers. */
export interface EventSink {
  write(line: string): boolean;
  /** Bytes written but not yet taken by the peer. */
  readonly writableLength: number;
  once(event: 'drain', listener: () => void): unknown;
  destroy(): void;
}

/** A subscriber: the cursor of the last event it was sent (or skipped by its filter). */
interface Subscriber { sink: EventSink; filter?: (e: HostEvent) => boolean; sent: number; waiting: boolean }

export class EventLog {
  private readonly ring: Array<{ event: HostEvent; line: string }> = [];
  private ringBytes = 0;
  private seq = 0;
  private readonly subscribers = new Set<Subscriber>();

  constructor(readonly epoch: number) {
    if (!Number.isSafeInteger(epoch) || epoch < 1 || epoch >= 2 ** 20) throw new MedvError('EINVAL_ARG', `bad event epoch ${epoch}`);
  }

  /** The cursor of the last event (0 of this epoch before any). */
  get cursor(): number { return this.epoch * EPOCH_SHIFT + this.seq; }

  get subscriberCount(): number { return this.subscribers.size; }

  emit(type: Exclude<EventType, 'lost'>, fields: Record<string, unknown> = {}): HostEvent {
    this.seq++;
    // cursor, time and type first (a reader that greps a line sees them in this order), then the event's own fields.
    const own = Object.fromEntries(Object.entries(fields).filter(([k]) => k !== 'cursor' && k !== 'time' && k !== 'type'));
    const event: HostEvent = { cursor: this.cursor, time: new Date().toISOString(), type, ...own };
    const line = `${JSON.stringify(event)}\n`;
    this.ring.push({ event, line });
    this.ringBytes += line.length;
    while (this.ring.length > MAX_EVENTS || this.ringBytes > MAX_RING_BYTES) this.ringBytes -= this.ring.shift()!.line.length;
    for (const s of this.subscribers) this.pump(s);
    return event;
  }

  /**
   * Follow the log: what the ring holds after `since` (when given), then every new event, until
   * the sink is cut off or `close()` is called. Throws EBUSY when MAX_SUBSCRIBERS follow already.
   */
  subscribe(sink: EventSink, opts: { since?: number; filter?: (e: HostEvent) => boolean } = {}): { close(): void } {
    this.checkRoom();
    const since = opts.since === undefined ? this.cursor : Math.min(opts.since, this.cursor);
    const sub: Subscriber = { sink, filter: opts.filter, sent: since, waiting: false };
    const oldest = this.oldest;
    if (since < oldest - 1) {
      const lost: HostEvent = { cursor: oldest - 1, time: new Date().toISOString(), type: 'lost', after: since, until: oldest - 1,
        why: since < this.epoch * EPOCH_SHIFT ? 'an earlier host service\'s events are gone' : 'older events were dropped from the buffer' };
      sink.write(`${JSON.stringify(lost)}\n`);
      sub.sent = oldest - 1;
    }
    this.subscribers.add(sub);
    this.pump(sub);
    return { close: () => { this.subscribers.delete(sub); } };
  }

  /** EBUSY when MAX_SUBSCRIBERS follow the log already. */
  checkRoom(): void {
    if (this.subscribers.size >= MAX_SUBSCRIBERS) throw new MedvError('EBUSY', `${MAX_SUBSCRIBERS} event streams are open already`);
  }

  /** The cursor of the oldest event the ring holds (the next one's when it is empty). */
  private get oldest(): number { return this.ring[0]?.event.cursor ?? this.cursor + 1; }

  /** Cut every subscriber off (the service stops). */
  closeAll(): void {
    for (const s of this.subscribers) s.sink.destroy();
    this.subscribers.clear();
  }

  /**
   * Send `s` what it has not had yet, while its connection takes it (less than MAX_PENDING bytes
   * waiting); the rest when it drains. A reader so slow that the ring dropped events it was not
   * sent yet is cut off (it may come back with ?since= and be told what was lost).
   */
  private pump(s: Subscriber): void {
    if (!this.subscribers.has(s)) return;
    // Checked before the wait for a drain: a reader that stopped reading is cut off as soon as the
    // ring loses what it was not sent, not left holding one of MAX_SUBSCRIBERS slots forever.
    if (s.sent < this.oldest - 1) { this.cut(s); return; }
    if (s.waiting) return;
    for (let i = this.ring.length - (this.cursor - s.sent); i < this.ring.length; i++) {
      if (s.sink.writableLength > MAX_PENDING) {
        s.waiting = true;
        s.sink.once('drain', () => { s.waiting = false; this.pump(s); });
        return;
      }
      const r = this.ring[i];
      s.sent = r.event.cursor;
      if (!s.filter || s.filter(r.event)) s.sink.write(r.line);
    }
  }

  private cut(s: Subscriber): void {
    // A reader that does not keep up: cut off, never buffered without bound. It may come back with ?since=.
    this.subscribers.delete(s);
    s.sink.destroy();
  }
}

/** Parse `?since=`: a non-negative safe integer. */
export function parseCursor(v: string | null): number | undefined {
  if (v === null || v === '') return undefined;
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new MedvError('EINVAL_ARG', `since must be an event cursor (a non-negative integer), not ${JSON.stringify(v.slice(0, 40))}`);
  return Number(v);
}

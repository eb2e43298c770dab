/**
 * The workspace layer's time. There is no test hook: tests move the clock of the medv process
 * itself (libfaketime, test/helpers/faketime.ts), as a user setting the clock would. What a start
 * may believe of the clock is offline.ts's advanceClock: never earlier than a time seen before.
 */

export function now(): Date {
  return new Date();
}

/** Whole days from `from` to `to` (rounded down; negative when `to` is earlier). */
export function daysBetween(from: Date, to: Date): number {
  return Math.floor((to.getTime() - from.getTime()) / 86_400_000);
}

/** `YYYY-MM-DD` of a date, in UTC. */
export const utcDay = (d: Date) => d.toISOString().slice(0, 10);

/**
 * The workspace layer's clock. `MEDV_TEST_CLOCK` (an ISO date-time) replaces the system clock so
 * tests can walk past an offline allowance or an expiry date; it is a test hook, documented as such.
 * It cannot extend an allowance by turning time back: a clock before the last server contact is
 * refused (offline.ts).
 */
import { MedvError } from '../core/errors.js';

export function now(): Date {
  const fake = process.env.MEDV_TEST_CLOCK;
  if (fake === undefined || fake === '') return new Date();
  const d = new Date(fake);
  if (Number.isNaN(d.getTime())) throw new MedvError('EINVAL_ARG', `MEDV_TEST_CLOCK is not a date: ${JSON.stringify(fake)}`);
  return d;
}

/** Whole days from `from` to `to` (rounded down; negative when `to` is earlier). */
export function daysBetween(from: Date, to: Date): number {
  return Math.floor((to.getTime() - from.getTime()) / 86_400_000);
}

/** `YYYY-MM-DD` of a date, in UTC. */
export const utcDay = (d: Date) => d.toISOString().slice(0, 10);

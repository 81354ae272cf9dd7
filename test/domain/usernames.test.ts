import { ORPHAN_AFTER_MS, usernameDecider, type UsernameEvent } from '../../domain/usernames.ts';
import { deciderSpec } from '../support/deciderSpec.ts';

const given = deciderSpec(usernameDecider);
const alice = 'a1111111-1111-4111-8111-111111111111';
const bob = 'b2222222-2222-4222-8222-222222222222';
const t0 = '2026-01-01T00:00:00.000Z';
const later = (ms: number) => new Date(Date.parse(t0) + ms).toISOString();
const reserved: UsernameEvent = { type: 'UsernameReserved', data: { username: 'alice', userId: alice, reservedAt: t0 } };
const reserve = (userId: string, now: string, orphanedHolder: string | null = null) =>
  ({ type: 'ReserveUsername' as const, data: { username: 'Alice', userId }, metadata: { now, orphanedHolder } });

describe('usernames decider', () => {
  it('reserves a free name', () =>
    given([]).when(reserve(alice, t0)).then([{ type: 'UsernameReserved', data: { username: 'Alice', userId: alice, reservedAt: t0 } }]));
  it('refuses a taken name', () => given([reserved]).when(reserve(bob, later(1000))).thenThrows('USERNAME_EXISTS'));
  it('treats a retry of the same reservation as done', () => given([reserved]).when(reserve(alice, later(1000))).then([]));
  describe('when the holder never registered (an orphaned reservation)', () => {
    it('keeps it while a registration may still be in flight', () =>
      given([reserved]).when(reserve(bob, later(ORPHAN_AFTER_MS - 1), alice)).thenThrows('USERNAME_EXISTS'));
    it('hands it over once it is old enough', () =>
      given([reserved]).when(reserve(bob, later(ORPHAN_AFTER_MS), alice))
        .then([{ type: 'UsernameReserved', data: { username: 'Alice', userId: bob, reservedAt: later(ORPHAN_AFTER_MS) } }]));
    it('does not hand over a name whose holder is not the one found orphaned', () =>
      given([reserved]).when(reserve(bob, later(ORPHAN_AFTER_MS), bob)).thenThrows('USERNAME_EXISTS'));
  });
});

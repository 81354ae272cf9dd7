// Username uniqueness: one stream per lower-cased username (`username-<name>`), whose
// first event reserves the name for a user id. Registration reserves first (expecting no
// stream, so of two racing registrations exactly one wins) and then writes the user's own
// stream. Pure: times and the orphan check arrive in the command.
//
// Orphans: a process that dies between the two appends leaves a reservation naming a user
// id whose stream was never written. The caller looks that up (I/O) and says so in
// `orphanedHolder`; the name is handed over only once the reservation is older than
// ORPHAN_AFTER_MS, far longer than the two appends take, so that a registration still in
// flight is never overtaken.
import { DomainError } from './domainError.ts';
import type { Decider } from './decider.ts';

export type UsernameReserved = { type: 'UsernameReserved'; data: { username: string; userId: string; reservedAt: string } };
export type UsernameEvent = UsernameReserved;

export type ReserveUsername = {
  type: 'ReserveUsername';
  data: { username: string; userId: string };
  /** `orphanedHolder`: the holder's user id, when the caller found that user was never registered. */
  metadata: { now: string; orphanedHolder?: string | null };
};
export type UsernameCommand = ReserveUsername;

export type Username = { status: 'free' } | { status: 'reserved'; userId: string; reservedAt: string };

export const ORPHAN_AFTER_MS = 5 * 60 * 1000;

/** Usernames compare case-insensitively: `Alice` and `alice` are one account. */
export const usernameKey = (username: string): string => username.toLowerCase();
export const usernameStream = (username: string): string => `username-${usernameKey(username)}`;

export const usernameDecider: Decider<Username, UsernameCommand, UsernameEvent> = {
  initialState: () => ({ status: 'free' }),

  evolve(_state, event) {
    switch (event.type) {
      case 'UsernameReserved':
        return { status: 'reserved', userId: event.data.userId, reservedAt: event.data.reservedAt };
      default: { const _never: never = event.type; return _never; }
    }
  },

  decide(command, state) {
    switch (command.type) {
      case 'ReserveUsername': {
        const reserve: UsernameEvent[] = [{ type: 'UsernameReserved', data: { ...command.data, reservedAt: command.metadata.now } }];
        if (state.status === 'free') return reserve;
        if (state.userId === command.data.userId) return []; // a retry of our own reservation
        const orphaned = command.metadata.orphanedHolder === state.userId
          && Date.parse(command.metadata.now) - Date.parse(state.reservedAt) >= ORPHAN_AFTER_MS;
        if (!orphaned) throw new DomainError('USERNAME_EXISTS', `the username ${command.data.username} is taken`);
        return reserve;
      }
      default: { const _never: never = command.type; return _never; }
    }
  },
};

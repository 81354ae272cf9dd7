// A tiny decider for kernel tests: a counter that can be opened, incremented and closed.
import { z } from 'zod';
import type { Decider } from '../../domain/decider.ts';
import { DomainError } from '../../domain/domainError.ts';

export type CounterEvent =
  | { type: 'CounterOpened'; data: { name: string } }
  | { type: 'CounterIncremented'; data: { by: number } }
  | { type: 'CounterClosed'; data: Record<string, never> };
export type CounterCommand =
  | { type: 'Open'; name: string }
  | { type: 'Increment'; by: number }
  | { type: 'Close' }
  | { type: 'Corrupt' };
export type Counter = { status: 'none' } | { status: 'open' | 'closed'; value: number };

export const counterSchemas = {
  CounterOpened: z.object({ name: z.string().min(1) }).strict(),
  CounterIncremented: z.object({ by: z.number().int().positive() }).strict(),
  CounterClosed: z.object({}).strict(),
};

export const counterDecider: Decider<Counter, CounterCommand, CounterEvent> = {
  initialState: () => ({ status: 'none' }),
  evolve: (s, e) => {
    switch (e.type) {
      case 'CounterOpened': return { status: 'open', value: 0 };
      case 'CounterIncremented': return s.status === 'none' ? s : { ...s, value: s.value + e.data.by };
      case 'CounterClosed': return s.status === 'none' ? s : { ...s, status: 'closed' };
      default: { const _never: never = e; return _never; }
    }
  },
  decide: (c, s) => {
    switch (c.type) {
      case 'Open':
        if (s.status !== 'none') throw new DomainError('COUNTER_EXISTS', 'counter exists');
        return [{ type: 'CounterOpened', data: { name: c.name } }];
      case 'Increment':
        if (s.status !== 'open') throw new DomainError('COUNTER_NOT_OPEN', 'counter is not open');
        return c.by === 0 ? [] : [{ type: 'CounterIncremented', data: { by: c.by } }];
      case 'Close':
        if (s.status !== 'open') throw new DomainError('COUNTER_NOT_OPEN', 'counter is not open');
        return [{ type: 'CounterClosed', data: {} }];
      case 'Corrupt':
        // Emits an event that its schema rejects: the handler must refuse the whole batch.
        return [{ type: 'CounterIncremented', data: { by: 1 } }, { type: 'CounterIncremented', data: { by: -5 } }];
      default: { const _never: never = c; return _never; }
    }
  },
  schemaVersions: { CounterIncremented: 2 },
};

import { counterDecider, type CounterEvent } from '../support/counterDecider.ts';
import { deciderSpec } from '../support/deciderSpec.ts';

const given = deciderSpec(counterDecider);
const opened: CounterEvent = { type: 'CounterOpened', data: { name: 'c' } };
const closed: CounterEvent = { type: 'CounterClosed', data: {} };

describe('a decider (the counter used by the kernel tests)', () => {
  describe('when nothing happened yet', () => {
    it('opens', () => given([]).when({ type: 'Open', name: 'c' }).then([opened]));
    it('refuses to increment', () => given([]).when({ type: 'Increment', by: 1 }).thenThrows('COUNTER_NOT_OPEN'));
  });
  describe('when the counter is open', () => {
    it('increments', () => given([opened]).when({ type: 'Increment', by: 2 }).then([{ type: 'CounterIncremented', data: { by: 2 } }]));
    it('decides nothing for a zero increment', () => given([opened]).when({ type: 'Increment', by: 0 }).then([]));
    it('refuses to open again', () => given([opened]).when({ type: 'Open', name: 'c' }).thenThrows('COUNTER_EXISTS'));
  });
  describe('when the counter was closed', () => {
    it('refuses to increment', () => given([opened, closed]).when({ type: 'Increment', by: 1 }).thenThrows('COUNTER_NOT_OPEN'));
  });
});

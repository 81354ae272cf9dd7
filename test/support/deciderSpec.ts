// given / when / then for pure deciders (DESIGN.md §7): no database, no clock.
import { expect } from 'chai';
import type { Decider, DomainEvent } from '../../domain/decider.ts';

export const deciderSpec = <S, C, E extends DomainEvent>(decider: Decider<S, C, E>) => (given: readonly E[]) => ({
  when: (command: C) => {
    const run = () => decider.decide(command, given.reduce(decider.evolve, decider.initialState()));
    return {
      then: (expected: readonly E[]) => expect(run()).to.deep.equal(expected),
      thenThrows: (code: string) => {
        try {
          run();
        } catch (err) {
          expect((err as { code?: string }).code, (err as Error).message).to.equal(code);
          return;
        }
        expect.fail(`expected ${code}, but the command was accepted`);
      },
    };
  },
});
